"""hyperq: HyperQueue, the HPC task runtime, rebuilt in Python on trio."""

__version__ = "0.1.0"

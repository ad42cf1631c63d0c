"""The layer under the API that talks to hyperq (the original's native bindings).

Here it is plain Python over `hyperq.client`'s blocking session; module names and
methods match the original's `ffi` package.
"""

JobId = int
TaskId = int


def get_version() -> str:
    """The version `hq --version` prints."""
    from hyperq import __version__

    return __version__

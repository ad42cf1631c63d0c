"""Automatic allocation (`hq alloc`): the server asks Slurm or PBS for allocations that
start workers, grows with the waiting tasks and gives nodes back when they idle.

* `queue`     allocation queues, allocations and the rate limiter (pure data)
* `decisions` demand from waiting tasks, the permit, state changes (pure: no trio, no
              subprocess, no clock; time comes in as arguments)
* `scripts`   the batch scripts and worker command, parsing of sbatch/qsub/scontrol/qstat
              output (pure)
* `managers`  sbatch/scontrol/scancel and qsub/qstat/qdel as subprocesses with timeouts
* `service`   the allocator service in the server's nursery tree and the client ops
"""

"""How many tasks wait on a worker behind each running one, and how long a worker's
report of a task's end waits for others: both from the worker's CPU count, by one rule
that the server (which queues the tasks) and the worker (which batches its reports)
share, so that neither has to tell the other.

A worker with few CPUs gets deeper queues and a longer report window: its reports and
the launch messages back are short, and each message costs both sides far more than a
task does. Measured on one 2-CPU worker running `true` (tools/bench_scale --real, 12-run
series): eight behind each running task with a 10 ms window used ~22 µs (~11%) less
worker and ~21 µs less server CPU per task than four with 5 ms, and ran ~14% more tasks
per second. A big worker gains nothing (its messages are long already) and would hold
thousands of queued tasks: 64 workers with 128 CPUs each ran ~25% fewer tasks per second
with eight.
"""

from __future__ import annotations

# Tasks queued behind each running one on a worker with more than SMALL_WORKER_CPUS.
QUEUE_DEPTH = 4
# How long a task's end waits for the ends of others there to share its report.
REPORT_WINDOW = 0.005
SMALL_WORKER_CPUS = 2


def is_small(cpus: int) -> bool:
    return 0 < cpus <= SMALL_WORKER_CPUS


def queue_depth(cpus: int, base: int = QUEUE_DEPTH) -> int:
    """Tasks that may wait behind each running one on a worker with `cpus` CPUs."""
    return 2 * base if is_small(cpus) else base


def report_window(cpus: int) -> float:
    """Seconds a worker with `cpus` CPUs lets a task's end wait to share its report."""
    return 2 * REPORT_WINDOW if is_small(cpus) else REPORT_WINDOW

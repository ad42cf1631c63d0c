#!/usr/bin/env python3
"""Drive the real HyperQueue (PyPI package `hyperqueue`) for `tools/bench`, one action per call.

Why: `tools/bench` compares hyperq with the original. The PyPI package ships no `hq` binary;
its `LocalCluster` runs HyperQueue's Rust server and worker as threads inside a Python
process, and its `Client` speaks HyperQueue's own protocol, which our CLI cannot. So each
action here runs in its own process: `host` keeps a cluster alive (its pid is the server's,
for RSS), the others are clients that time one workload and print one JSON line.

It must never be imported by hyperq, never be needed by the tests, and never touch anything
outside the server and working directories it is given.

Usage (with a python that can import `hyperqueue`):
  bench_hq_reference.py host SERVER_DIR CORES   print {"pid": ...}, serve until stdin closes
  bench_hq_reference.py array SERVER_DIR N      N `true` tasks, submit until all finished
  bench_hq_reference.py roundtrip SERVER_DIR K  K one-task jobs, each connect+submit+finish
  bench_hq_reference.py submit SERVER_DIR N     time only the submit of N `true` tasks
  bench_hq_reference.py chain SERVER_DIR K      K `true` tasks, each depending on the last
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from hyperqueue import Job, LocalCluster
from hyperqueue.client import Client
from hyperqueue.cluster import WorkerConfig


class _Pending(Exception):
    """Raised from the progress callback to turn HyperQueue's 1 s wait loop into one poll."""


def job_state(client: Client, job_id: int) -> dict[str, Any]:
    """One JobInfo round trip, without the 1 s sleep of `wait_for_jobs`.

    The FFI's wait loop queries the server, calls our callback, then sleeps 1 s if the job is
    not done; raising from the callback returns right after the query.
    """
    seen: dict[str, Any] = {}

    def callback(jobs: dict[int, dict[str, Any]]) -> None:
        seen.update(jobs[job_id])
        if not seen["completed"]:
            raise _Pending

    try:
        client.connection.wait_for_jobs([job_id], callback)
    except _Pending:
        pass
    return seen


def wait_done(client: Client, job_id: int, poll: float) -> dict[str, Any]:
    while True:
        state = job_state(client, job_id)
        if state["completed"]:
            if state["failed"]:
                raise SystemExit(f"HyperQueue job {job_id}: {state['failed']} tasks failed")
            return state
        time.sleep(poll)


def true_job(count: int) -> Job:
    job = Job()
    for _ in range(count):
        job.program(["true"], stdout=None, stderr=None)
    return job


def host(server_dir: str, cores: int) -> None:
    cluster = LocalCluster(server_dir=server_dir)
    try:
        if cores > 0:
            cluster.start_worker(WorkerConfig(cores=cores))
        print(json.dumps({"pid": os.getpid()}), flush=True)
        # The bench holds our stdin open; EOF (also when the bench dies) means stop.
        sys.stdin.read()
    finally:
        cluster.stop()


def array(server_dir: str, count: int) -> dict[str, float]:
    client = Client(server_dir)
    started = time.perf_counter()
    job = true_job(count)
    built = time.perf_counter()
    submitted = client.submit(job)
    sent = time.perf_counter()
    wait_done(client, submitted.id, 0.005)
    done = time.perf_counter()
    return {"seconds": done - started, "build": built - started, "submit": sent - built}


def roundtrip(server_dir: str, count: int) -> dict[str, list[float]]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        client = Client(server_dir)
        submitted = client.submit(true_job(1))
        wait_done(client, submitted.id, 0.001)
        samples.append(time.perf_counter() - started)
        del client
    return {"samples": samples}


def submit(server_dir: str, count: int) -> dict[str, float]:
    client = Client(server_dir)
    started = time.perf_counter()
    job = true_job(count)
    built = time.perf_counter()
    client.submit(job)
    sent = time.perf_counter()
    return {"seconds": sent - built, "build": built - started}


def chain(server_dir: str, count: int) -> dict[str, float]:
    client = Client(server_dir)
    job = Job()
    previous = None
    for _ in range(count):
        previous = job.program(
            ["true"], stdout=None, stderr=None, deps=[previous] if previous else ()
        )
    started = time.perf_counter()
    submitted = client.submit(job)
    wait_done(client, submitted.id, 0.005)
    return {"seconds": time.perf_counter() - started}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in {"host", "array", "roundtrip", "submit", "chain"}:
        print(__doc__, file=sys.stderr)
        return 2
    # SIGTERM from the bench must still run the cluster's stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    action, server_dir, number = argv[1], argv[2], int(argv[3])
    if action == "host":
        host(server_dir, number)
        return 0
    actions = {"array": array, "roundtrip": roundtrip, "submit": submit, "chain": chain}
    result = actions[action](
        server_dir, number
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

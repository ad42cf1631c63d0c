#!/usr/bin/env python3
"""One workload of `tools/bench_api`, through a Python API; prints one JSON line.

The same code runs against hyperq and against HyperQueue's `hyperqueue` package: only
the import below differs (chosen by the first argument), as it would in a user's script.

Usage: bench_api_workload.py hyperq|hyperqueue submit|chain|functions N
  submit     build a job of N program tasks and submit it (no worker; submit time)
  chain      N `true` tasks, each depending on the previous, from submit to done
  functions  N function tasks of `lambda x: x + 1`, from submit to done
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

if sys.argv[1] == "hyperq":
    from hyperq.api import Job, LocalCluster
    from hyperq.api.cluster import WorkerConfig
else:
    from hyperqueue import Job, LocalCluster
    from hyperqueue.cluster import WorkerConfig

WORKER_CORES = 2


def main() -> None:
    workload, count = sys.argv[2], int(sys.argv[3])
    # Function tasks start `python3`: it must be this interpreter, which imports the API.
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])
    with tempfile.TemporaryDirectory(prefix="bench-api-") as work:
        os.chdir(work)
        run(workload, count, Path(work) / "server")


def run(workload: str, count: int, server_dir: Path) -> None:
    # str, not Path: the original's binding takes only a string here.
    with LocalCluster(str(server_dir)) as cluster:  # type: ignore[arg-type]
        client = cluster.client()
        result: dict[str, float | int | str] = {"impl": sys.argv[1], "workload": workload}
        if workload == "submit":
            start = time.perf_counter()
            job = Job()
            for index in range(count):
                job.program(["sleep", str(index % 10)], stdout=None, stderr=None)
            built = time.perf_counter()
            client.submit(job)
            done = time.perf_counter()
            result.update(build_s=built - start, submit_s=done - built, total_s=done - start)
        else:
            cluster.start_worker(WorkerConfig(cores=WORKER_CORES))
            job = Job()
            if workload == "chain":
                last = None
                for _ in range(count):
                    last = job.program(
                        ["true"], deps=[last] if last else (), stdout=None, stderr=None
                    )
            else:
                for index in range(count):
                    job.function(lambda x: x + 1, args=(index,), stdout=None, stderr=None)
            start = time.perf_counter()
            submitted = client.submit(job)
            client.wait_for_jobs([submitted])
            result.update(total_s=time.perf_counter() - start)
        result["count"] = count
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

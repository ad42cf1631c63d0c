"""What a hardware overview costs the worker: CPU time per overview, measured end to end.

Two idle workers run side by side for the same time, one with `--overview-interval`, one
without; the difference of their CPU time (utime + stime from /proc) divided by the
number of overviews the server received is the cost of one overview (sampling /proc in
a thread, building and sending the message).

    .venv/bin/python tools/bench_overview.py [SECONDS] [INTERVAL]   (default: 10 0.05)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import ClusterEnv  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    with tempfile.TemporaryDirectory() as temp:
        cluster = ClusterEnv(Path(temp))
        try:
            cluster.start_server("--journal", str(Path(temp) / "journal.bin"))
            quiet = cluster.start_worker(hostname="quiet")
            busy = cluster.start_worker(
                "--overview-interval", f"{int(interval * 1000)}ms", hostname="observed"
            )
            workers = cluster.json(["worker", "list"])
            ids = {w["configuration"]["hostname"]: w["id"] for w in workers}

            def count() -> int:
                events = [json.loads(x)["event"] for x in cluster.command(["journal", "replay"])
                          .splitlines()]
                return sum(
                    1
                    for e in events
                    if e["type"] == "worker-overview" and e["id"] == ids["observed"]
                )

            before = count()
            start = {p.pid: cpu_seconds(p.pid) for p in (quiet, busy)}
            time.sleep(seconds)  # the measurement period itself, not a wait for a condition
            spent = {p.pid: cpu_seconds(p.pid) - start[p.pid] for p in (quiet, busy)}
            overviews = count() - before
        finally:
            cluster.kill_all()
    extra = spent[busy.pid] - spent[quiet.pid]
    print(f"{seconds:g} s, interval {interval * 1000:g} ms: {overviews} overviews")
    print(f"worker CPU: observed {spent[busy.pid]:.3f} s, quiet {spent[quiet.pid]:.3f} s")
    if overviews:
        print(f"cost per overview: {extra / overviews * 1000:.3f} ms CPU")
        print(f"share of one core at a 2 s interval: {extra / overviews / 2 * 100:.4f} %")


if __name__ == "__main__":
    main()

"""Helpers of the automatic-allocation end-to-end tests: an hq cluster whose PATH has the
fake qsub/qstat/qdel and sbatch/scontrol/scancel of fakemanager.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.autoalloc.fakemanager import install
from tests.harness import ClusterEnv, wait_until

QUICK = {
    "HQ_AUTOALLOC_SCHEDULE_TICK_INTERVAL_MS": "100",
    "HQ_AUTOALLOC_MAX_SCHEDULE_DELAY_MS": "100",
    "HQ_AUTOALLOC_REFRESH_INTERVAL_MS": "100",
}


class AllocEnv(ClusterEnv):
    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.bin_dir = work_dir / "fakebin"
        self.state_dir = work_dir / "fakestate"
        install(self.bin_dir, self.state_dir)
        self.env["PATH"] = f"{self.bin_dir}:{self.env.get('PATH', '')}"
        self.env.update(QUICK)

    # --- the fake manager -------------------------------------------------------------
    def jobs(self) -> dict[str, Any]:
        path = self.state_dir / "jobs.json"
        return json.loads(path.read_text())["jobs"] if path.exists() else {}

    def set_job(self, job_id: str, **fields: Any) -> None:
        path = self.state_dir / "jobs.json"
        data = json.loads(path.read_text())
        data["jobs"][job_id].update(fields)
        path.write_text(json.dumps(data))

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        path = self.state_dir / "calls.jsonl"
        if not path.exists():
            return []
        calls = [json.loads(line) for line in path.read_text().splitlines()]
        return [c for c in calls if tool is None or c["tool"] == tool]

    def misbehave(self, **tools: str) -> None:
        (self.state_dir / "behaviour.json").write_text(json.dumps(tools))

    # --- hq ---------------------------------------------------------------------------
    def add_queue(self, manager: str, *args: str, json_mode: bool = False) -> str:
        return self.command(
            ["alloc", "add", manager, "--no-dry-run", "--time-limit", "1h", *args],
            json_mode=json_mode,
        )

    def allocations(self, queue_id: int = 1) -> list[dict[str, Any]]:
        return json.loads(self.command(["alloc", "info", str(queue_id)], json_mode=True))

    def wait_for_alloc(self, state: str, index: int = 0, queue_id: int = 1) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            allocations = self.allocations(queue_id)
            if len(allocations) > index and allocations[index]["status"] == state:
                return allocations[index]
            return None

        return wait_until(check, timeout=15, what=f"allocation {index} to be {state}")

    def start_alloc_worker(self, manager: str, job_id: str, name: str) -> subprocess.Popen[str]:
        """A worker as it starts inside allocation `job_id` of the fake manager."""
        env = dict(self.env)
        if manager == "pbs":
            env.update(PBS_JOBID=job_id, PBS_ENVIRONMENT="PBS_BATCH")
        else:
            env.update(SLURM_JOB_ID=job_id)
        return self.start_process(
            name,
            [
                "--server-dir", str(self.server_dir), "worker", "start",
                "--manager", manager, "--time-limit", "30m", "--cpus", "1",
                "--detect-resources", "none", f"--work-dir={name}-work",
            ],
            env=env,
        )  # fmt: skip


def server_log(env: AllocEnv) -> str:
    return env.log_of("server")


def paths_exist(*paths: str) -> bool:
    return all(os.path.exists(p) for p in paths)

#!/usr/bin/env python3
"""A fake PBS and Slurm for tests: qsub/qstat/qdel and sbatch/scontrol/scancel.

Installed by `install(bin_dir, state_dir)` as symlinks named after the tools; which
tool runs is read from argv[0]. Jobs live in `<state>/jobs.json` (guarded by a lock
file), every call is appended to `<state>/calls.jsonl`, and `<state>/behaviour.json`
makes a tool misbehave: {"qsub": "fail" | "garbage" | "hang", ...}. Output formats are
those of alloc.md §3.5–§3.6 and §8.1.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = ("qsub", "qstat", "qdel", "sbatch", "scontrol", "scancel")
PBS_TIME = "%a %b %d %H:%M:%S %Y"
SLURM_TIME = "%Y-%m-%dT%H:%M:%S"


def install(bin_dir: Path, state_dir: Path) -> None:
    bin_dir = bin_dir.resolve()
    state_dir = state_dir.resolve()
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    me = Path(__file__).resolve()
    launcher = bin_dir / "fakemanager"
    launcher.write_text(
        f"#!/bin/sh\nFAKE_MANAGER_STATE={state_dir} "
        f'exec {sys.executable} {me} "$(basename "$0")" "$@"\n'
    )
    launcher.chmod(0o755)
    for tool in TOOLS:
        link = bin_dir / tool
        if not link.exists():
            link.symlink_to(launcher)


class State:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "jobs.json"

    def __enter__(self) -> dict[str, Any]:
        self.lock = open(self.directory / "lock", "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.data = (
            json.loads(self.path.read_text()) if self.path.exists() else {"next": 1, "jobs": {}}
        )
        return self.data

    def __exit__(self, *exc: object) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)
        self.lock.close()


def behaviour(directory: Path, tool: str) -> str | None:
    path = directory / "behaviour.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(tool)


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def main(argv: list[str]) -> None:
    tool, args = argv[0], argv[1:]
    directory = Path(os.environ["FAKE_MANAGER_STATE"])
    with open(directory / "calls.jsonl", "a") as calls:
        calls.write(json.dumps({"tool": tool, "arguments": args, "cwd": os.getcwd()}) + "\n")
    mode = behaviour(directory, tool)
    if mode == "hang":
        time.sleep(3600)
    if mode == "fail":
        fail("FOOBAR")
    if mode == "garbage":
        print("\x00garbage { not what you expected")
        return
    if tool in ("qsub", "sbatch"):
        with State(directory) as state:
            job_id = f"{state['next']}.job"
            state["next"] += 1
            state["jobs"][job_id] = {
                "state": "queued",
                "script": args[0],
                "script_text": Path(args[0]).read_text(),
                "cwd": os.getcwd(),
            }
        print(job_id if tool == "qsub" else f"Submitted batch job {job_id}")
    elif tool in ("qdel", "scancel"):
        if len(args) != 1:
            fail(f"expected one argument, got {args}")
        with State(directory) as state:
            job = state["jobs"].get(args[0])
            if job is None:
                fail(f"unknown job {args[0]}")
            job["deleted"] = True
            if job["state"] in ("queued", "running"):
                job["state"] = "cancelled"
                job.setdefault("start", time.time())
                job["end"] = time.time()
    elif tool == "qstat":
        ids = [args[i + 1] for i, a in enumerate(args) if a == "-f" and i + 1 < len(args)]
        out: dict[str, Any] = {}
        with State(directory) as state:
            for job_id in ids:
                job = state["jobs"].get(job_id)
                if job is None or job.get("removed"):
                    continue
                code = {"queued": "Q", "running": "R"}.get(job["state"], "F")
                info: dict[str, Any] = {"job_state": code}
                if "start" in job:
                    info["stime"] = time.strftime(PBS_TIME, time.localtime(job["start"]))
                if "end" in job:
                    info["mtime"] = time.strftime(PBS_TIME, time.localtime(job["end"]))
                    info["Exit_status"] = 0 if job["state"] == "finished" else 1
                out[job_id] = info
        print(json.dumps({"Jobs": out}))
    elif tool == "scontrol":
        if args[:2] != ["show", "job"] or len(args) != 3:
            fail(f"unexpected scontrol arguments {args}")
        with State(directory) as state:
            job = state["jobs"].get(args[2])
            if job is None or job.get("removed"):
                return
            name = {
                "queued": "PENDING",
                "running": "RUNNING",
                "finished": "COMPLETED",
            }.get(job["state"], "FAILED")
            print(f"JobId={args[2]} JobState={name}")
            if "start" in job:
                print("   StartTime=" + time.strftime(SLURM_TIME, time.localtime(job["start"])))
            if "end" in job:
                print("   EndTime=" + time.strftime(SLURM_TIME, time.localtime(job["end"])))
            print("   RunTime=00:01:00 TimeLimit=01:00:00")


if __name__ == "__main__":
    main(sys.argv[1:])

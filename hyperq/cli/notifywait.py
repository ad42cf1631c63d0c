"""`hq submit --wait --on-notify <CMD>` (graphs.md §4.2): run CMD for every notification
of the submitted job's tasks, one at a time in arrival order, until the job completes.

A callback that cannot start or fails is a WARN line; it never changes the exit code.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any

from hyperq.common import log
from hyperq.common.errors import HqError


def callback_argv(command: str) -> list[str]:
    """POSIX shell words; a string that cannot be split is the program itself."""
    try:
        words = shlex.split(command)
    except ValueError:
        return [command]
    return words or [command]


def run_callback(argv: list[str], job_id: int, item: dict[str, Any]) -> None:
    message = bytes(item["message"])
    env = {
        **os.environ,
        "HQ_JOB_ID": str(job_id),
        "HQ_TASK_ID": str(item["task"]),
        "HQ_WORKER_ID": str(item["worker"]),
    }
    log.info(f"Running on_notify callback: {' '.join(argv)}")
    try:
        done = subprocess.run([*argv, os.fsdecode(message)], env=env, check=False)
    except OSError as error:
        log.warn(f"Failed to run on_notify callback: {error}")
        return
    if done.returncode != 0:
        log.warn(f"on_notify callback finished with exit code: {done.returncode}")


def wait_with_notifications(session: Any, job_id: int, command: str) -> None:
    """Follow the job's notifications until it completes (or the server goes away)."""
    argv = callback_argv(command)
    try:
        session.request("job-notifications", job=job_id)
        while True:
            message = session.recv()
            if not isinstance(message, dict) or "done" in message or "error" in message:
                return
            item = message.get("notify")
            if isinstance(item, dict):
                run_callback(argv, job_id, item)
    except HqError as error:
        log.debug(f"Stopped following notifications: {error.message}")

"""End-to-end harness: real `hq` processes in a temp dir, always cleaned up.

Every process runs in its own process group and is killed with its group when the test
ends. Waiting is always polling a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HQ_ARGV = [sys.executable, "-m", "hyperq"]
DEFAULT_TIMEOUT = 10.0


def kill_process(process: subprocess.Popen[str], signum: int = signal.SIGKILL) -> None:
    """Signal the process alone (not its group) and reap it."""
    process.send_signal(signum)
    process.wait(timeout=10)


def wait_until(
    condition: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class CommandFailed(Exception):
    def __init__(self, argv: list[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        self.result = result


class HqEnv:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.server_dir = work_dir / "hq-server"
        self.processes: list[tuple[str, subprocess.Popen[str]]] = []
        self.env = dict(os.environ)
        self.env.pop("HQ_SERVER_DIR", None)
        self.env.pop("HQ_OUTPUT_MODE", None)
        self.env["HQ_TEST"] = "1"

    # --- processes -------------------------------------------------------------------
    def start_process(
        self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[str]:
        log = open(self.work_dir / f"{name}.log", "w")
        process = subprocess.Popen(
            HQ_ARGV + args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or self.env,
            cwd=cwd or self.work_dir,
            text=True,
            start_new_session=True,
        )
        log.close()
        self.processes.append((name, process))
        return process

    def log_of(self, name: str) -> str:
        return (self.work_dir / f"{name}.log").read_text()

    def current_run_dir(self) -> str | None:
        link = self.server_dir / "hq-current"
        if (link / "access.json").exists():
            return os.path.realpath(link)
        return None

    def start_server(
        self, *args: str, name: str = "server", wait: bool = True
    ) -> subprocess.Popen[str]:
        previous = self.current_run_dir()
        process = self.start_process(
            name,
            [
                "--colors",
                "never",
                "--server-dir",
                str(self.server_dir),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                *args,
            ],
        )
        if wait:
            wait_until(
                lambda: (
                    process.poll() is not None or self.current_run_dir() not in (None, previous)
                ),
                what="server access record",
            )
            if process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log_of(name)}")
        return process

    def access_path(self) -> Path:
        return self.server_dir / "hq-current" / "access.json"

    def kill_all(self) -> None:
        for _name, process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for _name, process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            # Task processes the worker left behind live in their own groups; the worker
            # kills them, but a SIGKILLed worker cannot, so tests that do that clean up too.

    # --- commands --------------------------------------------------------------------
    def command(
        self,
        args: list[str] | str,
        *,
        expect_fail: bool = False,
        json_mode: bool = False,
        stdin: str | None = None,
        cwd: Path | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
    ) -> str:
        if isinstance(args, str):
            args = [args]
        argv = [*HQ_ARGV, "--colors", "never", "--server-dir", str(self.server_dir)]
        if json_mode:
            argv += ["--output-mode", "json"]
        argv += args
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env or self.env,
            cwd=cwd or self.work_dir,
            input=stdin,
            timeout=timeout,
        )
        if expect_fail:
            if result.returncode == 0:
                raise CommandFailed(argv, result)
            return result.stdout + result.stderr
        if result.returncode != 0:
            raise CommandFailed(argv, result)
        return result.stdout + result.stderr

    def run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        argv = [*HQ_ARGV, "--colors", "never", "--server-dir", str(self.server_dir), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, env=self.env, cwd=self.work_dir, **kwargs
        )

    def json(self, args: list[str] | str) -> Any:
        return json.loads(self.command(args, json_mode=True).split("\n[")[0])

    def stop_server(self, process: subprocess.Popen[str]) -> int:
        self.command(["server", "stop"])
        return process.wait(timeout=10)


class ClusterEnv(HqEnv):
    """HqEnv plus workers and the waiting helpers of the original test suite."""

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.n_workers = 0

    def start_worker(
        self,
        *args: str,
        cpus: int | str = 1,
        hostname: str | None = None,
        wait: bool = True,
        name: str | None = None,
    ) -> subprocess.Popen[str]:
        self.n_workers += 1
        index = self.n_workers
        hostname = hostname or f"worker{index}"
        process = self.start_process(
            name or f"worker{index}",
            [
                "--colors",
                "never",
                "--server-dir",
                str(self.server_dir),
                "worker",
                "start",
                f"--work-dir=workdir{index}",
                *(
                    []
                    if any(a.startswith("--on-server-lost") for a in args)
                    else ["--on-server-lost=stop"]
                ),
                "--detect-resources=none",
                "--hostname",
                hostname,
                "--cpus",
                str(cpus),
                *args,
            ],
        )
        if wait:
            wait_until(
                lambda: process.poll() is not None or hostname in self.running_hosts(),
                what=f"worker {hostname} to connect",
            )
            if process.poll() is not None:
                raise AssertionError(
                    f"worker exited early:\n{self.log_of(name or f'worker{index}')}"
                )
        return process

    def running_hosts(self) -> list[str]:
        result = self.run(["--output-mode", "json", "worker", "list"])
        if result.returncode != 0:
            return []
        return [w["configuration"]["hostname"] for w in json.loads(result.stdout)]

    def job_states(self) -> dict[int, str]:
        jobs = json.loads(self.command(["job", "list", "--all"], json_mode=True))
        return {job["id"]: _job_state(job) for job in jobs}

    def wait_for_job_state(self, job_id: int, state: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(
            lambda: self.job_states().get(job_id) == state.lower(),
            timeout=timeout,
            what=f"job {job_id} to be {state}",
        )

    def task_states(self, job_id: int) -> dict[int, str]:
        data = json.loads(self.command(["task", "list", str(job_id)], json_mode=True))
        return {task["id"]: task["state"] for task in data[str(job_id)]}

    def wait_for_task_state(
        self, job_id: int, task_id: int, state: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        wait_until(
            lambda: self.task_states(job_id).get(task_id) == state.lower(),
            timeout=timeout,
            what=f"task {job_id}/{task_id} to be {state}",
        )

    def worker_states(self) -> dict[int, str]:
        out = self.command(["--output-mode", "quiet", "worker", "list", "--all"])
        states = {}
        for line in out.splitlines():
            worker_id, _, state = line.partition(" ")
            if worker_id.isdigit():
                states[int(worker_id)] = state.strip()
        return states

    def wait_for_worker_state(
        self, worker_id: int, state: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        def check() -> bool:
            out = self.run(["--output-mode", "quiet", "worker", "list", "--all"]).stdout
            for line in out.splitlines():
                parts = line.split(" ", 1)
                if parts[0] == str(worker_id):
                    return parts[1].strip() == state
            return False

        wait_until(check, timeout=timeout, what=f"worker {worker_id} to be {state}")


def _job_state(job: dict[str, Any]) -> str:
    if "state" in job:
        return str(job["state"]).lower()
    stats = job["task_stats"]
    for key in ("running", "waiting", "failed", "aborted", "canceled"):
        if stats.get(key):
            return key
    return "opened" if job.get("is_open") else "finished"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone: it no longer runs.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

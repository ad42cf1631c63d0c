"""One interface for everything a command prints, with three renderers behind it.

Commands hand plain data (the server's replies, as the client contract shapes them) to an
`Output`; the renderer for the chosen mode (cli tables, JSON, quiet) decides how it looks.
Adding a printable thing means adding one method here and one in each renderer, so the
three modes never drift apart. Per-item outcomes (cancel, close, stop, forget, ...) are log
lines on stderr in every mode; they live here once, as concrete methods.

This module is imported by every printing command: standard library and hyperq.common
only, and nothing here talks to the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperq.common import log
from hyperq.server.info import ServerInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hyperq.common.idrange import IdRanges
    from hyperq.common.resources import ResourceDescriptor


Task = Mapping[str, Any]
"""A TASK of the client contract (wire form: epoch timestamps, absent values None)."""


@dataclass(frozen=True)
class Progress:
    """What one redraw of `job progress` shows (sums over the selected jobs)."""

    done_jobs: int
    total_jobs: int
    total_tasks: int
    running: int
    finished: int
    failed: int
    canceled: int
    aborted: int

    @property
    def completed_tasks(self) -> int:
        return self.finished + self.failed + self.canceled + self.aborted


@dataclass(frozen=True)
class TaskOutput:
    """One task's output file for `job cat`; `path` is None when it has none to show."""

    task_id: int
    path: str | None


class Output:
    """Base renderer: methods raising NotImplementedError are overridden by all three modes."""

    mode = "base"

    def server_info(self, info: ServerInfo, server_dir: Path | None) -> None:
        raise NotImplementedError

    def job_submitted(self, job_id: int) -> None:
        raise NotImplementedError

    def job_opened(self, job_id: int) -> None:
        raise NotImplementedError

    def generated_access(self, path: Path) -> None:
        """After `server generate-access`: nothing to print in any mode."""

    def nothing(self) -> None:
        """A command with no result: JSON mode still prints one value."""

    # Jobs and tasks

    def job_list(self, jobs: Sequence[Mapping[str, Any]], total: int, verbose: bool) -> None:
        """`job list`: the already filtered JOB_INFOs (+ state), `total` = jobs on the server."""
        raise NotImplementedError

    def job_summary(self, counts: Mapping[str, int]) -> None:
        """`job summary`: lowercase state -> number of jobs."""
        raise NotImplementedError

    def job_details(
        self, jobs: Sequence[Mapping[str, Any]], worker_names: Mapping[int, str]
    ) -> None:
        """`job info`: JOB_DETAILs of the `job-info` reply."""
        raise NotImplementedError

    def task_ids(self, jobs: Mapping[int, IdRanges]) -> None:
        """`job task-ids`: job id -> its (filtered) task ids."""
        raise NotImplementedError

    def task_list(
        self,
        jobs: Mapping[int, Sequence[Task]],
        worker_names: Mapping[int, str],
        verbose: bool,
    ) -> None:
        """`task list`: job id -> its TASKs."""
        raise NotImplementedError

    def task_explanation(self, data: Mapping[str, Any]) -> None:
        """`task explain`: the task-explain reply (graphs.md §3)."""
        raise NotImplementedError

    def task_info(
        self, job_id: int, tasks: Sequence[Task], worker_names: Mapping[int, str], verbose: bool
    ) -> None:
        """`task info`: TASKs with their submit fields (task-info reply)."""
        raise NotImplementedError

    def job_progress(self, progress: Progress, final: bool) -> None:
        """One redraw of `job progress` (`final` after the last one)."""
        raise NotImplementedError

    def job_output(
        self, job_id: int, tasks: Sequence[TaskOutput], stream: str, header: bool
    ) -> None:
        """`job cat`: copy each task's file to stdout verbatim (cli and quiet alike)."""
        import shutil
        import sys

        for task in tasks:
            if header:
                print(f"# Job {job_id}, task {task.task_id}", flush=True)
            if task.path is None:
                log.warn(f"Task {task.task_id} has no `{stream}` stream associated with it")
                continue
            try:
                with open(task.path, "rb") as file:
                    sys.stdout.flush()
                    shutil.copyfileobj(file, sys.stdout.buffer)
                    sys.stdout.buffer.flush()
            except OSError as error:
                log.warn(f"File at `{task.path}` cannot be opened: {error}")

    # Workers

    def worker_list(self, workers: Sequence[Mapping[str, Any]]) -> None:
        """`worker list`: WORKER objects (+ state, pid) of the `worker-list` reply."""
        raise NotImplementedError

    def worker_info(self, workers: Sequence[Mapping[str, Any]]) -> None:
        """`worker info`: WORKER objects with runtime_info."""
        raise NotImplementedError

    def worker_address(self, hostname: str) -> None:
        raise NotImplementedError

    def hwdetect(self, descriptor: ResourceDescriptor) -> None:
        raise NotImplementedError

    # Per-item outcomes: log lines on stderr, the same in every mode.

    def jobs_not_found(self, job_ids: Iterable[int]) -> None:
        for job_id in sorted(job_ids):
            log.error(f"Job {job_id} not found")

    def jobs_canceled(self, results: Iterable[Mapping[str, Any]]) -> None:
        results = sorted(results, key=lambda r: r["id"])
        if not results:
            log.info("There is nothing to cancel")
        for result in results:
            job_id, status = result["id"], result["status"]
            if status == "canceled":
                log.info(
                    f"Job {job_id} canceled ({result.get('canceled', 0)} tasks canceled, "
                    f"{result.get('finished', 0)} tasks already finished)"
                )
            elif status == "all-finished":
                log.error(f"Canceling job {job_id} failed; all tasks are already finished")
            else:
                log.error(f"Canceling job {job_id} failed; job not found")

    def jobs_closed(self, results: Iterable[Mapping[str, Any]], nothing: bool) -> None:
        results = sorted(results, key=lambda r: r["id"])
        if nothing or not results:
            log.info("There is nothing to close")
        for result in results:
            job_id, status = result["id"], result["status"]
            if status == "closed":
                log.info(f"Job {job_id} closed")
            elif status == "already-closed":
                log.error(f"Closing job {job_id} failed; job is already closed")
            else:
                log.error(f"Closing job {job_id} failed; job not found")

    def jobs_forgotten(self, forgotten: int, ignored: int) -> None:
        message = f"{forgotten} {'job' if forgotten == 1 else 'jobs'} were forgotten"
        if ignored > 0:
            message += f", {ignored} were ignored due to wrong state or invalid ID"
        log.info(message)

    def workers_not_found(self, worker_ids: Iterable[int]) -> None:
        for worker_id in sorted(worker_ids):
            log.error(f"Worker {worker_id} not found")

    def workers_stopped(self, results: Iterable[Mapping[str, Any]]) -> None:
        for result in sorted(results, key=lambda r: r["id"]):
            worker_id, status = result["id"], result["status"]
            if status == "stopped":
                log.info(f"Worker {worker_id} stopped")
            elif status == "already-stopped":
                log.warn(f"Stopping worker {worker_id} failed; worker is already stopped")
            else:
                log.error(f"Stopping worker {worker_id} failed; worker not found")


def print_json(value: Any) -> None:
    import json

    print(json.dumps(value, indent=2), flush=True)


# Helpers shared by the renderers and by commands that read the same replies.


def int_keys(mapping: Mapping[Any, Any] | None) -> dict[int, Any]:
    """CBOR keeps int map keys, JSON does not: accept both."""
    return {int(key): value for key, value in (mapping or {}).items()}


def job_state(info: Mapping[str, Any]) -> str:
    """The lowercase job state: the server's if given, else derived as jobs.md §6 says."""
    state = info.get("state")
    if state:
        return str(state).lower()
    stats = info.get("task_stats") or {}
    for name in ("running", "waiting", "failed", "aborted", "canceled"):
        if stats.get(name, 0) > 0:
            return name
    return "opened" if info.get("is_open") else "finished"


def is_job_completed(info: Mapping[str, Any]) -> bool:
    """Closed and nothing waiting or running (the job's completion time is fixed)."""
    stats = info.get("task_stats") or {}
    return not info.get("is_open") and not stats.get("running") and not stats.get("waiting")


def task_paths(task: Task, job_id: int) -> tuple[str, str | None, str | None] | None:
    """Stage-2 (cwd, stdout, stderr) of a task that has started, else None (jobs.md §2).

    `None` outputs stay None (`none`); `<pipe>` (streamed) passes through untouched.
    """
    if task.get("started_at") is None or task.get("cwd") is None:
        return None
    from hyperq.common import placeholders as ph

    values = {
        ph.JOB_ID: str(job_id),
        ph.TASK_ID: str(task["id"]),
        ph.INSTANCE_ID: str(task.get("instance") or 0),
    }
    submit_dir = task.get("submit_dir")
    if submit_dir:
        values[ph.SUBMIT_DIR] = str(submit_dir)
    if task.get("server_uid"):
        values[ph.SERVER_UID] = str(task["server_uid"])
    cwd, out, err = ph.resolve_task_paths(task, values)
    return (
        cwd,
        ph.STREAM_MARK if task.get("stdout") == ph.STREAM_MARK else out,
        ph.STREAM_MARK if task.get("stderr") == ph.STREAM_MARK else err,
    )


def manager_info(worker: Mapping[str, Any]) -> tuple[str, str] | None:
    """(manager as in JSON: `PBS`/`Slurm`, allocation id) or None without a manager."""
    allocation = worker.get("allocation")
    if allocation:
        return str(allocation.get("manager")), str(allocation.get("id"))
    configuration = worker.get("configuration") or {}
    manager = configuration.get("manager")
    if manager:
        name = "Slurm" if str(manager).lower() == "slurm" else str(manager).upper()
        return name, str(configuration.get("manager_job_id") or "N/A")
    return None

"""The connection to a server: the CLI's sealed, blocking client session underneath.

Every method is one or a few requests of the client contract; the user's process needs
no event loop. Errors reach the user as `RuntimeError`/`Exception` with the server's or
the CLI's text, never a traceback from the transport.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hyperq.api.ffi import JobId, TaskId
from hyperq.api.ffi.protocol import JobDescription
from hyperq.client.session import ClientSession, connect_to_server
from hyperq.common import placeholders as ph
from hyperq.common.context import Context
from hyperq.common.errors import HqError
from hyperq.common.serverdir import default_server_dir

# The original polls every second; progress snapshots are handed on no more often.
PROGRESS_PERIOD = 1.0
UNSUCCESSFUL = ("failed", "canceled", "aborted")


class HqClientContext:
    """The live session behind a `ClientConnection`."""

    def __init__(self, server_dir: Path) -> None:
        self.context = Context(
            server_dir=server_dir,
            server_dir_is_default=False,
            output_mode="cli",
            colors=False,
            debug=False,
        )
        self.session: ClientSession | None = None

    def connect(self) -> ClientSession:
        if self.session is None:
            try:
                self.session = connect_to_server(self.context)
            except HqError as error:
                raise RuntimeError(error.message) from None
        return self.session

    def drop(self) -> None:
        """Forget a session left mid-conversation (an interrupted stream)."""
        if self.session is not None:
            try:
                self.session.close()
            except Exception:
                pass
            self.session = None

    def request(self, op: str, **fields: Any) -> Any:
        session = self.connect()
        try:
            return session.request(op, **fields)
        except HqError as error:
            if error.message.startswith("Connection to the server was lost"):
                self.drop()
            raise


@dataclasses.dataclass(frozen=True)
class FailedTaskContext:
    error: str
    cwd: str | None
    stdout: str | None
    stderr: str | None


TaskFailureMap = dict[JobId, dict[TaskId, FailedTaskContext]]


def _ids_selector(ids: Sequence[int]) -> dict[str, Any]:
    return {"kind": "ids", "ranges": [[i, i, 1] for i in sorted(set(ids))]}


def _wait_status(job: dict[str, Any]) -> dict[str, Any]:
    stats = job.get("task_stats") or {}
    return {
        "finished": int(stats.get("finished", 0)),
        "failed": int(stats.get("failed", 0)),
        "total": int(job.get("task_count", 0)),
        "completed": _is_completed(job),
    }


def _is_completed(job: dict[str, Any]) -> bool:
    stats = job.get("task_stats") or {}
    return not job.get("is_open") and not stats.get("waiting") and not stats.get("running")


def _failure_context(task: dict[str, Any], job_id: int, server_uid: str) -> FailedTaskContext:
    """The task's error and its stage-2 (absolute) paths, as `task info` shows them."""
    error = str(task.get("error") or "")
    if task.get("started_at") is None or task.get("cwd") is None:
        return FailedTaskContext(error=error, cwd=None, stdout=None, stderr=None)
    submit_dir = str(task.get("submit_dir") or "")
    values = {
        ph.JOB_ID: str(job_id),
        ph.TASK_ID: str(task["id"]),
        ph.INSTANCE_ID: str(task.get("instance") or 0),
        ph.SUBMIT_DIR: submit_dir,
        ph.SERVER_UID: server_uid,
    }
    cwd, out, err = ph.resolve_task_paths(task, values)
    return FailedTaskContext(error=error, cwd=cwd, stdout=out, stderr=err)


class ClientConnection:
    def __init__(self, directory: str | None = None) -> None:
        server_dir = Path(os.path.abspath(directory)) if directory else default_server_dir()
        self.ctx = HqClientContext(server_dir)
        self.ctx.connect()

    def submit_job(self, job_description: JobDescription) -> JobId:
        from hyperq.api._submit import submit_job

        session = self.ctx.connect()
        try:
            submit_dir = os.getcwd()
        except OSError as error:
            raise Exception(f"Cannot determine the current directory: {error}") from None
        return submit_job(session, job_description, submit_dir)

    def _submit_tasks(self, job: Any, client: Any) -> JobId:
        """`submit_job` of `job._build(client)`, reading the `Job`'s tasks directly."""
        from hyperq.api._submit import submit_rows, task_rows

        session = self.ctx.connect()
        try:
            submit_dir = os.getcwd()
        except OSError as error:
            raise Exception(f"Cannot determine the current directory: {error}") from None
        rows = task_rows(job.tasks, client)
        return submit_rows(session, job.name, job.max_fails, rows, submit_dir)

    def wait_for_jobs(
        self, job_ids: Sequence[JobId], callback: Callable[[dict[JobId, Any]], Any]
    ) -> list[JobId]:
        """Block until the jobs complete; returns the IDs of jobs with unsuccessful tasks.

        The server streams a snapshot on every change (`job-progress`); the callback
        gets the first, then at most one a second, and always the last.
        """
        session = self.ctx.connect()
        snapshot: dict[str, Any] = {"jobs": []}
        try:
            session.send({"op": "job-progress", "selector": _ids_selector(job_ids)})
            reported = 0.0
            first = True
            while True:
                message = session.recv()
                if not isinstance(message, dict) or "error" in message:
                    error = message.get("error") if isinstance(message, dict) else message
                    raise Exception(f"Waiting for jobs failed: {error}")
                snapshot = message["ok"] if first else message
                first = False
                jobs = snapshot.get("jobs") or []
                done = all(_is_completed(job) for job in jobs)
                now = time.monotonic()
                if done or now - reported >= PROGRESS_PERIOD:
                    callback({int(job["id"]): _wait_status(job) for job in jobs})
                    reported = now
                if done:
                    break
        except HqError as error:
            self.ctx.drop()
            raise Exception(error.message) from None
        except BaseException:
            # Interrupted mid-stream: the rest of the stream would answer the next request.
            self.ctx.drop()
            raise
        return [
            int(job["id"])
            for job in snapshot.get("jobs") or []
            if any((job.get("task_stats") or {}).get(state) for state in UNSUCCESSFUL)
        ]

    def stop_server(self) -> None:
        try:
            self.ctx.request("server-stop")
        except HqError as error:
            raise Exception(error.message) from None
        finally:
            self.ctx.drop()

    def get_failed_tasks(self, job_ids: Sequence[JobId]) -> TaskFailureMap:
        """Tasks in state FAILED of each known job (unknown jobs are left out)."""
        try:
            reply = self.ctx.request(
                "task-list", selector=_ids_selector(job_ids), states=["failed"]
            )
        except HqError as error:
            raise Exception(error.message) from None
        result: TaskFailureMap = {}
        server_uid = ""
        if any(reply.get("jobs", {}).values()):
            # Paths may name the server's UID, which the task rows do not carry.
            try:
                server_uid = str(self.ctx.request("server-info").get("server_uid", ""))
            except HqError as error:
                raise Exception(error.message) from None
        for key, tasks in (reply.get("jobs") or {}).items():
            job_id = int(key)
            result[job_id] = {
                int(task["id"]): _failure_context(task, job_id, server_uid)
                for task in sorted(tasks, key=lambda t: int(t["id"]))
            }
        return result

    def forget_job(self, job_id: JobId) -> None:
        try:
            reply = self.ctx.request("job-forget", selector=_ids_selector([job_id]))
        except HqError as error:
            raise RuntimeError(error.message) from None
        if int(reply.get("forgotten", 0)) != 1:
            raise RuntimeError(
                f"Cannot forget job {job_id}. It either hasn't been completed yet, "
                "or it does not exist"
            )

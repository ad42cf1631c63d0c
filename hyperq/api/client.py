"""`Client`: submit jobs to a running server, wait for them, inspect failures, forget."""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from hyperq.api.common import GenericPath
from hyperq.api.ffi.client import (
    ClientConnection,
    FailedTaskContext,
    JobId,
    TaskFailureMap,
    TaskId,
)
from hyperq.api.job import HasJobId, Job, SubmittedJob, get_job_id
from hyperq.api.task.function import PythonEnv
from hyperq.api.utils.string import pluralize

__all__ = [
    "MAX_PRINTED_TASKS",
    "Client",
    "FailedJobsException",
    "FailedTaskContext",
    "Job",
    "JobId",
    "JobMap",
    "PythonEnv",
    "SubmittedJob",
    "TaskId",
    "create_progress_callback",
]

MAX_PRINTED_TASKS = 5

JobMap = dict[JobId, Job]


class FailedJobsException(Exception):
    """Some tasks of the waited-for jobs did not finish."""

    def __init__(self, failed_tasks: TaskFailureMap, job_map: JobMap) -> None:
        super().__init__(failed_tasks, job_map)
        self.failed_tasks = failed_tasks
        self.job_map = job_map

    def task_label(self, job_id: JobId, task_id: TaskId) -> str:
        task = self.job_map[job_id].task_by_id(task_id)
        return task.label if task is not None else str(task_id)

    def __str__(self) -> str:
        error = ""
        for job_id in sorted(self.failed_tasks):
            tasks = self.failed_tasks[job_id]
            error += f"The following tasks of job `{job_id}` have failed:\n"
            for task_id in itertools.islice(sorted(tasks), MAX_PRINTED_TASKS):
                ctx = tasks[task_id]
                error += f"Task {self.task_label(job_id, task_id)} (id={task_id}):\n{ctx.error}\n"
                if ctx.cwd or ctx.stdout or ctx.stderr:
                    error += "You can find more information here:\n"
                    if ctx.cwd:
                        error += f"Working directory: {ctx.cwd}\n"
                    if ctx.stdout:
                        error += f"Stdout: {ctx.stdout}\n"
                    if ctx.stderr:
                        error += f"Stderr: {ctx.stderr}\n"
        return f"{error}\n"


class Client:
    def __init__(
        self, server_dir: GenericPath | None = None, python_env: PythonEnv | None = None
    ) -> None:
        """Connect to the server of `server_dir` (default `~/.hq-server`) now.

        `python_env` says how workers start the interpreter of function tasks.
        """
        self.connection = ClientConnection(str(server_dir) if server_dir else None)
        self.python_env = python_env if python_env is not None else PythonEnv()

    def submit(self, job: Job) -> SubmittedJob:
        task_count = len(job.tasks)
        if task_count < 1:
            raise Exception("Submitted job must have at least a single task")
        # Straight from the tasks to the request (what `job._build` gives, without a
        # TaskDescription per task).
        job_id = self.connection._submit_tasks(job, self)
        logging.info(f"Submitted job {job_id} with {task_count} {pluralize('task', task_count)}")
        return SubmittedJob(job=job, id=job_id)

    def wait_for_jobs(self, jobs: Sequence[SubmittedJob], raise_on_error: bool = True) -> bool:
        """Block until the jobs complete; True if every task finished.

        With `raise_on_error`, unsuccessful jobs raise `FailedJobsException` instead.
        """
        job_ids = tuple(job.id for job in jobs)
        shown = ",".join(str(job_id) for job_id in job_ids)
        if len(jobs) > 1:
            shown = "{" + shown + "}"
        logging.info(f"Waiting for {pluralize('job', len(jobs))} {shown} to finish")
        failed_jobs = self.connection.wait_for_jobs(job_ids, create_progress_callback())
        if failed_jobs and raise_on_error:
            failed_tasks = self.connection.get_failed_tasks(failed_jobs)
            # A job failed only by cancel or abort still gets its header.
            for job_id in failed_jobs:
                failed_tasks.setdefault(job_id, {})
            raise FailedJobsException(failed_tasks, {job.id: job.job for job in jobs})
        return len(failed_jobs) == 0

    def get_failed_tasks(self, job: SubmittedJob) -> dict[TaskId, FailedTaskContext]:
        return self.connection.get_failed_tasks([job.id])[job.id]

    def forget(self, job: HasJobId) -> None:
        """Drop a completed job (or job ID) from the server."""
        job_id = get_job_id(job)
        self.connection.forget_job(job_id)
        logging.info(f"Forgotten job {job_id}")


class _ProgressBar:
    """A one-line task bar on stderr (the original uses tqdm; any bar will do)."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.n = 0
        self.postfix = ""
        self.stream = stream

    def draw(self, final: bool) -> None:
        filled = self.WIDTH * self.n // self.total if self.total else self.WIDTH
        bar = "#" * filled + " " * (self.WIDTH - filled)
        percent = 100 * self.n // self.total if self.total else 100
        line = f"\r{percent:3d}%|{bar}| {self.n}/{self.total} task [{self.postfix}]"
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()


def create_progress_callback() -> Callable[[dict[JobId, Any]], None]:
    bar: _ProgressBar | None = None

    def callback(jobs: dict[JobId, Any]) -> None:
        nonlocal bar
        if bar is None:
            bar = _ProgressBar(sum(status["total"] for status in jobs.values()), sys.stderr)
        completed = sum(1 for status in jobs.values() if status["completed"])
        bar.postfix = f"{completed}/{len(jobs)} {pluralize('job', len(jobs))} completed"
        bar.n = sum(status["finished"] for status in jobs.values())
        bar.draw(final=completed == len(jobs))

    return callback

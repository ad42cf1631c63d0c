"""A job being built in the user's process: its tasks in creation order, IDs 0, 1, 2…"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperq.api.common import GenericPath
from hyperq.api.ffi import JobId, TaskId
from hyperq.api.ffi.protocol import JobDescription, ResourceRequest
from hyperq.api.output import Stdio, default_stderr, default_stdout
from hyperq.api.task.function import PythonFunction
from hyperq.api.task.program import ExternalProgram, ProgramArgs
from hyperq.api.task.task import EnvType, Task

if TYPE_CHECKING:
    from hyperq.api.client import Client


class Job:
    def __init__(
        self,
        default_workdir: GenericPath | None = None,
        max_fails: int | None = 1,
        default_env: EnvType | None = None,
        name: str | None = None,
    ) -> None:
        self.tasks: list[Task] = []
        self.task_map: dict[TaskId, Task] = {}
        self.max_fails = max_fails
        self.default_workdir = (
            Path(default_workdir).resolve() if default_workdir is not None else None
        )
        self.default_env = default_env or {}
        self.name = name

    def task_by_id(self, id: TaskId) -> Task | None:
        return self.task_map.get(id)

    def program(
        self,
        args: ProgramArgs,
        *,
        env: EnvType | None = None,
        cwd: GenericPath | None = None,
        stdout: Stdio | None = default_stdout(),  # noqa: B008 (the original's default)
        stderr: Stdio | None = default_stderr(),  # noqa: B008
        stdin: str | bytes | None = None,
        deps: Sequence[Task] = (),
        name: str | None = None,
        task_dir: bool = False,
        priority: int = 0,
        resources: ResourceRequest | Sequence[ResourceRequest] | None = None,
        crash_limit: int | None = None,
    ) -> ExternalProgram:
        task = ExternalProgram(
            len(self.tasks),
            args=args,  # type: ignore[arg-type]
            env=merge_envs(self.default_env, env),
            cwd=cwd or self.default_workdir,
            dependencies=deps,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
            name=name,
            task_dir=task_dir,
            priority=priority,
            resources=resources,
            crash_limit=crash_limit,
        )
        self._add_task(task)
        return task

    def function(
        self,
        fn: Callable[..., Any],
        *,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        env: EnvType | None = None,
        cwd: GenericPath | None = None,
        stdout: Stdio | None = default_stdout(),  # noqa: B008
        stderr: Stdio | None = default_stderr(),  # noqa: B008
        deps: Sequence[Task] = (),
        name: str | None = None,
        priority: int = 0,
        resources: ResourceRequest | Sequence[ResourceRequest] | None = None,
        crash_limit: int | None = None,
    ) -> PythonFunction:
        task = PythonFunction(
            len(self.tasks),
            fn,
            args=args,
            kwargs=kwargs,
            env=merge_envs(self.default_env, env),
            cwd=cwd or self.default_workdir,
            stdout=stdout,
            stderr=stderr,
            name=name,
            dependencies=deps,
            priority=priority,
            resources=resources,
            crash_limit=crash_limit,
        )
        self._add_task(task)
        return task

    def _add_task(self, task: Task) -> None:
        self.tasks.append(task)
        self.task_map[task.task_id] = task

    def _build(self, client: Client) -> JobDescription:
        return JobDescription(
            name=self.name,
            tasks=[task._build(client) for task in self.tasks],
            max_fails=self.max_fails,
        )


@dataclasses.dataclass
class SubmittedJob:
    job: Job
    id: JobId


HasJobId = JobId | SubmittedJob


def get_job_id(job: HasJobId) -> JobId:
    if isinstance(job, SubmittedJob):
        return job.id
    if isinstance(job, int):
        return job
    raise ValueError(f"Invalid value of type {type(job)} passed to `get_job_id`")


def merge_envs(default: EnvType, env: EnvType | None) -> EnvType:
    environment = default.copy()
    if env:
        environment.update(env)
    return environment

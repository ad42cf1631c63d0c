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
from hyperq.api.task.program import ExternalProgram, ProgramArgs, get_task_outputs
from hyperq.api.task.task import EnvType, Task, check_stdio
from hyperq.api.validation import validate_args

if TYPE_CHECKING:
    from hyperq.api.client import Client

_new_program = object.__new__


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
        # What `ExternalProgram(...)` does, checks and errors in the same order, without
        # its keyword calls: user loops make 100,000s of these.
        task_id = len(self.tasks)
        default_env = self.default_env
        if default_env:
            environment: EnvType | None = default_env.copy()
            if env:
                environment.update(env)  # type: ignore[union-attr]
        elif env:
            environment = {}
            environment.update(env)
        else:
            environment = None
        task = _new_program(ExternalProgram)
        task.task_id = task_id
        task.dependencies = deps
        task.priority = priority
        task.resources = resources
        task._env = environment
        workdir = cwd or self.default_workdir
        task.cwd = str(workdir) if workdir else None
        task._stdout = (
            stdout if stdout is None or type(stdout) is str else check_stdio(stdout, "stdout")
        )
        task._stderr = (
            stderr if stderr is None or type(stderr) is str else check_stdio(stderr, "stderr")
        )
        task.name = name
        task.crash_limit = crash_limit
        if type(args) is str:
            args = [args]
        plain = True
        for arg in args:
            if type(arg) is not str:
                validate_args(args)  # type: ignore[arg-type]
                plain = False
                break
        task.args = args  # type: ignore[assignment]
        task.task_dir = task_dir
        if stdin is None or type(stdin) is bytes:
            task.stdin = stdin  # type: ignore[assignment]
        elif isinstance(stdin, str):
            task.stdin = stdin.encode()
        elif isinstance(stdin, bytes):
            task.stdin = stdin
        else:
            raise Exception("stdin has to be str, bytes, or None")
        if plain and (
            environment is None or all(type(value) is str for value in environment.values())
        ):
            task._outputs = None
        else:
            task._outputs = get_task_outputs(task) or None
        self.tasks.append(task)
        self.task_map[task_id] = task
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

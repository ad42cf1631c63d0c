"""A task that runs an executable with arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hyperq.api.common import GenericPath
from hyperq.api.ffi import TaskId
from hyperq.api.ffi.protocol import ResourceRequest, TaskDescription
from hyperq.api.output import Output, Stdio, gather_outputs
from hyperq.api.task.task import EnvType, Task, resource_variants
from hyperq.api.validation import ValidationException, validate_args

if TYPE_CHECKING:
    from hyperq.api.client import Client

ProgramArgs = list[str] | str


class ExternalProgram(Task):
    __slots__ = ("_outputs", "args", "stdin", "task_dir")

    def __init__(
        self,
        task_id: TaskId,
        *,
        args: list[Any],
        env: EnvType | None = None,
        cwd: GenericPath | None = None,
        stdout: Stdio | None = None,
        stderr: Stdio | None = None,
        stdin: str | bytes | None = None,
        name: str | None = None,
        dependencies: Sequence[Task] = (),
        task_dir: bool = False,
        priority: int = 0,
        resources: ResourceRequest | Sequence[ResourceRequest] | None,
        crash_limit: int | None = None,
    ) -> None:
        super().__init__(
            task_id,
            dependencies,
            priority,
            resources,
            env=env,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            name=name,
            crash_limit=crash_limit,
        )
        args = to_arg_list(args)
        validate_args(args)
        self.args = args
        self.task_dir = task_dir
        if stdin is None or isinstance(stdin, bytes):
            self.stdin = stdin
        elif isinstance(stdin, str):
            self.stdin = stdin.encode()
        else:
            raise Exception("stdin has to be str, bytes, or None")
        self._outputs = get_task_outputs(self) or None

    @property
    def outputs(self) -> dict[str, Output]:
        outputs = self._outputs
        if outputs is None:
            outputs = self._outputs = {}
        return outputs

    @outputs.setter
    def outputs(self, value: dict[str, Output]) -> None:
        self._outputs = value

    def _build(self, client: Client) -> TaskDescription:
        return TaskDescription(
            id=self.task_id,
            args=self.args,
            env=self.env,
            stdout=self.stdout,
            stderr=self.stderr,
            stdin=self.stdin,
            cwd=self.cwd,
            dependencies=self._dependency_ids(),
            task_dir=self.task_dir,
            priority=self.priority,
            resource_request=resource_variants(self.resources),
            crash_limit=self.crash_limit,
        )

    def __getitem__(self, key: str) -> Output:
        if key not in self.outputs:
            raise Exception(f"Output `{key}` not found in {self}")
        return self.outputs[key]

    def __repr__(self) -> str:
        return f"Task(args={self.args}, env={self.env}, cwd={self.cwd}, outputs={self.outputs})"


def to_arg_list(args: ProgramArgs) -> list[str]:
    # A string is one program name, never split on spaces.
    if isinstance(args, str):
        return [args]
    return args


def get_task_outputs(task: ExternalProgram) -> dict[str, Output]:
    found: dict[str, Output] = {}
    for output in gather_outputs(task.args) + gather_outputs(task.env):
        if output.name in found:
            raise ValidationException(f"Output `{output.name}` has been defined multiple times")
        found[output.name] = output
    return found

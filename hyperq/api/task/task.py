"""What every task of a job has: ID, dependencies, resources, env, cwd, stdio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperq.api.common import GenericPath
from hyperq.api.ffi import TaskId
from hyperq.api.ffi.protocol import ResourceRequest
from hyperq.api.output import Stdio, StdioDef
from hyperq.api.validation import ValidationException

if TYPE_CHECKING:
    from hyperq.api.client import Client
    from hyperq.api.ffi.protocol import TaskDescription

EnvType = dict[str, str]


def resource_variants(
    resources: ResourceRequest | Sequence[ResourceRequest] | None,
) -> tuple[ResourceRequest, ...]:
    if resources is None:
        return ()
    if isinstance(resources, ResourceRequest):
        return (resources,)
    return tuple(resources)


class Task:
    # Slots keep a task small and quick to make (a job may have 100,000s); `__dict__`
    # still lets subclasses and users add attributes. env, stdout and stderr are built
    # on first access: most tasks never need their `{}` or `StdioDef` objects.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_env",
        "_stderr",
        "_stdout",
        "crash_limit",
        "cwd",
        "dependencies",
        "name",
        "priority",
        "resources",
        "task_id",
    )

    def __init__(
        self,
        task_id: TaskId,
        dependencies: Sequence[Task] = (),
        priority: int = 0,
        resources: ResourceRequest | Sequence[ResourceRequest] | None = None,
        env: EnvType | None = None,
        cwd: GenericPath | None = None,
        stdout: Stdio | None = None,
        stderr: Stdio | None = None,
        name: str | None = None,
        crash_limit: int | None = None,
    ) -> None:
        assert dependencies is not None
        self.task_id = task_id
        self.dependencies = dependencies
        self.priority = priority
        self.resources = resources
        self._env = env if env else None
        self.cwd = str(cwd) if cwd else None
        self._stdout = check_stdio(stdout, "stdout")
        self._stderr = check_stdio(stderr, "stderr")
        self.name = name
        self.crash_limit = crash_limit

    @property
    def env(self) -> EnvType:
        env = self._env
        if env is None:
            env = self._env = {}
        return env

    @env.setter
    def env(self, value: EnvType) -> None:
        self._env = value

    @property
    def stdout(self) -> StdioDef | None:
        value = self._stdout
        if value is not None and not isinstance(value, StdioDef):
            value = self._stdout = StdioDef.from_path(value)
        return value

    @stdout.setter
    def stdout(self, value: StdioDef | None) -> None:
        self._stdout = value

    @property
    def stderr(self) -> StdioDef | None:
        value = self._stderr
        if value is not None and not isinstance(value, StdioDef):
            value = self._stderr = StdioDef.from_path(value)
        return value

    @stderr.setter
    def stderr(self, value: StdioDef | None) -> None:
        self._stderr = value

    @property
    def label(self) -> str:
        """The task's name if it has one, else its ID."""
        return self.name if self.name is not None else str(self.task_id)

    def _build(self, client: Client) -> TaskDescription:
        raise NotImplementedError

    def _dependency_ids(self) -> list[int]:
        return [dependency.task_id for dependency in self.dependencies]


def check_stdio(stdio: Any, stream: str) -> Any:
    """`stdio` if `build_stdio` takes it (raising its error if not), unconverted."""
    if stdio is None or type(stdio) is str or isinstance(stdio, (str, Path, StdioDef)):
        return stdio
    return build_stdio(stdio, stream)


def build_stdio(stdio: Any, stream: str) -> StdioDef | None:
    if isinstance(stdio, (str, Path)):
        return StdioDef.from_path(stdio)
    if isinstance(stdio, StdioDef):
        return stdio
    if stdio is None:
        return None
    raise ValidationException(
        f"Invalid value provided for `{stream}`: {type(stdio)}. "
        "Expected str, Path or `StdioDef` or `None`."
    )

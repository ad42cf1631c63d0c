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
        self.env = env or {}
        self.cwd = str(cwd) if cwd else None
        self.stdout = build_stdio(stdout, "stdout")
        self.stderr = build_stdio(stderr, "stderr")
        self.name = name
        self.crash_limit = crash_limit

    @property
    def label(self) -> str:
        """The task's name if it has one, else its ID."""
        return self.name if self.name is not None else str(self.task_id)

    def _build(self, client: Client) -> TaskDescription:
        raise NotImplementedError

    def _dependency_ids(self) -> list[int]:
        return [dependency.task_id for dependency in self.dependencies]


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

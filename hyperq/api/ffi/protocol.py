"""What the API hands to the connection: resource requests and job/task descriptions."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from hyperq.api.output import StdioDef

ResourceValue = int | float | str


class ResourceRequest:
    """One variant of what a task needs; `cpus` always lands in `resources`."""

    n_nodes: int = 0
    resources: dict[str, ResourceValue]
    min_time: datetime.timedelta | None = None

    def __init__(
        self,
        *,
        n_nodes: int = 0,
        cpus: ResourceValue = 1,
        resources: dict[str, ResourceValue] | None = None,
        min_time: datetime.timedelta | None = None,
    ) -> None:
        self.n_nodes = n_nodes
        if resources is None:
            resources = {}
        # The caller's dict is updated in place, as the original does.
        resources["cpus"] = cpus
        self.resources = resources
        self.min_time = min_time

    def __repr__(self) -> str:
        return (
            f"<ResourceRequest n_nodes={self.n_nodes} resources={self.resources} "
            f"min_time={self.min_time}>"
        )


@dataclasses.dataclass
class TaskDescription:
    id: int
    args: list[str]
    cwd: str | None
    stdout: StdioDef | None
    stderr: StdioDef | None
    stdin: bytes | None
    env: dict[str, str | None]
    dependencies: Sequence[int]
    task_dir: bool
    priority: int
    resource_request: Sequence[ResourceRequest]
    crash_limit: int | None


@dataclasses.dataclass
class JobDescription:
    name: str | None
    tasks: list[TaskDescription]
    max_fails: int | None

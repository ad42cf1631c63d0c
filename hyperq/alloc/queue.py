"""Allocation queues, their allocations and rate limiter (alloc.md §1, §4, §5.5).

Plain data changed by plain methods: no trio, no subprocess, no clock (times are passed
in), so every rule here is unit-tested without processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PBS = "pbs"
SLURM = "slurm"
MANAGERS = (PBS, SLURM)
# `alloc list` shows PBS/SLURM, its JSON PBS/Slurm (as worker.md does for workers).
MANAGER_TABLE = {PBS: "PBS", SLURM: "SLURM"}
MANAGER_JSON = {PBS: "PBS", SLURM: "Slurm"}

# Allocation life: queued → running → finished, or ended early (by its manager's word).
QUEUED = "queued"
RUNNING = "running"
FINISHED = "finished"
ENDED = "ended"

# Delays between submission attempts after failures (alloc.md §5.5).
DELAYS = (0.0, 60.0, 15 * 60.0, 30 * 60.0, 3600.0)
MAX_SUBMIT_FAILS = 10
# A worker that lived at most this long and then lost its connection "crashed".
CRASH_WINDOW = 60.0


class ParamError(ValueError):
    """A stored or requested queue parameter is malformed; names the field."""


def _field(
    data: dict[str, Any], name: str, kinds: type | tuple[type, ...], optional: bool = False
) -> Any:
    if name not in data:
        if optional:
            return None
        raise ParamError(f"missing field {name}")
    value = data[name]
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise ParamError(f"malformed field {name}")
    if not isinstance(value, kinds):
        raise ParamError(f"malformed field {name}")
    return value


def _str_list(data: dict[str, Any], name: str) -> list[str]:
    value = _field(data, name, list)
    if not all(isinstance(v, str) for v in value):
        raise ParamError(f"malformed field {name}")
    return list(value)


@dataclass
class QueueParams:
    """The stored parameters of alloc.md §2.1 (what `autoalloc-queue-created` carries)."""

    manager: str
    backlog: int
    max_workers_per_alloc: int
    timelimit: float
    name: str | None = None
    max_worker_count: int | None = None
    min_utilization: float = 0.0
    additional_args: list[str] = field(default_factory=list)
    worker_start_cmd: str | None = None
    worker_stop_cmd: str | None = None
    worker_wrap_cmd: str | None = None
    cli_resource_descriptor: dict[str, Any] | None = None
    worker_args: list[str] = field(default_factory=list)
    idle_timeout: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "manager": self.manager,
            "backlog": self.backlog,
            "max_workers_per_alloc": self.max_workers_per_alloc,
            "timelimit": self.timelimit,
            "name": self.name,
            "max_worker_count": self.max_worker_count,
            "min_utilization": self.min_utilization,
            "additional_args": list(self.additional_args),
            "worker_start_cmd": self.worker_start_cmd,
            "worker_stop_cmd": self.worker_stop_cmd,
            "worker_wrap_cmd": self.worker_wrap_cmd,
            "cli_resource_descriptor": self.cli_resource_descriptor,
            "worker_args": list(self.worker_args),
            "idle_timeout": self.idle_timeout,
        }

    @staticmethod
    def from_wire(data: Any) -> QueueParams:
        """Validate every field; ParamError names the first bad one."""
        if not isinstance(data, dict):
            raise ParamError("malformed field params")
        manager = _field(data, "manager", str)
        if manager not in MANAGERS:
            raise ParamError("malformed field manager")
        backlog = _field(data, "backlog", int)
        if backlog < 1:
            raise ParamError("malformed field backlog")
        per_alloc = _field(data, "max_workers_per_alloc", int)
        if per_alloc < 1:
            raise ParamError("malformed field max_workers_per_alloc")
        timelimit = float(_field(data, "timelimit", (int, float)))
        if not timelimit > 0:
            raise ParamError("malformed field timelimit")
        max_count = _field(data, "max_worker_count", int, optional=True)
        if max_count is not None and max_count < 1:
            raise ParamError("malformed field max_worker_count")
        min_util = float(_field(data, "min_utilization", (int, float), optional=True) or 0.0)
        if not 0.0 <= min_util <= 1.0:
            raise ParamError("malformed field min_utilization")
        idle = _field(data, "idle_timeout", (int, float), optional=True)
        descriptor = _field(data, "cli_resource_descriptor", dict, optional=True)
        return QueueParams(
            manager=manager,
            backlog=backlog,
            max_workers_per_alloc=per_alloc,
            timelimit=timelimit,
            name=_field(data, "name", str, optional=True),
            max_worker_count=max_count,
            min_utilization=min_util,
            additional_args=_str_list(data, "additional_args"),
            worker_start_cmd=_field(data, "worker_start_cmd", str, optional=True),
            worker_stop_cmd=_field(data, "worker_stop_cmd", str, optional=True),
            worker_wrap_cmd=_field(data, "worker_wrap_cmd", str, optional=True),
            cli_resource_descriptor=descriptor,
            worker_args=_str_list(data, "worker_args"),
            idle_timeout=None if idle is None else float(idle),
        )


@dataclass
class Allocation:
    """One batch job; `id` is the manager's job id string."""

    id: str
    queue_id: int
    target_worker_count: int
    queued_at: float
    workdir: str
    state: str = QUEUED
    started_at: float | None = None
    ended_at: float | None = None
    failed: bool = False
    connected: set[int] = field(default_factory=set)
    # One flag per lost worker: did it crash?
    lost: list[bool] = field(default_factory=list)
    status_errors: int = 0

    @property
    def is_active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    def status(self) -> str:
        """queued | running | finished | failed, as `alloc info` shows it."""
        if self.state in (QUEUED, RUNNING):
            return self.state
        return "failed" if self.failed else "finished"


@dataclass
class RateLimiter:
    """Back-off after failures and the counters that auto-pause a queue (§5.5)."""

    index: int = 0
    last_attempt: float | None = None
    submit_fails: int = 0
    alloc_fails: int = 0

    def may_submit(self, now: float) -> bool:
        if self.last_attempt is None:
            return True
        return now - self.last_attempt >= DELAYS[self.index]

    def attempt(self, now: float) -> None:
        self.last_attempt = now

    def submit_failed(self) -> None:
        self.submit_fails += 1
        self.index = min(self.index + 1, len(DELAYS) - 1)

    def submit_succeeded(self) -> None:
        self.submit_fails = 0
        if self.alloc_fails == 0:
            self.index = 0

    def allocation_failed(self) -> None:
        self.alloc_fails += 1
        self.index = min(self.index + 1, len(DELAYS) - 1)

    def allocation_succeeded(self) -> None:
        self.alloc_fails = 0
        self.index = 0

    def pause_reason(self, queue_id: int, max_alloc_fails: int) -> str | None:
        if self.alloc_fails >= max_alloc_fails:
            return f"The queue {queue_id} had too many failed allocations, it will be paused."
        if self.submit_fails >= MAX_SUBMIT_FAILS:
            return f"The queue {queue_id} had too many failed submissions, it will be paused."
        return None


@dataclass
class Queue:
    id: int
    params: QueueParams
    paused: bool = False
    allocations: dict[str, Allocation] = field(default_factory=dict)
    # The resources (descriptor JSON) of the last worker that connected from this queue.
    known_resources: dict[str, Any] | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter)
    counter: int = 0  # allocations attempted so far (failed submits count too)

    def active(self) -> list[Allocation]:
        return [a for a in self.allocations.values() if a.is_active]

    def queued(self) -> list[Allocation]:
        return [a for a in self.allocations.values() if a.state == QUEUED]

    def active_workers(self) -> int:
        return sum(a.target_worker_count for a in self.active())

    def has_space(self) -> bool:
        if len(self.queued()) >= self.params.backlog:
            return False
        limit = self.params.max_worker_count
        return limit is None or self.active_workers() < limit

    def dir_name(self) -> str:
        return f"{self.id}-{self.params.name}" if self.params.name else str(self.id)

    def job_name(self, number: int) -> str:
        return f"{self.params.name}-{number}" if self.params.name else f"hq-{self.id}-{number}"

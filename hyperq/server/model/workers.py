"""Workers as the server model sees them: configuration, lifetime, what they hold.

Changed only through `Model.apply`. No I/O and no clock: lifetimes are computed against
a `now` the caller passes in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperq.common.resources import ResourceDescriptor, WorkerAllocator


class Worker:
    """A connected (or departed) worker.

    `tasks` holds the (job, task) keys of everything assigned or running here; the
    allocator exists only while the worker is connected.
    """

    __slots__ = (
        "allocator",
        "configuration",
        "cpu_count",
        "descriptor",
        "ended_at",
        "group",
        "held",
        "hostname",
        "id",
        "last_task_started",
        "lost_reason",
        "min_utilization",
        "mn_task",
        "n_running",
        "started_at",
        "stop_requested",
        "tails",
        "tasks",
        "time_limit",
    )

    def __init__(self, worker_id: int, configuration: Mapping[str, Any], started_at: float) -> None:
        self.id = worker_id
        self.configuration = configuration
        self.hostname = str(configuration.get("hostname", ""))
        # All nodes of one multi-node task come from one group (cluster.md §1.2).
        self.group = str(configuration.get("group") or "default")
        limit = configuration.get("time_limit")
        self.time_limit: float | None = float(limit) if limit is not None else None
        # `--min-utilization` (cluster.md §3.1), read once: every scheduling pass asks.
        self.min_utilization = _fraction(configuration.get("min_utilization"))
        self.started_at = started_at
        try:
            self.descriptor: ResourceDescriptor | None = ResourceDescriptor.from_json(
                configuration["resources"]
            )
        except (KeyError, TypeError, ValueError):
            # A worker we cannot read the resources of can never get a task.
            self.descriptor = None
        self.allocator: WorkerAllocator | None = (
            WorkerAllocator(self.descriptor) if self.descriptor is not None else None
        )
        cpus = self.descriptor.get("cpus") if self.descriptor is not None else None
        # How deep its queues run (Model.depth_of) goes by it.
        self.cpu_count = cpus.unit_count() if cpus is not None else 0
        self.lost_reason: str | None = None
        self.ended_at: float | None = None
        self.stop_requested = False
        # Restored from a journal and waiting for its `reconnect` worker to come back:
        # its running tasks stay put, nothing new is assigned to it.
        self.held = False
        self.tasks: set[tuple[int, int]] = set()
        # Per job, the ends of the queues of tasks here (a task holding an allocation of
        # its own, and the tasks queued behind it in turn) that may take one more task
        # (Model.depth_of): the scheduler's candidates, kept as tasks come and go, so
        # a pass never walks every task of a worker.
        self.tails: dict[int, dict[int, Any]] = {}
        self.n_running = 0
        self.last_task_started: tuple[int, int, float] | None = None
        # The multi-node task this worker is reserved for (root or secondary node): while
        # set, no other task comes here. The root also lists the task in `tasks`.
        self.mn_task: tuple[int, int] | None = None

    @property
    def is_connected(self) -> bool:
        return self.lost_reason is None

    @property
    def accepts_tasks(self) -> bool:
        return (
            self.lost_reason is None
            and not self.stop_requested
            and not self.held
            and self.allocator is not None
            and self.mn_task is None
        )

    @property
    def is_free_node(self) -> bool:
        """Free for a multi-node task: accepts tasks and holds none (cluster.md §1.3)."""
        return self.accepts_tasks and not self.tasks

    @property
    def mn_main(self) -> bool | None:
        """True on the root of a multi-node task, False on a secondary node, else None."""
        if self.mn_task is None:
            return None
        return self.mn_task in self.tasks

    def remaining_lifetime(self, now: float) -> float | None:
        """Seconds left before the worker's time limit; None when it has none."""
        if self.time_limit is None:
            return None
        return self.time_limit - (now - self.started_at)


def _fraction(value: Any) -> float:
    """A configured fraction as a float; 0 when absent or not a number."""
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0

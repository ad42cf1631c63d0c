"""What the journal remembers of automatic allocation (alloc.md §6): the queues that
were created and not removed, the highest queue ID ever used, the allocations that were
queued or running when the log ends, and each queue's last known worker resources.

Only this durable part lives in the model; the allocator (hyperq.alloc) keeps the live
state (limiters, pause, timers) and rebuilds from this record at server start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AllocationRecord:
    queue_id: int
    worker_count: int
    queued_at: float
    started_at: float | None = None


@dataclass
class QueueRecord:
    params: dict[str, Any]
    known_resources: dict[str, Any] | None = None


@dataclass
class AutoallocRecords:
    queues: dict[int, QueueRecord] = field(default_factory=dict)
    max_queue_id: int = 0
    # Allocations not yet finished, by manager job id.
    allocations: dict[str, AllocationRecord] = field(default_factory=dict)
    # Every allocation ever queued → its queue (for known worker resources on replay).
    owners: dict[str, int] = field(default_factory=dict)

    def queue_created(self, queue_id: int, params: dict[str, Any]) -> None:
        self.queues[queue_id] = QueueRecord(dict(params))
        self.max_queue_id = max(self.max_queue_id, queue_id)

    def queue_removed(self, queue_id: int) -> None:
        self.queues.pop(queue_id, None)
        for allocation_id in [
            a for a, record in self.allocations.items() if record.queue_id == queue_id
        ]:
            del self.allocations[allocation_id]

    def allocation_queued(self, queue_id: int, allocation_id: str, count: int, at: float) -> None:
        self.allocations[allocation_id] = AllocationRecord(queue_id, count, at)
        self.owners[allocation_id] = queue_id

    def allocation_started(self, allocation_id: str, at: float) -> None:
        record = self.allocations.get(allocation_id)
        if record is not None and record.started_at is None:
            record.started_at = at

    def allocation_finished(self, allocation_id: str) -> None:
        self.allocations.pop(allocation_id, None)

    def worker_connected(self, configuration: Any) -> None:
        allocation_id = configuration.get("manager_job_id")
        queue_id = self.owners.get(allocation_id) if isinstance(allocation_id, str) else None
        if queue_id is None or queue_id not in self.queues:
            return
        resources = configuration.get("resources")
        if isinstance(resources, dict):
            self.queues[queue_id].known_resources = dict(resources)

    def to_plain(self) -> dict[str, Any]:
        return {
            "queues": [[q, r.params, r.known_resources] for q, r in self.queues.items()],
            "max_queue_id": self.max_queue_id,
            "allocations": [
                [a, r.queue_id, r.worker_count, r.queued_at, r.started_at]
                for a, r in self.allocations.items()
            ],
            "owners": dict(self.owners),
        }

    @staticmethod
    def from_plain(data: Any) -> AutoallocRecords:
        records = AutoallocRecords()
        if not data:
            return records
        for queue_id, params, known in data["queues"]:
            records.queues[int(queue_id)] = QueueRecord(dict(params), known)
        records.max_queue_id = int(data["max_queue_id"])
        for allocation_id, queue_id, count, queued_at, started_at in data["allocations"]:
            records.allocations[str(allocation_id)] = AllocationRecord(
                int(queue_id), int(count), float(queued_at), started_at
            )
        records.owners = {str(k): int(v) for k, v in data["owners"].items()}
        return records

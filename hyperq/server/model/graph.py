"""Task graphs in the model: ready lanes and dependency walks.

A graph task is a Submit of its own (`Submit.node` = its task ID), so every per-task
path of the model (records, views, launch descriptions) works for it unchanged, and only
graph tasks pay per-task memory. What the scheduler needs differs: thousands of ready
graph tasks must not cost a scheduling pass one entry each. So ready graph tasks of one
job that share a priority and resource variants sit in one *lane*, which the scheduler
walks like an array submit: in ascending task ID order.

Bookkeeping is O(1) per edge: a task holds a counter of unfinished dependencies, the job
holds the reverse edges (`Job.dependants`), and finishing a task touches only its
dependants. Pure data: no I/O, no clock, no trio.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterator

from hyperq.common.resources import ResourceRequest
from hyperq.server.model.jobs import ACTIVE, Job

LaneKey = tuple[int, int, tuple[ResourceRequest, ...]]
"""(job ID, priority, resource variants)."""

# Stale entries skipped at the head of a lane before the list is compacted; compaction
# costs a copy of the rest, so it is done only when the skipped part dominates.
_COMPACT_AT = 512


class Lane:
    """Ready graph tasks of one job with one priority and one request, by ID.

    `ids[head:]` is sorted; an entry counts only while it is in `members` (removal is
    lazy: tasks leave the lane from its head far more often than from its middle).
    """

    __slots__ = ("head", "ids", "index", "job_id", "members", "priority", "variants")

    def __init__(self, key: LaneKey, index: int) -> None:
        self.job_id, self.priority, self.variants = key
        self.index = index  # unique among lanes: breaks ties in the scheduler's heap
        self.ids: list[int] = []
        self.head = 0
        self.members: set[int] = set()

    def __len__(self) -> int:
        return len(self.members)

    def add(self, task_id: int) -> None:
        if task_id in self.members:
            return
        self.members.add(task_id)
        ids = self.ids
        if len(ids) == self.head or ids[-1] < task_id:
            ids.append(task_id)
        else:
            insort(ids, task_id, lo=self.head)

    def extend(self, task_ids: list[int]) -> None:
        """Add many tasks, `task_ids` ascending: one bulk step when they all come after
        the lane's last ID (a new graph), else one by one."""
        ids = self.ids
        if (
            task_ids
            and (len(ids) == self.head or ids[-1] < task_ids[0])
            and self.members.isdisjoint(task_ids)
        ):
            self.members.update(task_ids)
            ids.extend(task_ids)
            return
        for task_id in task_ids:
            self.add(task_id)

    def discard(self, task_id: int) -> None:
        if task_id not in self.members:
            return
        self.members.remove(task_id)
        ids = self.ids
        head = self.head
        while head < len(ids) and ids[head] not in self.members:
            head += 1
        if head == len(ids):
            ids.clear()
            head = 0
        elif head >= _COMPACT_AT and head * 2 >= len(ids):
            del ids[:head]
            head = 0
        self.head = head

    def walk(self) -> Iterator[int]:
        """Member task IDs in ascending order (each once)."""
        members = self.members
        previous = -1
        ids = self.ids
        for index in range(self.head, len(ids)):
            task_id = ids[index]
            if task_id != previous and task_id in members:
                previous = task_id
                yield task_id


def transitive_dependants(job: Job, task_id: int, skip: set[int]) -> list[int]:
    """Waiting graph tasks that depend on `task_id`, directly or not, in ascending ID
    order; tasks in `skip` (and what only they lead to) are left out, and every task
    returned is added to `skip`."""
    found: list[int] = []
    stack = [task_id]
    while stack:
        for submit in job.dependants.get(stack.pop(), ()):
            node = submit.node
            if node is None or node in skip or job.state_of(node) not in ACTIVE:
                continue
            skip.add(node)
            found.append(node)
            stack.append(node)
    found.sort()
    return found

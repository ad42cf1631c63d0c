"""Scheduling decisions as a pure function of the model and `now`.

Rules (server.md §9): higher priority first, then lower job ID, then lower task ID; a
task goes only to a worker that accepts tasks, has every requested resource free and
whose remaining lifetime (time limit − uptime) covers the task's time request; among
those, workers already busy come first (lowest ID first), then idle ones (lowest ID
first), so workers are filled before new ones are touched.

Cost of one pass: O(assigned · log submits + submits + workers · distinct requests),
never O(waiting tasks): tasks of a submit share one ResourceRequest and come from the
submit's cursor in ID order, and a worker that cannot take a request once in a pass is
not asked again for that request.

The pass tries allocations on the workers' real allocators and gives everything back
before returning, so the model is unchanged; `Model.apply(TaskAssigned)` then makes the
same allocations when the edge applies the assignments right away, in order. Never
here: I/O, clocks, mutation of the model that outlives the call.
"""

from __future__ import annotations

import heapq

from hyperq.common.resources import Allocation, ResourceRequest, WorkerAllocator, fits_ever
from hyperq.server.model.graph import Lane
from hyperq.server.model.jobs import Submit
from hyperq.server.model.state import Assignment, Model
from hyperq.server.model.workers import Worker

DEFAULT_BATCH = 1_000

Variants = tuple[ResourceRequest, ...]


class _SubmitQueue:
    """Waiting tasks of one submit in ID order, walked locally during one pass."""

    __slots__ = ("_next", "_queued_at", "_rank", "submit")

    def __init__(self, submit: Submit) -> None:
        self.submit = submit
        self._rank = submit.next_pristine_rank(submit.cursor)
        self._queued_at = 0
        self._next = self._peek()

    def _peek(self) -> int | None:
        requeued = self.submit.requeued
        queued = requeued[self._queued_at] if self._queued_at < len(requeued) else None
        pristine = self.submit.ids.select(self._rank) if self._rank is not None else None
        if queued is None:
            return pristine
        if pristine is None or queued < pristine:
            return queued
        return pristine

    @property
    def head(self) -> int | None:
        return self._next

    def pop(self) -> None:
        requeued = self.submit.requeued
        if self._queued_at < len(requeued) and requeued[self._queued_at] == self._next:
            self._queued_at += 1
        elif self._rank is not None:
            self._rank = self.submit.next_pristine_rank(self._rank + 1)
        self._next = self._peek()


class _LaneQueue:
    """Ready graph tasks of one lane in ID order, walked locally during one pass."""

    __slots__ = ("_walk", "head")

    def __init__(self, lane: Lane) -> None:
        self._walk = lane.walk()
        self.head: int | None = next(self._walk, None)

    def pop(self) -> None:
        self.head = next(self._walk, None)


def _worker_order(model: Model) -> list[Worker]:
    workers = [w for _, w in sorted(model.workers.items()) if w.accepts_tasks]
    busy = [w for w in workers if w.tasks]
    idle = [w for w in workers if not w.tasks]
    return busy + idle


def _fits_somewhere(
    order: list[Worker], lifetimes: list[float | None], request: ResourceRequest
) -> bool:
    for worker, life in zip(order, lifetimes, strict=True):
        if life is not None and life < request.min_time:
            continue
        assert worker.allocator is not None
        allocation = worker.allocator.try_allocate(request)
        if allocation is not None:
            worker.allocator.release(allocation)
            return True
    return False


def schedule(model: Model, now: float, limit: int = DEFAULT_BATCH) -> list[Assignment]:
    """Up to `limit` assignments for the current state; applying them is the caller's job."""
    if limit <= 0:
        return []
    order = _worker_order(model)
    if not order:
        return []
    lifetimes = [w.remaining_lifetime(now) for w in order]
    # Requests nobody can take right now are settled once, not once per submit: when
    # every worker is full, a pass over thousands of waiting submits stays cheap.
    fits_now: dict[Variants, bool] = {}
    heap: list[tuple[int, int, int, int, _SubmitQueue | _LaneQueue, Variants]] = []
    sources: list[Submit | Lane] = [*model.ready.values(), *model.lanes.values()]
    for source in sources:
        variants = source.variants
        if all(request.n_nodes > 0 for request in variants):
            continue  # multi-node tasks: later
        fits = fits_now.get(variants)
        if fits is None:
            fits = fits_now[variants] = any(
                request.n_nodes == 0 and _fits_somewhere(order, lifetimes, request)
                for request in variants
            )
        if not fits:
            continue
        if isinstance(source, Lane):
            # Lanes rank after the job's submits on equal IDs (they never share one).
            queue: _SubmitQueue | _LaneQueue = _LaneQueue(source)
            index = -source.index
        else:
            queue = _SubmitQueue(source)
            index = source.index
        if queue.head is not None:
            heap.append((-source.priority, source.job_id, queue.head, index, queue, variants))
    heapq.heapify(heap)
    # Per variants: index into `order` below which every worker already refused them.
    first_candidate: dict[Variants, int] = {}
    taken: list[tuple[WorkerAllocator, Allocation]] = []
    out: list[Assignment] = []
    try:
        while heap and len(out) < limit:
            neg_priority, job_id, task_id, index, queue, variants = heap[0]
            k = first_candidate.get(variants, 0)
            placed: tuple[Worker, Allocation, int] | None = None
            while k < len(order) and placed is None:
                worker = order[k]
                life = lifetimes[k]
                # On one worker the earliest variant that fits wins (graphs.md §1.3).
                for number, request in enumerate(variants):
                    if request.n_nodes > 0 or (life is not None and life < request.min_time):
                        continue
                    assert worker.allocator is not None
                    allocation = worker.allocator.try_allocate(request)
                    if allocation is not None:
                        placed = (worker, allocation, number)
                        break
                else:
                    k += 1
            first_candidate[variants] = k
            if placed is None:
                heapq.heappop(heap)
                continue
            worker, allocation, number = placed
            assert worker.allocator is not None
            taken.append((worker.allocator, allocation))
            out.append(Assignment(job_id, task_id, worker.id, allocation, number))
            queue.pop()
            if queue.head is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (neg_priority, job_id, queue.head, index, queue, variants))
    finally:
        for allocator, allocation in reversed(taken):
            allocator.release(allocation)
    return out


def worker_is_idle(model: Model, worker_id: int, now: float) -> bool:
    """Idle for the idle timeout: nothing assigned or running, and nothing to expect.

    A worker with no tasks is idle unless some waiting task could still come to it:
    one whose resources it could ever provide and whose time request fits its remaining
    lifetime (worker.md §4: a worker that outlives no waiting task's time request must
    not be kept alive by those tasks).
    """
    worker = model.workers.get(worker_id)
    if worker is None or not worker.is_connected:
        return False
    if worker.tasks:
        return False
    if worker.descriptor is None or not worker.accepts_tasks:
        return True
    life = worker.remaining_lifetime(now)
    for source in [*model.ready.values(), *model.lanes.values()]:
        for request in source.variants:
            if request.n_nodes > 0:
                continue
            if (life is None or life >= request.min_time) and fits_ever(worker.descriptor, request):
                return False
    return True

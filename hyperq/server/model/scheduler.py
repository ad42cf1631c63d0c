"""Scheduling decisions as a pure function of the model and `now`.

Rules (server.md §9): higher priority first, then lower job ID, then lower task ID; a
task goes only to a worker that accepts tasks, has every requested resource free and
whose remaining lifetime (time limit − uptime) covers the task's time request; among
those, workers already busy come first (lowest ID first), then idle ones (lowest ID
first), so workers are filled before new ones are touched.

Multi-node tasks (cluster.md §1.3) are placed by the functions below `schedule`, at
their priority inside the same pass: a task of N nodes takes the N lowest-ID free
workers of one group that all outlive its time request. While one waits that some
group could host, lower-priority single-node tasks get nothing on that group's workers
(its gap is 0, §3.3), so the group drains; one that no group can ever host blocks
nothing.

Cost of one pass: O(assigned · log submits + submits + workers · distinct requests),
never O(waiting tasks): tasks of a submit share one ResourceRequest and come from the
submit's cursor in ID order, and a worker that cannot take a request once in a pass is
not asked again for that request.

When the pass has placed all it can, the first queue in line may get tasks queued
behind placed tasks of its job, up to `Model.depth_of` its worker behind each, on their
allocations (`_successors`):
only for a job whose last task ran short, and only when nothing else waits ahead of it
(no higher priority, no multi-node task, no worker below its minimal utilization). The
worker starts such a task the moment the one it waits for ends, or gives it back.

The pass tries allocations on the workers' real allocators and gives everything back
before returning, so the model is unchanged; `Model.apply(TaskAssigned)` then makes the
same allocations when the edge applies the assignments right away, in order. Never
here: I/O, clocks, mutation of the model that outlives the call.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable
from typing import Any

from hyperq.common.resources import (
    CPUS,
    Allocation,
    AllocationPolicy,
    AllocatorMark,
    ResourceRequest,
    WorkerAllocator,
    fits_ever,
)
from hyperq.server.model.graph import Lane
from hyperq.server.model.jobs import Submit
from hyperq.server.model.state import Assignment, Model
from hyperq.server.model.workers import Worker

DEFAULT_BATCH = 1_000
# A job whose last task ran shorter than this (seconds) gets tasks queued behind its
# running ones (`_successors`): a worker then starts the next task the moment one ends,
# instead of idling for a round trip to the server. A task queued behind a long one
# waits at most a second: then the worker gives it back (worker/queued.py).
QUEUE_BEHIND_BELOW = 0.1

Variants = tuple[ResourceRequest, ...]
Source = Submit | Lane
"""Where waiting tasks come from: an array submit, or a lane of ready graph tasks (one
job, priority and set of resource variants)."""


class _SubmitQueue:
    """Waiting tasks of one submit in ID order, walked locally during one pass."""

    __slots__ = ("_next", "_queued_at", "_rank", "request", "source", "submit")

    def __init__(self, submit: Submit) -> None:
        self.submit = submit
        self.source: Source = submit
        self.request = submit.variants[0]
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

    def mark(self) -> tuple[int | None, int, int | None]:
        """Where the walk is, for `reset` (a look ahead that takes nothing)."""
        return (self._rank, self._queued_at, self._next)

    def reset(self, mark: tuple[int | None, int, int | None]) -> None:
        self._rank, self._queued_at, self._next = mark

    def pop(self) -> None:
        submit = self.submit
        rank = self._rank
        if not submit.requeued and not submit.ahead and not submit.dropped and rank is not None:
            # Nothing but untouched tasks from here (ranks at or above the cursor):
            # the next rank is the next one.
            rank += 1
            if rank < len(submit.ids):
                self._rank = rank
                self._next = submit.ids.select(rank)
            else:
                self._rank = self._next = None
            return
        requeued = submit.requeued
        if self._queued_at < len(requeued) and requeued[self._queued_at] == self._next:
            self._queued_at += 1
        elif self._rank is not None:
            self._rank = self.submit.next_pristine_rank(self._rank + 1)
        self._next = self._peek()


class _LaneQueue:
    """Ready graph tasks of one lane in ID order, walked locally during one pass."""

    __slots__ = ("_at", "_ids", "_members", "head", "request", "source")

    def __init__(self, lane: Lane) -> None:
        self.source: Source = lane
        self.request = lane.variants[0]
        self._ids = lane.ids
        self._members = lane.members
        self._at, self.head = self._seek(lane.head, -1)

    def _seek(self, at: int, after: int) -> tuple[int, int | None]:
        # `ids[head:]` is sorted but may hold stale or repeated IDs (lazy removal).
        ids = self._ids
        while at < len(ids):
            task_id = ids[at]
            if task_id > after and task_id in self._members:
                return at, task_id
            at += 1
        return at, None

    def mark(self) -> tuple[int, int | None]:
        return (self._at, self.head)

    def reset(self, mark: tuple[int, int | None]) -> None:
        self._at, self.head = mark

    def pop(self) -> None:
        if self.head is not None:
            self._at, self.head = self._seek(self._at + 1, self.head)


_Queue = _SubmitQueue | _LaneQueue


def _queue_of(source: Source) -> _Queue:
    return _LaneQueue(source) if isinstance(source, Lane) else _SubmitQueue(source)


def _worker_order(model: Model) -> list[Worker]:
    workers = [w for w in model.connected_workers() if w.accepts_tasks]
    busy = [w for w in workers if w.tasks]
    idle = [w for w in workers if not w.tasks]
    return busy + idle


def _fits_somewhere(
    order: list[Worker],
    lifetimes: list[float | None],
    request: ResourceRequest,
    bounds: dict[str, int] | None = None,
) -> bool:
    # `bounds`: per resource, the most any one worker could give a request now. A
    # request above it fits nowhere, decided without looking at a single worker: when
    # every worker is full, a pass costs O(distinct requests), not O(requests·workers).
    if bounds is not None:
        for entry in request.entries:
            if entry.policy != AllocationPolicy.ALL and entry.amount > bounds.get(entry.name, 0):
                return False
    for worker, life in zip(order, lifetimes, strict=True):
        if life is not None and life < request.min_time:
            continue
        assert worker.allocator is not None
        if worker.allocator.fits_now(request):
            return True
    return False


def _free_bounds(order: list[Worker]) -> tuple[dict[str, int], list[dict[str, int]]]:
    """The most any worker could give a request of each resource now, and the same per
    worker of `order` (bounds only shrink within a pass: they stay bounds to its end)."""
    bounds: dict[str, int] = {}
    per_worker: list[dict[str, int]] = []
    for worker in order:
        assert worker.allocator is not None and worker.descriptor is not None
        mine: dict[str, int] = {}
        for item in worker.descriptor.items:
            bound = mine[item.name] = worker.allocator.free_bound(item.name)
            if bound > bounds.get(item.name, -1):
                bounds[item.name] = bound
        per_worker.append(mine)
    return bounds, per_worker


def _beyond(request: ResourceRequest, bounds: dict[str, int]) -> bool:
    """`request` cannot fit a worker with these free bounds (so try_allocate fails)."""
    for entry in request.entries:
        if entry.policy != AllocationPolicy.ALL and entry.amount > bounds.get(entry.name, 0):
            return True
    return False


def schedule(
    model: Model,
    now: float,
    limit: int = DEFAULT_BATCH,
    queue_behind: float = QUEUE_BEHIND_BELOW,
) -> list[Assignment]:
    """Up to `limit` assignments for the current state; applying them is the caller's job.
    `queue_behind`: see `QUEUE_BEHIND_BELOW` (0 queues nothing behind running tasks)."""
    return schedule_pass(model, now, limit, queue_behind)[0]


def schedule_pass(
    model: Model,
    now: float,
    limit: int = DEFAULT_BATCH,
    queue_behind: float = QUEUE_BEHIND_BELOW,
) -> tuple[list[Assignment], bool]:
    """`schedule`, and whether the pass settles the model: once its assignments are
    applied, another pass at the same `now` with the same `limit` finds nothing (so the
    edge need not run one). Not when the limit cut the pass short, nor when a worker
    waited for its minimal utilization: the set it got may let the next pass place
    more (tests/test_scheduler_properties.py checks this claim)."""
    if limit <= 0:
        return [], False
    order = _worker_order(model)
    if not order:
        return [], True
    multi = _MultiNodePass(model, now)
    lifetimes = [w.remaining_lifetime(now) for w in order]
    # Requests nobody can take right now are settled once, not once per submit: when
    # every worker is full, a pass over thousands of waiting submits stays cheap.
    fits_now: dict[Variants, bool] = {}
    bounds, worker_bounds = _free_bounds(order)
    heap: list[tuple[int, int, int, int, int, _Queue]] = []
    queues: dict[int, _Queue] = {}
    unfit: list[Source] = []
    sources: list[Source] = [*model.ready.values(), *model.lanes.values()]
    lowest = min((source.priority for source in sources), default=0)
    for source in sources:
        variants = source.variants
        if variants[0].n_nodes > 0:
            # Job files never mix multi-node and other variants (check_request_variants).
            multi.add(source)
            continue
        fits = fits_now.get(variants)
        if fits is None:
            fits = fits_now[variants] = any(
                _fits_somewhere(order, lifetimes, request, bounds) for request in variants
            )
        if not fits:
            if source.priority > lowest:
                unfit.append(source)
            continue
        queue = queues[id(source)] = _queue_of(source)
        if queue.head is not None:
            # Lanes rank after the job's submits on equal IDs (they never share one).
            index = -source.index if isinstance(source, Lane) else source.index
            # Among equal priorities a heavier weight goes first (cluster.md §3.2).
            heap.append(
                (-source.priority, -variants[0].weight, source.job_id, queue.head, index, queue)
            )
    heapq.heapify(heap)
    gaps = _GapRule(model, now, lowest)
    # Waiting tasks that fit nowhere now still hold lower priorities to the gap.
    for source in sorted(unfit, key=lambda s: -s.priority):
        gaps.block(source)
    fill = _MinUtilization(order)
    # Per variants: index into `order` below which every worker already refused them.
    first_candidate: dict[Variants, int] = {}
    refused = _RefusedEverywhere()
    # Each allocator's state before this pass first allocated on it: put back at the
    # end, at once rather than allocation by allocation.
    marks: dict[int, tuple[WorkerAllocator, AllocatorMark]] = {}
    out: list[Assignment] = []
    # Where in `out` each queue's tasks went: (first, end, queue).
    spans: list[tuple[int, int, _Queue]] = []
    try:
        while heap and len(out) < limit:
            neg_priority, neg_weight, job_id, task_id, index, queue = heap[0]
            priority = -neg_priority
            # Multi-node tasks of this priority or higher go first (equal: before).
            if multi.pending(priority):
                out.extend(multi.place_down_to(priority, limit - len(out)))
                continue
            variants = queue.source.variants
            single = variants[0] if len(variants) == 1 else None
            k = first_candidate.get(variants)
            if k is None:
                k = len(order) if single and refused.covers(single, priority) else 0
            placed: tuple[Worker, Allocation, int, ResourceRequest] | None = None
            # A full worker is passed over by its free bounds alone where nothing else
            # needs a look at it (a pass walks every worker before the first with room,
            # and all of them once more for the task that fits nowhere).
            bounded = single if single is not None and gaps.open_for(priority) else None
            while k < len(order) and placed is None:
                if bounded is not None and _beyond(bounded, worker_bounds[k]):
                    k += 1
                    continue
                worker = order[k]
                life = lifetimes[k]
                # Each refusal below holds for every later task of this pass (they have
                # equal or lower priority), so `first_candidate` may move past it.
                if worker.id not in fill.waiting and not multi.withholds(worker.id, priority):
                    # On one worker the earliest variant that fits wins (graphs.md §1.3).
                    for number, request in enumerate(variants):
                        if life is not None and life < request.min_time:
                            continue
                        if not gaps.allows(worker, request, priority):
                            continue
                        if _beyond(request, worker_bounds[k]):
                            continue
                        assert worker.allocator is not None
                        if worker.id not in marks:
                            marks[worker.id] = (worker.allocator, worker.allocator.mark())
                        allocation = worker.allocator.try_allocate(request)
                        if allocation is not None:
                            placed = (worker, allocation, number, request)
                            break
                if placed is None:
                    k += 1
            first_candidate[variants] = k
            if placed is None:
                if single is not None:
                    refused.add(single, priority)
                heapq.heappop(heap)
                fill.queues.append(queue)
                gaps.block(queue.source)
                continue
            worker, allocation, number, request = placed
            multi.touched.add(worker.id)
            gaps.consume(worker, request, priority)
            span_start = len(out)
            out.append(Assignment(job_id, task_id, worker.id, allocation, number))
            queue.pop()
            if single is not None and queue.head is not None:
                # It stays first in line while its head is below `end`, the head of the
                # next queue of its job, priority and weight, if any (the queues of a
                # job never share a task ID).
                end = None
                if len(heap) > 1:
                    rival = heap[1] if len(heap) == 2 else min(heap[1], heap[2])
                    if rival[:3] == (neg_priority, neg_weight, job_id):
                        end = rival[3]
                if _more_here(queue, worker, single, priority, end, gaps, out, limit):
                    # It refused the next task: so it would for every later one.
                    first_candidate[variants] = k + 1
            spans.append((span_start, len(out), queue))
            if queue.head is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(
                    heap, (neg_priority, neg_weight, job_id, queue.head, index, queue)
                )
        if len(out) < limit:
            out.extend(multi.place_down_to(None, limit - len(out)))
        if fill.waiting and len(out) < limit:
            fill.queues.extend(item[-1] for item in heap)
            for worker in fill.workers:
                if worker.id in multi.reserved or len(out) >= limit:
                    continue
                assert worker.allocator is not None
                if worker.id not in marks:
                    marks[worker.id] = (worker.allocator, worker.allocator.mark())
                out.extend(fill.run(worker, now, gaps, limit - len(out)))
    finally:
        for allocator, mark in marks.values():
            allocator.reset(mark)
    if (
        queue_behind > 0
        and not heap
        and len(out) < limit
        and not fill.workers
        and not multi.submits
    ):
        out.extend(
            _successors(model, order, lifetimes, sources, queues, spans, out, limit, queue_behind)
        )
    # An empty pass changes nothing, so the next one is empty too.
    return out, not out or (len(out) < limit and not fill.workers)


def _more_here(
    queue: _Queue,
    worker: Worker,
    request: ResourceRequest,
    priority: int,
    end: int | None,
    gaps: _GapRule,
    out: list[Assignment],
    limit: int,
) -> bool:
    """The next tasks of `queue` (of one variant, `request`), placed on `worker`, which
    just took its head, while the queue stays first in line (its head below `end`);
    True if the worker then refused one (as it would refuse any later task).

    Each goes exactly where `schedule_pass`'s loop would put it: the loop would start
    at this worker (its first candidate for the request), which nothing but its
    resources and the gaps may now refuse: its bounds, lifetime and reservations
    let the last task through, and they do not change within a pass. Without the
    heap, the per-task walk and its bookkeeping: a worker's batch of a big array
    costs an allocation and a list entry per task."""
    allocator = worker.allocator
    assert allocator is not None
    job_id = queue.source.job_id
    worker_id = worker.id
    check_gaps = not gaps.open_for(priority)
    # `consume` records nothing without a blocker above the lowest priority (and no
    # blocker appears here).
    count_used = bool(gaps.blockers) or priority > gaps.lowest
    while len(out) < limit:
        head = queue.head
        if head is None or (end is not None and head >= end):
            return False
        if check_gaps and not gaps.allows(worker, request, priority):
            return True
        allocation = allocator.try_allocate(request)
        if allocation is None:
            return True
        if count_used:
            gaps.consume(worker, request, priority)
        out.append(_new_tuple(Assignment, (job_id, head, worker_id, allocation, 0, (), -1)))
        queue.pop()
    return False


_new_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__


def _successors(
    model: Model,
    order: list[Worker],
    lifetimes: list[float | None],
    sources: list[Source],
    queues: dict[int, _Queue],
    spans: list[tuple[int, int, _Queue]],
    out: list[Assignment],
    limit: int,
    below: float,
) -> list[Assignment]:
    """Tasks of the first queue in line, queued behind placed tasks of its job (same
    request) to run on their allocations in turn, up to `Model.depth_of` their worker
    behind each: on the workers in `order`, the queues placed before this pass first, then
    this pass's own (`out`). Only when the job's last task ran shorter than `below`
    seconds and the queue comes first among all waiting work: nothing it holds back
    would otherwise have gone first. Called when the main pass has placed all it could
    and no worker waits for a minimal utilization or a multi-node task; the model is
    not changed."""
    first: Source | None = None
    first_key: tuple[int, int, int, int, int] | None = None
    for source in sources:
        key = (
            -source.priority,
            -source.variants[0].weight,
            source.job_id,
            isinstance(source, Lane),
            source.index,
        )
        if first_key is None or key < first_key:
            first, first_key = source, key
    if first is None or isinstance(first, Lane) or len(first.variants) != 1:
        return []
    job = model.jobs.get(first.job_id)
    if job is None or job.last_run is None or job.last_run >= below:
        return []
    queue = queues.get(id(first)) or _queue_of(first)
    request = first.variants[0]
    if queue.head is None or request.n_nodes > 0:
        return []
    job_id = job.id
    fresh: dict[int, list[Assignment]] = {}
    for start, end, placed_from in spans:
        if placed_from is queue:
            for index in range(start, end):
                fresh.setdefault(out[index].worker_id, []).append(out[index])
    # [worker, end of its queue, allocation, room], the queues placed before this pass
    # first; each gets one task per round, so that few tasks spread over many CPUs.
    ends: list[list[Any]] = []
    for worker, life in zip(order, lifetimes, strict=True):
        if life is not None and life < request.min_time:
            continue
        depth = model.depth_of(worker)
        for tail in worker.tails.get(job_id, {}).values():
            held = tail.submit.variants[tail.variant]
            if tail.allocation is not None and (held is request or held == request):
                room = model.queue_room(job, tail, depth)
                if room > 0:
                    ends.append([worker.id, tail.task_id, tail.allocation, room])
        for a in fresh.get(worker.id, ()):
            ends.append([worker.id, a.task_id, a.allocation, depth])
    chained: list[Assignment] = []
    room_left = limit - len(out)
    for turn in range(max((end[3] for end in ends), default=0)):
        for end in ends:
            if end[3] <= turn:
                continue
            head = queue.head
            if head is None or len(chained) >= room_left:
                return chained
            chained.append(Assignment(job_id, head, end[0], end[2], 0, (), end[1]))
            end[1] = head
            queue.pop()
    return chained


class _RefusedEverywhere:
    """Requests every worker refused in this pass. A request at most as high in priority
    that asks for at least as much of each of their resources, for at least as long,
    is refused too: within a pass, free resources and gaps only shrink. Saves walking
    every worker once per distinct request when the gaps hold free resources back."""

    MAX = 32  # refused requests remembered (the cost of one check is linear in it)

    def __init__(self) -> None:
        self.items: list[tuple[int, float, dict[str, int]]] = []

    @staticmethod
    def _plain(request: ResourceRequest) -> dict[str, int] | None:
        """Amounts per resource, or None for requests this cannot judge (`all`, and
        the strict policies, which may fail where a bigger plain request fits)."""
        amounts: dict[str, int] = {}
        for entry in request.entries:
            if entry.policy not in (
                AllocationPolicy.COMPACT,
                AllocationPolicy.TIGHT,
                AllocationPolicy.SCATTER,
            ):
                return None
            amounts[entry.name] = entry.amount
        return amounts

    def add(self, request: ResourceRequest, priority: int) -> None:
        if len(self.items) >= self.MAX:
            return
        amounts = self._plain(request)
        if amounts is not None:
            self.items.append((priority, request.min_time, amounts))

    def covers(self, request: ResourceRequest, priority: int) -> bool:
        if not self.items:
            return False
        wanted: dict[str, int] | None = None
        for refused_priority, min_time, amounts in self.items:
            if priority > refused_priority or request.min_time < min_time:
                continue
            if wanted is None:
                wanted = {e.name: e.amount for e in request.entries}
                if any(e.policy == AllocationPolicy.ALL for e in request.entries):
                    return False
            if all(wanted.get(name, -1) >= amount for name, amount in amounts.items()):
                return True
        return False


def worker_is_idle(model: Model, worker_id: int, now: float) -> bool:
    """Idle for the idle timeout: nothing assigned or running, and nothing to expect.

    A worker with no tasks is idle unless some waiting task could still come to it:
    one whose resources it could ever provide and whose time request fits its remaining
    lifetime (worker.md §4: a worker that outlives no waiting task's time request must
    not be kept alive by those tasks). A worker held for a multi-node task is not idle.
    """
    worker = model.workers.get(worker_id)
    if worker is None or not worker.is_connected:
        return False
    if worker.tasks or worker.mn_task is not None:
        return False
    if worker.descriptor is None or not worker.accepts_tasks:
        return True
    life = worker.remaining_lifetime(now)
    for source in [*model.ready.values(), *model.lanes.values()]:
        for request in source.variants:
            if life is not None and life < request.min_time:
                continue
            # A waiting multi-node task may need this worker once more of its group join
            # (workers of one allocation start one by one), whatever its resources.
            if request.n_nodes > 0 or fits_ever(worker.descriptor, request):
                return False
    return True


# ---------------------------------------------------------------------------------------
# Multi-node tasks (cluster.md §1.3). Pure functions of the model, also meant for
# `hq task explain`: `group_sizes` / `group_can_ever_host` say whether a group could ever
# run a request, `free_nodes_by_group` / `pick_nodes` whether and where it can now.


def outlives(worker: Worker, now: float, min_time: float) -> bool:
    """The worker's remaining lifetime covers a time request of `min_time` seconds."""
    life = worker.remaining_lifetime(now)
    return life is None or life >= min_time


def group_sizes(model: Model, now: float, min_time: float) -> dict[str, int]:
    """Per group: connected workers that are or will be usable for a multi-node task
    with this time request, counting busy ones (only stopping ones are left out)."""
    sizes: dict[str, int] = {}
    for worker in model.workers.values():
        if (
            worker.is_connected
            and not worker.stop_requested
            and not worker.held
            and worker.allocator is not None
            and outlives(worker, now, min_time)
        ):
            sizes[worker.group] = sizes.get(worker.group, 0) + 1
    return sizes


def worker_group_size(model: Model, worker_id: int) -> int:
    """Connected workers in this worker's group (the `group size` of `task explain`)."""
    worker = model.workers.get(worker_id)
    if worker is None:
        return 0
    return sum(
        1 for other in model.workers.values() if other.is_connected and other.group == worker.group
    )


def group_can_ever_host(model: Model, now: float, request: ResourceRequest) -> bool:
    """Some group is big enough for this multi-node request once its workers are free."""
    return any(
        size >= request.n_nodes for size in group_sizes(model, now, request.min_time).values()
    )


def free_nodes_by_group(
    workers: Iterable[Worker], now: float, min_time: float, exclude: set[int] | None = None
) -> dict[str, list[int]]:
    """Per group, the IDs (ascending) of free workers that outlive `min_time`."""
    out: dict[str, list[int]] = {}
    for worker in sorted(workers, key=lambda w: w.id):
        if exclude and worker.id in exclude:
            continue
        if worker.is_free_node and outlives(worker, now, min_time):
            out.setdefault(worker.group, []).append(worker.id)
    return out


def pick_nodes(free: dict[str, list[int]], n_nodes: int) -> tuple[int, ...] | None:
    """The nodes for one task: the `n_nodes` lowest IDs of one group (the group whose
    pick starts lowest); None if no group has enough. Placement order = ascending ID."""
    best: tuple[int, ...] | None = None
    for ids in free.values():
        if len(ids) >= n_nodes:
            candidate = tuple(ids[:n_nodes])
            if best is None or candidate < best:
                best = candidate
    return best


class _MultiNodePass:
    """The multi-node side of one scheduling pass.

    Keeps which workers this pass already gave away (`touched`: single-node tasks,
    `reserved`: multi-node tasks) and which are kept free for a waiting multi-node task
    (`blocked`: worker → the highest priority it is kept free for).
    """

    def __init__(self, model: Model, now: float) -> None:
        self.model = model
        self.now = now
        self.submits: list[Source] = []
        self._sorted = False
        self._at = 0
        self.touched: set[int] = set()
        self.reserved: set[int] = set()
        self.blocked: dict[int, int] = {}

    def add(self, submit: Source) -> None:
        self.submits.append(submit)
        self._sorted = False

    def _sort(self) -> None:
        if not self._sorted:
            self.submits.sort(key=lambda s: (-s.priority, s.job_id, s.index))
            self._sorted = True

    def pending(self, priority: int) -> bool:
        """A multi-node submit of at least this priority has not had its turn yet."""
        self._sort()
        return self._at < len(self.submits) and self.submits[self._at].priority >= priority

    def withholds(self, worker_id: int, priority: int) -> bool:
        """This worker may not take a single-node task of `priority` in this pass."""
        if worker_id in self.reserved:
            return True
        return self.blocked.get(worker_id, priority) > priority

    def place_down_to(self, priority: int | None, limit: int) -> list[Assignment]:
        """Place the waiting multi-node submits of priority ≥ `priority` (all if None)."""
        self._sort()
        out: list[Assignment] = []
        while self._at < len(self.submits) and len(out) < limit:
            submit = self.submits[self._at]
            if priority is not None and submit.priority < priority:
                break
            out.extend(self._place_submit(submit, limit - len(out)))
            self._at += 1
        return out

    def _place_submit(self, submit: Source, limit: int) -> list[Assignment]:
        request = submit.variants[0]
        if not group_can_ever_host(self.model, self.now, request):
            return []  # no group is big enough: it blocks nothing (cluster.md §1.3)
        out: list[Assignment] = []
        queue = _queue_of(submit)
        taken = self.touched | self.reserved
        free = free_nodes_by_group(self.model.workers.values(), self.now, request.min_time, taken)
        while queue.head is not None and len(out) < limit:
            nodes = pick_nodes(free, request.n_nodes)
            if nodes is None:
                break
            for ids in free.values():
                if nodes[0] in ids:
                    del ids[: request.n_nodes]
            self.reserved.update(nodes)
            out.append(
                Assignment(submit.job_id, queue.head, nodes[0], Allocation(()), workers=nodes)
            )
            queue.pop()
        if queue.head is not None:
            # Still waiting: keep free every worker of a group that could host it, so
            # that lower-priority work drains from them (gap 0, cluster.md §3.3).
            sizes = group_sizes(self.model, self.now, request.min_time)
            for worker in self.model.workers.values():
                if (
                    sizes.get(worker.group, 0) >= request.n_nodes
                    and worker.is_connected
                    and outlives(worker, self.now, request.min_time)
                ):
                    previous = self.blocked.get(worker.id)
                    if previous is None or previous < submit.priority:
                        self.blocked[worker.id] = submit.priority
        return out


# ---------------------------------------------------------------------------------------
# Priority gaps (cluster.md §3.3)


def request_amounts(request: ResourceRequest, totals: dict[str, int]) -> dict[str, int]:
    """Amount (×10 000) per resource the request takes on a worker with `totals`."""
    return {
        e.name: totals.get(e.name, 0) if e.policy == AllocationPolicy.ALL else e.amount
        for e in request.entries
    }


def worker_totals(worker: Worker) -> dict[str, int]:
    if worker.descriptor is None:
        return {}
    return {item.name: item.capacity() for item in worker.descriptor.items}


def priority_gap(
    worker: Worker,
    blocker: ResourceRequest,
    used_by_others: dict[str, int],
    totals: dict[str, int] | None = None,
) -> dict[str, int]:
    """What lower-priority tasks may still use on `worker` while `blocker` waits: its
    total resources minus as many copies of the blocker as fit into them, minus what
    tasks of other kinds hold (`used_by_others`). A blocker asking for `all` of
    something, or for whole nodes, leaves nothing. `totals`: the worker's, if known."""
    if totals is None:
        totals = worker_totals(worker)
    if blocker.n_nodes > 0 or any(e.policy == AllocationPolicy.ALL for e in blocker.entries):
        return dict.fromkeys(totals, 0)
    wanted = request_amounts(blocker, totals)
    copies = min(
        (totals.get(name, 0) // amount for name, amount in wanted.items() if amount > 0),
        default=0,
    )
    return {
        name: total - copies * wanted.get(name, 0) - used_by_others.get(name, 0)
        for name, total in totals.items()
    }


# Distinct waiting requests, highest priorities first, whose gaps a pass works out: a
# bound on the cost of a pass (workers × this many gap computations at most), not a
# rule. A blocker beyond it is still refused its own place by resources, it just does
# not hold lower priorities back.
GAP_MAX_BLOCKERS = 16


class _WorkerGap:
    """One worker's combined gap: the smallest of the gaps of the blockers folded in
    (at most GAP_MAX_BLOCKERS of them)."""

    __slots__ = ("combined", "folded", "totals", "used_by_kind", "used_total")

    def __init__(self, worker: Worker, model: Model) -> None:
        self.totals = worker_totals(worker)
        self.used_total: dict[str, int] = {}
        self.used_by_kind: dict[ResourceRequest, dict[str, int]] = {}
        for job_id, task_id in worker.tasks:
            record = model.jobs[job_id].records[task_id]
            if record.allocation is None:
                continue
            kind = self.used_by_kind.setdefault(record.submit.request, {})
            for res in record.allocation.resources:
                self.used_total[res.name] = self.used_total.get(res.name, 0) + res.amount
                kind[res.name] = kind.get(res.name, 0) + res.amount
        self.combined: dict[str, int] | None = None
        self.folded = 0

    def add_used(self, request: ResourceRequest, amounts: dict[str, int]) -> None:
        kind = self.used_by_kind.setdefault(request, {})
        for name, amount in amounts.items():
            self.used_total[name] = self.used_total.get(name, 0) + amount
            kind[name] = kind.get(name, 0) + amount
            if self.combined is not None and name in self.combined:
                self.combined[name] -= amount

    def fold(self, worker: Worker, blocker: ResourceRequest) -> None:
        own = self.used_by_kind.get(blocker, {})
        others = {name: amount - own.get(name, 0) for name, amount in self.used_total.items()}
        gap = priority_gap(worker, blocker, others, self.totals)
        if self.combined is None:
            self.combined = gap
        else:
            for name, amount in gap.items():
                if amount < self.combined.get(name, amount):
                    self.combined[name] = amount


class _GapRule:
    """The gaps left by waiting higher-priority tasks during one pass.

    Blockers are kept sorted by priority (highest first); a worker folds them into its
    combined gap lazily, the first time a lower-priority task is considered for it, so
    a pass in which nothing fits anywhere pays nothing per blocker and worker. The
    heap hands out tasks by descending priority, so a blocker found later never has a
    higher priority than one a worker has already folded.
    """

    def __init__(self, model: Model, now: float, lowest: int) -> None:
        self.model = model
        self.now = now
        self.lowest = lowest
        self.blockers: list[tuple[int, ResourceRequest]] = []  # sorted, priority desc
        self._keys: list[int] = []  # -priority of each blocker, for bisect
        self._seen: set[ResourceRequest] = set()
        self._top = lowest
        self._workers: dict[int, _WorkerGap] = {}
        self._amounts: dict[ResourceRequest, dict[str, int]] = {}

    def block(self, submit: Source) -> None:
        """`submit` stays waiting: lower priorities get only the gap it leaves on every
        worker that could ever run it (its first variant stands for it)."""
        request = submit.variants[0]
        if submit.priority <= self.lowest or request in self._seen:
            return
        if len(self.blockers) >= GAP_MAX_BLOCKERS:
            return
        self._seen.add(request)
        at = bisect.bisect_right(self._keys, -submit.priority)
        self._keys.insert(at, -submit.priority)
        self.blockers.insert(at, (submit.priority, request))
        self._top = max(self._top, submit.priority)

    def open_for(self, priority: int) -> bool:
        """No gap holds `priority` back anywhere (`allows` is True without a look)."""
        return priority >= self._top

    def _state(self, worker: Worker) -> _WorkerGap:
        state = self._workers.get(worker.id)
        if state is None:
            state = self._workers[worker.id] = _WorkerGap(worker, self.model)
        return state

    def allows(self, worker: Worker, request: ResourceRequest, priority: int) -> bool:
        if priority >= self._top:
            return True
        state = self._state(worker)
        life = worker.remaining_lifetime(self.now)
        while state.folded < len(self.blockers):
            blocker_priority, blocker = self.blockers[state.folded]
            if blocker_priority <= priority:
                break
            state.folded += 1
            if (life is None or life >= blocker.min_time) and (
                worker.descriptor is not None and fits_ever(worker.descriptor, blocker)
            ):
                state.fold(worker, blocker)
        combined = state.combined
        if combined is None:
            return True
        amounts = self._amounts.get(request)
        if amounts is None:
            amounts = request_amounts(request, state.totals)
            if not any(e.policy == AllocationPolicy.ALL for e in request.entries):
                self._amounts[request] = amounts  # the same on every worker
        for name, amount in amounts.items():
            if amount > combined.get(name, 0):
                return False
        return True

    def consume(self, worker: Worker, request: ResourceRequest, priority: int) -> None:
        if not self.blockers and priority <= self.lowest:
            return  # nothing can be blocked by or below the lowest priority
        state = self._state(worker)
        state.add_used(request, request_amounts(request, state.totals))


# ---------------------------------------------------------------------------------------
# Minimal utilization (cluster.md §3.1) and weights (§3.2)

# Distinct kinds of task (submits) weighed against each other for one worker, and the
# search steps spent on it: a bound on the cost of a pass, not a rule.
MU_MAX_KINDS = 8
MU_MAX_STEPS = 2_048


def cpu_amount(request: ResourceRequest, worker_cpus: int) -> int:
    entry = request.get(CPUS)
    if entry is None:
        return 0
    return worker_cpus if entry.policy == AllocationPolicy.ALL else entry.amount


def utilization_need(worker: Worker) -> float:
    """CPUs (×10 000) a round must give this worker at least, if it gives any; ≤ 0 =
    no constraint. `--min-utilization` F of C CPUs with U in use: F·C − U."""
    fraction = worker.min_utilization
    if fraction <= 0.001 or worker.descriptor is None or worker.allocator is None:
        return 0.0
    item = worker.descriptor.get(CPUS)
    total = item.capacity() if item is not None else 0
    used = total - worker.allocator.free_amount(CPUS)
    return fraction * total - used


class _MinUtilization:
    """Workers with an unmet minimal utilization: left out of the main pass, then each
    given the set of tasks that fills it to its minimum with the greatest value, or
    nothing."""

    def __init__(self, order: list[Worker]) -> None:
        self.workers: list[Worker] = []
        self.need: dict[int, float] = {}
        for worker in order:
            if worker.min_utilization <= 0.001:
                continue  # no minimum: no need (`utilization_need`), decided cheaply
            need = utilization_need(worker)
            if need > 1e-6:
                self.workers.append(worker)
                self.need[worker.id] = need
        # By ID; sorted after the filter, as most workers have no minimum.
        self.workers.sort(key=lambda w: w.id)
        self.waiting = {w.id for w in self.workers}
        # Queues with tasks left after the main pass.
        self.queues: list[_Queue] = []

    def run(self, worker: Worker, now: float, gaps: _GapRule, limit: int) -> list[Assignment]:
        allocator = worker.allocator
        assert allocator is not None and worker.descriptor is not None
        item = worker.descriptor.get(CPUS)
        total_cpus = item.capacity() if item is not None else 0
        if total_cpus <= 0:
            return []
        life = worker.remaining_lifetime(now)
        live = [q for q in self.queues if q.head is not None]
        live.sort(key=lambda q: (-q.source.priority, -q.request.weight, q.source.job_id))
        kinds: list[tuple[_SubmitQueue, list[int], int, int]] = []
        for queue in live:
            request = queue.request
            if life is not None and life < request.min_time:
                continue
            if not gaps.allows(worker, request, queue.source.priority):
                continue
            probe = allocator.try_allocate(request)
            if probe is None:
                continue
            allocator.release(probe)
            cpus = cpu_amount(request, total_cpus)
            cap = total_cpus // cpus + 1 if cpus > 0 else 64
            mark = queue.mark()
            ids: list[int] = []
            while queue.head is not None and len(ids) < min(cap, limit):
                ids.append(queue.head)
                queue.pop()
            queue.reset(mark)
            kinds.append((queue, ids, cpus, queue.source.priority))
            if len(kinds) == MU_MAX_KINDS:
                break
        if not kinds:
            return []
        levels = sorted({k[3] for k in kinds}, reverse=True)
        need = self.need[worker.id]
        best: list[int] | None = None
        best_score: tuple[float, ...] = ()
        counts = [0] * len(kinds)
        steps = 0

        def value(chosen: list[int]) -> tuple[float, ...]:
            score = [0.0] * len(levels)
            for (queue, _, cpus, priority), count in zip(kinds, chosen, strict=True):
                weight = queue.request.weight / 10_000
                score[levels.index(priority)] += count * weight * cpus / total_cpus
            return tuple(score)

        def search(i: int, cpus_sum: int) -> None:
            nonlocal best, best_score, steps
            steps += 1
            if steps > MU_MAX_STEPS:
                return
            if i == len(kinds):
                if cpus_sum + 1e-6 >= need and sum(counts) > 0:
                    score = value(counts)
                    if best is None or score > best_score:
                        best, best_score = list(counts), score
                return
            queue, ids, cpus, _ = kinds[i]
            request = queue.request
            held: list[Allocation] = []
            while len(held) < len(ids) and sum(counts) + len(held) < limit:
                steps += 1  # allocations count against the budget too
                if steps > MU_MAX_STEPS:
                    break
                allocation = allocator.try_allocate(request)
                if allocation is None:
                    break
                held.append(allocation)
            for count in range(len(held), -1, -1):
                counts[i] = count
                search(i + 1, cpus_sum + count * cpus)
                if count > 0:
                    allocator.release(held[count - 1])
            counts[i] = 0

        search(0, 0)
        if best is None:
            return []
        out: list[Assignment] = []
        placed: list[_Queue] = []
        marks = [queue.mark() for queue, _, _, _ in kinds]
        placed_cpus = 0
        for (queue, _, cpus, _), count in zip(kinds, best, strict=True):
            for _ in range(count):
                allocation = allocator.try_allocate(queue.request)
                if allocation is None or queue.head is None:
                    break
                out.append(Assignment(queue.source.job_id, queue.head, worker.id, allocation))
                placed.append(queue)
                placed_cpus += cpus
                queue.pop()
        if placed_cpus + 1e-6 < need:
            # Placing for real came out differently from the search: all or nothing.
            for assignment in out:
                allocator.release(assignment.allocation)
            for (queue, _, _, _), mark in zip(kinds, marks, strict=True):
                queue.reset(mark)
            return []
        for queue in placed:
            gaps.consume(worker, queue.request, queue.source.priority)
        return out

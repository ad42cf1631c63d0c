"""Jobs, their submits and per-task records: the task half of the server model.

Arrays stay compact. A submit's tasks are a TaskIdSet, and a task is *pristine* (waiting,
never touched, no object at all) until something happens to it; only then does it get a
TaskRecord. Pristine tasks that get canceled or aborted become rank intervals
("dropped"), so canceling a million waiting tasks costs a few tuples, not a million
records. A per-submit cursor walks the pristine tasks in ID order for the scheduler.
An array task that finishes gives its record up again: it becomes part of a rank
interval of tasks that finished alike ("done": same worker, instance, times), so a
million finished tasks cost a few thousand tuples (one per worker batch), not a million
records.

Pure bookkeeping, changed only through `Model.apply`: no I/O, no clock, no trio.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NamedTuple

from hyperq.common.resources import Allocation, ResourceRequest
from hyperq.server.model.taskids import SingleTaskId, TaskIdSet


class TaskState(StrEnum):
    """Task states as JSON shows them (jobs.md §6); tables print them upper-case."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"


TERMINAL = frozenset({TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELED, TaskState.ABORTED})
ACTIVE = frozenset({TaskState.WAITING, TaskState.RUNNING})


class JobState(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    FAILED = "failed"
    ABORTED = "aborted"
    CANCELED = "canceled"
    OPENED = "opened"
    FINISHED = "finished"


NEVER_RESTART = "never-restart"
UNLIMITED = "unlimited"


def parse_crash_limit(value: Any) -> tuple[int | None, bool]:
    """→ (limit or None for no limit, never_restart). Raises ValueError."""
    if value == NEVER_RESTART:
        return None, True
    if value == UNLIMITED:
        return None, False
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"invalid crash limit {value!r}")
    return value, False


class TaskRecord:
    """A task that has left its pristine state.

    `worker` is the worker it is placed on (when `placed`) or last ran on; `workers` all
    workers of its current/last run (multi-node later). `instance` is the instance of
    the current or next run. `queued` says it sits in its submit's requeued list
    (waiting again after a lost worker or a restore).

    A task placed `behind` another task of its job on the same worker waits there for
    that one to end and then runs on its allocation (which that one holds until then);
    the other names it as its `successor`.
    """

    __slots__ = (
        "allocation",
        "behind",
        "crash_count",
        "error",
        "finished_at",
        "instance",
        "placed",
        "queued",
        "started_at",
        "state",
        "submit",
        "successor",
        "task_id",
        "variant",
        "worker",
        "workers",
    )

    def __init__(self, task_id: int, submit: Submit) -> None:
        self.task_id = task_id
        self.submit = submit
        self.state = TaskState.WAITING
        self.instance = 0
        self.crash_count = 0
        self.worker: int | None = None
        self.workers: tuple[int, ...] = ()
        self.placed = False
        self.allocation: Allocation | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: str | None = None
        self.variant = 0
        self.queued = False
        self.behind: int | None = None
        self.successor: int | None = None


class DoneFacts(NamedTuple):
    """What a finished array task keeps once its record is gone (see `Submit.done`)."""

    instance: int
    crash_count: int
    worker: int | None
    workers: tuple[int, ...]
    started_at: float | None
    finished_at: float | None
    variant: int


# Shared and never mutated (writers replace it first): most submits never need their
# progress lists, and four empty lists are 224 bytes of a graph task's ~1.5 KB.
_EMPTY: Any = ()


class Submit:
    """One `job-created` worth of tasks sharing one description and one ResourceRequest,
    or one task of a graph submit (`node` = its task ID; see `graph_task`).

    Graph tasks are the only ones with dependencies: `deps` as written, `waiting_deps`
    the number of registered deps not yet finished (the task is ready at 0).
    """

    __slots__ = (
        "_done_starts",
        "_drop_starts",
        "ahead",
        "crash_limit",
        "cursor",
        "deps",
        "desc",
        "done",
        "dropped",
        "entries",
        "entry_offset",
        "ids",
        "index",
        "job_id",
        "n_deps",
        "never_restart",
        "node",
        "priority",
        "pristine_left",
        "request",
        "requeued",
        "submitted_at",
        "variants",
        "waiting_deps",
    )

    def __init__(
        self,
        job_id: int,
        index: int,
        desc: Mapping[str, Any],
        submitted_at: float,
        request: ResourceRequest | None = None,
        variants: tuple[ResourceRequest, ...] | None = None,
    ) -> None:
        """Builds from a resolved submit description; raises ValueError/KeyError if bad.

        `request`: the parsed `desc["resources"]` when the caller has it already (graph
        tasks share a few requests among many tasks)."""
        self.job_id = job_id
        self.index = index
        self.desc = desc
        self.submitted_at = submitted_at
        node = desc.get("id") if "graph" in desc else None
        self.entries: list[Any] | None = None
        self.entry_offset = 0
        if node is not None:
            # A graph task: one ID, no entries (checked by the command that made it).
            self.ids: TaskIdSet = SingleTaskId(node)
        else:
            tasks = desc["tasks"]
            self.ids = TaskIdSet.build(tasks["ids"])
            entries = tasks.get("entries")
            self.entries = list(entries) if entries is not None else None
            self.entry_offset = int(tasks.get("entry_offset", 0))
        self.request = (
            request if request is not None else ResourceRequest.from_wire(desc["resources"])
        )
        # Resource variants in order (graphs.md §1.3); the first is `request`.
        if variants is None:
            raw = desc.get("variants")
            variants = tuple(ResourceRequest.from_wire(v) for v in raw) if raw else (self.request,)
        self.variants = variants
        self.request = variants[0]
        self.priority = int(desc.get("priority", 0))
        self.crash_limit, self.never_restart = parse_crash_limit(desc.get("crash_limit", 5))
        deps = desc.get("deps")
        self.deps: tuple[int, ...] = tuple(deps) if deps else ()
        self.node: int | None = node
        self.waiting_deps = 0
        self.n_deps = 0  # dependencies registered (on tasks not completed at the time)
        # Ranks below `cursor` are never pristine; at or above it a rank is pristine
        # unless it is in `ahead` (it got a record out of order) or in `dropped`.
        self.cursor = 0
        self.ahead: list[int] = _EMPTY
        # (first, end, state, when), sorted: ranks [first, end) became `state` at `when`.
        self.dropped: list[tuple[int, int, TaskState, float]] = _EMPTY
        self._drop_starts: list[int] = _EMPTY
        # (first, end, facts), sorted and disjoint: ranks [first, end) finished with the
        # same `DoneFacts`; adjacent runs with equal facts are merged.
        self.done: list[tuple[int, int, DoneFacts]] = _EMPTY
        self._done_starts: list[int] = _EMPTY
        self.pristine_left = len(self.ids)
        self.requeued: list[int] = _EMPTY  # task IDs of queued records, ascending

    @property
    def has_waiting(self) -> bool:
        return self.pristine_left > 0 or bool(self.requeued)

    @property
    def is_ready(self) -> bool:
        """Has a waiting, unplaced task whose dependencies all finished."""
        return self.waiting_deps == 0 and (self.pristine_left > 0 or bool(self.requeued))

    def entry(self, task_id: int) -> Any:
        if self.entries is None:
            return None
        index = task_id - self.entry_offset
        return self.entries[index] if 0 <= index < len(self.entries) else None

    def dropped_state(self, rank: int) -> TaskState | None:
        piece = self.dropped_piece(rank)
        return piece[2] if piece is not None else None

    def dropped_piece(self, rank: int) -> tuple[int, int, TaskState, float] | None:
        index = bisect_right(self._drop_starts, rank) - 1
        if index >= 0:
            piece = self.dropped[index]
            if piece[0] <= rank < piece[1]:
                return piece
        return None

    def done_piece(self, rank: int) -> tuple[int, int, DoneFacts] | None:
        if not self.done:
            return None
        index = bisect_right(self._done_starts, rank) - 1
        if index >= 0:
            piece = self.done[index]
            if rank < piece[1]:
                return piece
        return None

    def add_done(self, first: int, end: int, facts: DoneFacts) -> None:
        """Ranks [first, end) (not pristine, without records) finished with `facts`."""
        if self.done is _EMPTY:
            self.done = []
            self._done_starts = []
        done = self.done
        starts = self._done_starts
        index = bisect_right(starts, first)
        left = done[index - 1] if index > 0 else None
        right = done[index] if index < len(done) else None
        if left is not None and left[1] == first and left[2] == facts:
            if right is not None and right[0] == end and right[2] == facts:
                done[index - 1] = (left[0], right[1], facts)
                del done[index]
                del starts[index]
            else:
                done[index - 1] = (left[0], end, facts)
        elif right is not None and right[0] == end and right[2] == facts:
            done[index] = (first, right[1], facts)
            starts[index] = first
        else:
            done.insert(index, (first, end, facts))
            starts.insert(index, first)

    def restore_done(self, done: list[tuple[int, int, DoneFacts]]) -> None:
        self.done = done if done else _EMPTY
        self._done_starts = [piece[0] for piece in done] if done else _EMPTY

    def _is_ahead(self, rank: int) -> bool:
        index = bisect_left(self.ahead, rank)
        return index < len(self.ahead) and self.ahead[index] == rank

    def is_pristine(self, rank: int) -> bool:
        return rank >= self.cursor and not self._is_ahead(rank) and self.dropped_state(rank) is None

    def next_pristine_rank(self, rank: int) -> int | None:
        """The first pristine rank >= `rank`, or None."""
        rank = max(rank, self.cursor)
        size = len(self.ids)
        while rank < size:
            if self._is_ahead(rank):
                rank += 1
                continue
            index = bisect_right(self._drop_starts, rank) - 1
            if index >= 0 and self.dropped[index][1] > rank:
                rank = self.dropped[index][1]
                continue
            return rank
        return None

    def claim(self, rank: int) -> None:
        """The pristine task at `rank` gets a record (so it is no longer pristine)."""
        self.pristine_left -= 1
        if rank == self.cursor:
            self.cursor += 1
            self._advance()
        else:
            if self.ahead is _EMPTY:
                self.ahead = []
            insort(self.ahead, rank)

    def claim_run(self, first: int, end: int) -> bool:
        """`claim` for every rank in [first, end) if all of them are pristine (a
        replayed batch of one worker); False, and nothing claimed, otherwise."""
        if end <= first or self.pristine_segments(first, end) != [(first, end)]:
            return False
        self.pristine_left -= end - first
        if first == self.cursor:
            self.cursor = end
            self._advance()
        else:
            if self.ahead is _EMPTY:
                self.ahead = []
            index = bisect_left(self.ahead, first)
            self.ahead[index:index] = range(first, end)
        return True

    def _advance(self) -> None:
        size = len(self.ids)
        while self.cursor < size:
            if self.ahead and self.ahead[0] == self.cursor:
                self.ahead.pop(0)
                self.cursor += 1
                continue
            index = bisect_right(self._drop_starts, self.cursor) - 1
            if index >= 0 and self.dropped[index][1] > self.cursor:
                self.cursor = self.dropped[index][1]
                continue
            break

    def pristine_segments(self, first: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        """Pristine ranks within [first, end) as (first, end) intervals, ascending."""
        size = len(self.ids)
        end = size if end is None else min(end, size)
        pos = max(first, self.cursor)
        free: list[tuple[int, int]] = []
        index = max(bisect_right(self._drop_starts, pos) - 1, 0)
        while pos < end:
            while index < len(self.dropped) and self.dropped[index][1] <= pos:
                index += 1
            if index < len(self.dropped) and self.dropped[index][0] <= pos:
                pos = self.dropped[index][1]
                continue
            stop = min(self.dropped[index][0] if index < len(self.dropped) else end, end)
            free.append((pos, stop))
            pos = stop
        out: list[tuple[int, int]] = []
        for a, b in free:
            j = bisect_left(self.ahead, a)
            while j < len(self.ahead) and self.ahead[j] < b:
                rank = self.ahead[j]
                if rank > a:
                    out.append((a, rank))
                a = rank + 1
                j += 1
            if a < b:
                out.append((a, b))
        return out

    def drop(self, first: int, end: int, state: TaskState, when: float) -> int:
        """Pristine tasks at ranks [first, end) become `state` at time `when`; returns how
        many did."""
        pieces = self.pristine_segments(first, end)
        if not pieces:
            return 0
        merged: list[tuple[int, int, TaskState, float]] = []
        for piece in sorted([*self.dropped, *((a, b, state, when) for a, b in pieces)]):
            if merged and merged[-1][1] == piece[0] and merged[-1][2:] == piece[2:]:
                merged[-1] = (merged[-1][0], *piece[1:])
            else:
                merged.append(piece)
        self.dropped = merged
        self._drop_starts = [piece[0] for piece in merged]
        count = sum(b - a for a, b in pieces)
        self.pristine_left -= count
        self._advance()
        return count

    def restore_progress(
        self,
        cursor: int,
        ahead: list[int],
        dropped: list[tuple[int, int, TaskState, float]],
        pristine_left: int,
        requeued: list[int],
    ) -> None:
        """Set the pristine-task bookkeeping saved from another model (a snapshot)."""
        self.cursor = cursor
        self.ahead = ahead
        self.dropped = dropped
        self._drop_starts = [piece[0] for piece in dropped]
        self.pristine_left = pristine_left
        self.requeued = requeued

    def queue(self, task_id: int) -> None:
        if self.requeued is _EMPTY:
            self.requeued = []
        insort(self.requeued, task_id)

    def unqueue(self, task_id: int) -> None:
        index = bisect_left(self.requeued, task_id)
        if index < len(self.requeued) and self.requeued[index] == task_id:
            del self.requeued[index]


def graph_node(
    job_id: int,
    index: int,
    desc: Mapping[str, Any],
    submitted_at: float,
    variants: tuple[ResourceRequest, ...],
    crash_limit: tuple[int | None, bool],
    node: int,
    priority: int,
    deps: tuple[int, ...],
) -> Submit:
    """A graph task's submit, as `Submit(...)` builds it from `desc` (which has `id` =
    `node` and `graph`), from values the caller parsed once for many tasks: a graph of
    100,000 tasks makes 100,000 of these in one submit, at well under half the cost."""
    self: Submit = _new_object(Submit)
    ids: SingleTaskId = _new_object(SingleTaskId)
    ids.task_id = node
    self.job_id = job_id
    self.index = index
    self.desc = desc
    self.submitted_at = submitted_at
    self.entries = None
    self.entry_offset = 0
    self.ids = ids
    self.variants = variants
    self.request = variants[0]
    self.priority = priority
    self.crash_limit, self.never_restart = crash_limit
    self.deps = deps
    self.node = node
    self.waiting_deps = 0
    self.n_deps = 0
    self.cursor = 0
    self.ahead = _EMPTY
    self.dropped = _EMPTY
    self._drop_starts = _EMPTY
    self.done = _EMPTY
    self._done_starts = _EMPTY
    self.pristine_left = 1
    self.requeued = _EMPTY
    return self


_new_object = object.__new__


class Job:
    """A job: name, flags, its submits and the records of its touched tasks."""

    __slots__ = (
        "_span_reach",
        "_span_starts",
        "_span_submits",
        "active",
        "cancel_reason",
        "completed_at",
        "counts",
        "dependants",
        "id",
        "is_open",
        "last_run",
        "max_fails",
        "name",
        "records",
        "submits",
        "submitted_at",
        "total",
        "workers_used",
    )

    def __init__(
        self, job_id: int, name: str, max_fails: int | None, is_open: bool, submitted_at: float
    ) -> None:
        self.id = job_id
        self.name = name
        self.max_fails = max_fails
        self.is_open = is_open
        self.submitted_at = submitted_at
        self.completed_at: float | None = None
        self.cancel_reason: str | None = None
        self.submits: list[Submit] = []
        self.records: dict[int, TaskRecord] = {}
        # Records in WAITING or RUNNING state: what cancel, abort and restore touch.
        self.active: dict[int, TaskRecord] = {}
        # Count per state; WAITING is derived (total minus the others).
        self.counts: dict[TaskState, int] = {state: 0 for state in TaskState}
        self.total = 0
        self.workers_used: set[int] = set()
        # How long its last finished task ran (seconds), None before the first or after
        # a task queued behind another was given back: only a job of short tasks gets
        # tasks queued behind its running ones (scheduler, `_successors`).
        self.last_run: float | None = None
        # Reverse dependency edges: task ID → graph tasks waiting for it to finish.
        # An entry goes when its task completes, so finishing costs O(its dependants).
        self.dependants: dict[int, list[Submit]] = {}
        # Submits ordered by their lowest task ID, with the highest ID seen up to each,
        # so that finding a task's submit is a bisection even in an open job with
        # thousands of submits.
        self._span_starts: list[int] = []
        self._span_submits: list[Submit] = []
        self._span_reach: list[int] = []

    # -- structure --------------------------------------------------------------------

    def add_submit(
        self,
        desc: Mapping[str, Any],
        submitted_at: float,
        request: ResourceRequest | None = None,
        variants: tuple[ResourceRequest, ...] | None = None,
    ) -> Submit:
        submit = Submit(self.id, len(self.submits), desc, submitted_at, request, variants)
        self.submits.append(submit)
        self.total += len(submit.ids)
        self._index_span(submit)
        return submit

    def add_nodes(self, submits: list[Submit]) -> None:
        """Graph tasks' submits (`graph_node`, indexes continuing the job's), in
        ascending task ID order."""
        self.submits.extend(submits)
        self.total += len(submits)
        starts = self._span_starts
        if submits and (not starts or starts[-1] <= submits[0].node):  # type: ignore[operator]
            # All after the job's other submits (a new graph): the span index grows at
            # its end, with the running maximum as the reach.
            nodes: list[int] = [submit.node for submit in submits]  # type: ignore[misc]
            reach = self._span_reach
            top = reach[-1] if reach else -1
            starts.extend(nodes)
            self._span_submits.extend(submits)
            reach.extend(itertools.islice(itertools.accumulate(nodes, max, initial=top), 1, None))
            return
        for submit in submits:
            self._index_span(submit)

    def _index_span(self, submit: Submit) -> None:
        low, high = submit.ids.min(), submit.ids.max()
        if low is not None and high is not None:
            index = bisect_right(self._span_starts, low)
            self._span_starts.insert(index, low)
            self._span_submits.insert(index, submit)
            top = self._span_reach[index - 1] if index > 0 else -1
            del self._span_reach[index:]
            for later in self._span_submits[index:]:
                top = max(top, later.ids.max() or 0)
                self._span_reach.append(top)

    def max_task_id(self) -> int | None:
        return self._span_reach[-1] if self._span_reach else None

    def submits_overlapping(self, low: int, high: int) -> list[Submit]:
        """Submits whose ID span meets [low, high] (they may share IDs with it)."""
        out = []
        index = bisect_right(self._span_starts, high) - 1
        while index >= 0 and self._span_reach[index] >= low:
            submit = self._span_submits[index]
            if (submit.ids.max() or 0) >= low:
                out.append(submit)
            index -= 1
        return out

    def locate(self, task_id: int) -> tuple[Submit, int] | None:
        """The submit holding `task_id` and its rank there."""
        index = bisect_right(self._span_starts, task_id) - 1
        while index >= 0 and self._span_reach[index] >= task_id:
            submit = self._span_submits[index]
            rank = submit.ids.rank(task_id)
            if rank is not None:
                return submit, rank
            index -= 1
        return None

    # -- state ------------------------------------------------------------------------

    def count(self, state: TaskState) -> int:
        if state == TaskState.WAITING:
            return self.active_count - self.counts[TaskState.RUNNING]
        return self.counts[state]

    @property
    def active_count(self) -> int:
        """Tasks WAITING or RUNNING: every task but those that ended (asked after every
        report of a worker, so spelled out rather than summed over the states)."""
        counts = self.counts
        return (
            self.total
            - counts[TaskState.FINISHED]
            - counts[TaskState.FAILED]
            - counts[TaskState.CANCELED]
            - counts[TaskState.ABORTED]
        )

    @property
    def is_completed(self) -> bool:
        return self.completed_at is not None

    def state_of(self, task_id: int) -> TaskState | None:
        record = self.records.get(task_id)
        if record is not None:
            return record.state
        found = self.locate(task_id)
        if found is None:
            return None
        submit, rank = found
        if submit.done and submit.done_piece(rank) is not None:
            return TaskState.FINISHED
        return submit.dropped_state(rank) or TaskState.WAITING

    def job_state(self) -> JobState:
        """First matching rule of jobs.md §6."""
        if self.counts[TaskState.RUNNING]:
            return JobState.RUNNING
        if self.count(TaskState.WAITING):
            return JobState.WAITING
        for state, job_state in (
            (TaskState.FAILED, JobState.FAILED),
            (TaskState.ABORTED, JobState.ABORTED),
            (TaskState.CANCELED, JobState.CANCELED),
        ):
            if self.counts[state]:
                return job_state
        return JobState.OPENED if self.is_open else JobState.FINISHED

    def record_for(self, task_id: int) -> TaskRecord | None:
        """The task's record, created (WAITING) if the task is pristine; None otherwise."""
        record = self.records.get(task_id)
        if record is not None:
            return record
        found = self.locate(task_id)
        if found is None:
            return None
        submit, rank = found
        if not submit.is_pristine(rank):
            return None
        return self.claim(submit, rank, task_id)

    def claim(self, submit: Submit, rank: int, task_id: int) -> TaskRecord:
        """The pristine task at `rank` of `submit` (ID `task_id`) gets its record."""
        submit.claim(rank)
        record = TaskRecord(task_id, submit)
        self.records[task_id] = record
        self.active[task_id] = record
        return record

    def set_state(self, record: TaskRecord, state: TaskState) -> None:
        old = record.state
        if old == state:
            self.sync_queue(record)
            return
        if old != TaskState.WAITING:
            self.counts[old] -= 1
        if state != TaskState.WAITING:
            self.counts[state] += 1
        record.state = state
        if state in ACTIVE:
            self.active[record.task_id] = record
        else:
            self.active.pop(record.task_id, None)
        self.sync_queue(record)

    def settle(self, record: TaskRecord) -> None:
        """A finished array task's record goes; its facts join the submit's done runs.
        Graph tasks keep their records (one task per submit: nothing to coalesce)."""
        submit = record.submit
        if submit.node is not None or record.state != TaskState.FINISHED or record.queued:
            return
        rank = submit.ids.rank(record.task_id)
        if rank is None:
            return
        del self.records[record.task_id]
        submit.add_done(
            rank,
            rank + 1,
            DoneFacts(
                record.instance,
                record.crash_count,
                record.worker,
                record.workers,
                record.started_at,
                record.finished_at,
                record.variant,
            ),
        )

    def sync_queue(self, record: TaskRecord) -> None:
        """Keep the submit's requeued list equal to the waiting, unplaced records."""
        should = record.state == TaskState.WAITING and not record.placed
        if should and not record.queued:
            record.submit.queue(record.task_id)
        elif record.queued and not should:
            record.submit.unqueue(record.task_id)
        record.queued = should

    def drop_pristine(
        self, submit: Submit, first: int, end: int, state: TaskState, when: float
    ) -> int:
        count = submit.drop(first, end, state, when)
        self.counts[state] += count
        return count

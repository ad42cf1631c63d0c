"""The server's state as a pure, event-sourced model of jobs, tasks and workers.

How the trio edge uses it (all I/O lives there):

1. A client request or a worker message calls a *command* method (`submit`,
   `cancel_job`, `close_job`, `task_finished`, `worker_lost`, ...). A command validates
   against the current state and returns the events that carry it out, follow-ups
   included (max-fails aborts, crash-limit failures, `job-completed`); it changes
   nothing. Refusals raise HqError with the spec's wording; per-item outcomes that the
   CLI logs and survives use the subclasses NotFound and WrongState.
2. The edge appends the persisted events (`event.persisted`) to the journal, applies
   every event in order with `apply(event)`, and replies once the journal has them.
   `apply` returns Effects for the edge to carry out: LaunchTask (send the task to its
   worker) and KillTask (stop a task a worker is running).
3. After changes the scheduler runs (`scheduler.schedule(model, now, limit)`); the edge
   turns its assignments into `task-assigned` events with `assign(...)` and applies
   them at once, before any other event, then sends each LaunchTask.
4. The worker's reports come back through `task_started`, `task_finished` and
   `task_failed`; stale reports (wrong worker or instance) produce no events.

Queries (`job_info`, `iter_tasks`, `worker_info`, ...) read the state for replies.
Restoring from a journal is `restore(events)` in hyperq.server.journal.restore: the same
`apply`, then the restore rules.

Never here: I/O, clocks, randomness, awaits. Time always comes in as an argument.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from hyperq.common import queueing
from hyperq.common.errors import HqError
from hyperq.common.idrange import clean_item, merge_adjacent, ordered_runs
from hyperq.common.resources import Allocation, ResourceDescriptor, ResourceRequest
from hyperq.server.model.autoalloc import AutoallocRecords
from hyperq.server.model.events import (
    AutoallocAllocationFinished,
    AutoallocAllocationQueued,
    AutoallocAllocationStarted,
    AutoallocQueueCreated,
    AutoallocQueueRemoved,
    Event,
    IdItem,
    JobCancel,
    JobClose,
    JobCompleted,
    JobCreated,
    JobForgotten,
    JobOpen,
    LostReason,
    ServerStart,
    ServerStop,
    TaskAborted,
    TaskAssigned,
    TaskCanceled,
    TaskFailed,
    TaskFinished,
    TaskNotified,
    TaskReturned,
    TasksAssigned,
    TasksFinished,
    TaskStarted,
    WorkerConnected,
    WorkerLost,
    WorkerOverview,
    WorkerOverviewTemporary,
    WorkerResumed,
    WorkerStopRequested,
)
from hyperq.server.model.graph import (
    Lane,
    LaneKey,
    expand_table,
    table_deps,
    transitive_dependants,
)
from hyperq.server.model.jobs import (
    ACTIVE,
    TERMINAL,
    DoneFacts,
    Job,
    JobState,
    Submit,
    TaskRecord,
    TaskState,
    graph_node,
    parse_crash_limit,
)
from hyperq.server.model.taskids import (
    DuplicateTaskId,
    TaskIdSet,
    find_clash,
    ids_to_items,
)
from hyperq.server.model.views import (
    RECORD_ONLY_STATES,
    TASK_STAT_KEYS,
    JobInfo,
    TaskView,
    WorkerView,
    done_views,
    pristine_view,
    record_view,
    submit_views,
    view_facts,
)
from hyperq.server.model.workers import Worker

DEFAULT_JOB_NAME = "job"
# Items per task-canceled / task-aborted event: keeps one journal record (and one apply
# step) bounded however fragmented a job is; a plain array needs one item anyway.
CHUNK_ITEMS = 1_000

NEVER_RESTART_ERROR = "Task was running on a lost worker while never restart flag was set."


def crash_limit_error(count: int) -> str:
    return (
        "Task was running on a worker that was lost; the task has occurred "
        f"{count} times in this situation and limit was reached."
    )


class NotFound(HqError):
    """The job or worker named by a request does not exist."""


class WrongState(HqError):
    """The job or worker exists but the request does not apply to it now."""


# ---------------------------------------------------------------------------------------
# Effects of apply and results of commands


# Four (eight on a worker with at most two CPUs, hyperq.common.queueing): a worker
# reports a task's end late (it waits up to its report window to report several ends
# in one message), and the tasks behind each running one keep its CPU busy until the
# server's next tasks arrive. Measured on one 2-CPU worker running `true`
# (tools/bench_scale --real): four behind each with 5 ms used ~8% less worker and ~22%
# less server CPU per task than two with 2 ms; three with 5 ms did worse than two with
# 2 ms, four with 12 ms worse than four with 5 or 8 ms (CPUs idle between).
QUEUE_DEPTH = queueing.QUEUE_DEPTH


class LaunchTask(NamedTuple):
    """Send this task to `worker_id` with `allocation`. (A tuple: one is made per
    task, and a frozen dataclass's __init__ costs several times as much.)"""

    worker_id: int
    job_id: int
    task_id: int
    instance: int
    allocation: Allocation
    # A multi-node task (sent to its root only): the hostnames of every node in
    # placement order, root first (cluster.md §1.4). Empty for other tasks.
    hosts: tuple[str, ...] = ()
    # Queued behind this task of the job on the worker, on its allocation (-1: none).
    after: int = -1


@dataclass(frozen=True)
class KillTask:
    """The task was taken away from a connected worker: tell it to stop the task."""

    worker_id: int
    job_id: int
    task_id: int
    instance: int


Effect = LaunchTask | KillTask
_new_tuple = tuple.__new__


@dataclass(frozen=True)
class CancelResult:
    events: list[Event]
    canceled: int
    already_finished: int


@dataclass(frozen=True)
class ForgetResult:
    events: list[Event]
    forgotten: int
    ignored: int


class Assignment(NamedTuple):
    """A scheduler decision: run this task on this worker with this allocation."""

    job_id: int
    task_id: int
    worker_id: int
    allocation: Allocation
    variant: int = 0
    # A multi-node task: all its nodes in placement order (`worker_id` is the first).
    workers: tuple[int, ...] = ()
    # Queued behind this placed task of the job (its allocation is `allocation`), to run
    # when that one has ended; -1: the allocation is the task's own.
    after: int = -1


class _ItemIndex:
    """Membership in a list of (start, last, step) items that may come from a journal."""

    def __init__(self, items: Iterable[IdItem]) -> None:
        self.items = sorted(items)
        self.starts = [item[0] for item in self.items]
        top = -1
        self.reach: list[int] = []  # highest `last` among items[0..i]
        for item in self.items:
            top = max(top, item[1])
            self.reach.append(top)

    def __contains__(self, task_id: int) -> bool:
        index = bisect_right(self.starts, task_id) - 1
        while index >= 0 and self.reach[index] >= task_id:
            start, last, step = self.items[index]
            if task_id <= last and (task_id - start) % step == 0:
                return True
            index -= 1
        return False


def _clean_item(item: IdItem) -> IdItem | None:
    try:
        return clean_item(item, "task ID")
    except ValueError:
        return None


def _chunks(items: Sequence[IdItem], size: int) -> Iterator[tuple[IdItem, ...]]:
    for index in range(0, len(items), size):
        yield tuple(items[index : index + size])


# ---------------------------------------------------------------------------------------


class Model:
    """Jobs, tasks and workers, changed only by `apply`."""

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}
        self.workers: dict[int, Worker] = {}
        # How many tasks may wait on a worker behind one running there, on its
        # allocation (the scheduler's `_successors` decides when any do): this, or
        # twice this on a small worker unless `deeper_on_small` is off (`depth_of`).
        self.queue_depth = QUEUE_DEPTH
        self.deeper_on_small = True
        # Connected workers in ID order, for the scheduler: `workers` keeps every worker
        # that ever came (for `hq worker list --all`), and a server with allocations
        # coming and going would otherwise sort all of them on every pass. Rebuilt when
        # a worker comes or goes (`_workers_epoch`) or the dict is changed from outside
        # (restore, snapshots: its length moves).
        self._workers_epoch = 0
        self._connected_key: tuple[int, int] = (-1, -1)
        self._connected: list[Worker] = []
        # Submits with at least one waiting, unplaced task: what the scheduler looks at.
        self.ready: dict[tuple[int, int], Submit] = {}
        # Ready graph tasks, grouped for the scheduler (see hyperq.server.model.graph).
        self.lanes: dict[LaneKey, Lane] = {}
        self._lanes_made = 0
        self.max_job_id = 0
        self.max_worker_id = 0
        self.next_worker_id = 1
        self.server_uid: str | None = None
        self.server_started_at: float | None = None
        # Events that had to be ignored while applying (the restore logs them as WARN).
        self.warnings: list[str] = []
        self._handlers: dict[type[Event], Callable[[Any], list[Effect] | None]] = {
            ServerStart: self._on_server_start,
            ServerStop: self._on_server_stop,
            WorkerConnected: self._on_worker_connected,
            WorkerLost: self._on_worker_lost,
            WorkerStopRequested: self._on_worker_stop_requested,
            WorkerResumed: self._on_worker_resumed,
            WorkerOverview: self._on_worker_overview,
            WorkerOverviewTemporary: self._on_worker_overview,
            JobOpen: self._on_job_open,
            JobCreated: self._on_job_created,
            JobClose: self._on_job_close,
            JobCancel: self._on_job_cancel,
            JobCompleted: self._on_job_completed,
            JobForgotten: self._on_job_forgotten,
            TaskAssigned: self._on_task_assigned,
            TasksAssigned: self._on_tasks_assigned,
            TaskStarted: self._on_task_started,
            TaskFinished: self._on_task_finished,
            TasksFinished: self._on_tasks_finished,
            TaskFailed: self._on_task_failed,
            TaskCanceled: self._on_task_canceled,
            TaskAborted: self._on_task_aborted,
            TaskNotified: self._on_task_notified,
            TaskReturned: self._on_task_returned,
        }
        self._add_autoalloc_handlers()

    def _add_autoalloc_handlers(self) -> None:
        # Automatic allocation's durable record (alloc.md §6); see model/autoalloc.py.
        self.autoalloc = AutoallocRecords()
        records = self.autoalloc

        def created(e: AutoallocQueueCreated) -> None:
            records.queue_created(e.queue_id, dict(e.params))

        def removed(e: AutoallocQueueRemoved) -> None:
            records.queue_removed(e.queue_id)

        def queued(e: AutoallocAllocationQueued) -> None:
            records.allocation_queued(e.queue_id, e.allocation_id, e.worker_count, e.time)

        def started(e: AutoallocAllocationStarted) -> None:
            records.allocation_started(e.allocation_id, e.time)

        def finished(e: AutoallocAllocationFinished) -> None:
            records.allocation_finished(e.allocation_id)

        self._handlers[AutoallocQueueCreated] = created
        self._handlers[AutoallocQueueRemoved] = removed
        self._handlers[AutoallocAllocationQueued] = queued
        self._handlers[AutoallocAllocationStarted] = started
        self._handlers[AutoallocAllocationFinished] = finished

    @property
    def next_job_id(self) -> int:
        return self.max_job_id + 1

    # ===================================================================================
    # apply

    def apply(self, event: Event) -> list[Effect]:
        """Change the model by one event; returns what the edge must do about it."""
        return self._handlers[type(event)](event) or []

    def _refresh(self, submit: Submit) -> None:
        if submit.node is not None:
            self._refresh_node(submit)
            return
        key = (submit.job_id, submit.index)
        if submit.has_waiting:
            self.ready[key] = submit
        else:
            self.ready.pop(key, None)

    def _refresh_node(self, submit: Submit) -> None:
        """A graph task joins or leaves its lane (it is in one iff ready)."""
        assert submit.node is not None
        key = (submit.job_id, submit.priority, submit.variants)
        lane = self.lanes.get(key)
        if submit.is_ready:
            if lane is None:
                self._lanes_made += 1
                lane = self.lanes[key] = Lane(key, self._lanes_made)
            lane.add(submit.node)
        elif lane is not None:
            lane.discard(submit.node)
            if not lane.members:
                del self.lanes[key]

    def rebuild_ready(self) -> None:
        """Recompute what is ready (submits, lanes, dependency counters) from the tasks'
        states: after a restore, or for a model decoded from a snapshot. A dependency
        counts only while its task is waiting or running (graphs.md §2.5)."""
        self.ready.clear()
        self.lanes.clear()
        for job in self.jobs.values():
            job.dependants = {}
            for submit in job.submits:
                if submit.node is not None:
                    self._register_deps(job, submit, submit.deps)
            for submit in job.submits:
                self._refresh(submit)

    @staticmethod
    def _register_deps(job: Job, submit: Submit, deps: Iterable[int]) -> None:
        submit.waiting_deps = 0
        # A dep listed twice counts once (it is still shown twice in `task info`).
        for dep in dict.fromkeys(deps) if len(deps) > 1 else deps:
            if job.state_of(dep) in ACTIVE:
                submit.waiting_deps += 1
                job.dependants.setdefault(dep, []).append(submit)
        submit.n_deps = submit.waiting_deps

    def _release_dependants(self, job: Job, task_id: int, finished: bool) -> None:
        """`task_id` completed: its dependants lose one unfinished dependency if it
        finished (those that fail with it were aborted by events applied before)."""
        waiting = job.dependants.pop(task_id, None)
        if waiting is None or not finished:
            return
        for submit in waiting:
            submit.waiting_deps -= 1
            if submit.waiting_deps == 0:
                self._refresh(submit)

    def _unplace(self, job: Job, record: TaskRecord) -> Worker | None:
        """Take the task off its worker (releasing resources); returns that worker."""
        if not record.placed:
            return None
        record.placed = False
        worker = self.workers.get(record.worker) if record.worker is not None else None
        allocation, record.allocation = record.allocation, None
        self._release_nodes(job, record)
        if worker is None:
            return None
        worker.tasks.discard((job.id, record.task_id))
        if record.state == TaskState.RUNNING:
            worker.n_running -= 1
        if self._unlink(job, worker, record):
            return worker if worker.is_connected else None
        if allocation is not None and worker.allocator is not None:
            worker.allocator.release(allocation)
        return worker if worker.is_connected else None

    def _unlink(self, job: Job, worker: Worker, record: TaskRecord) -> bool:
        """`record` leaves `worker`: take it out of its queue there (the tasks behind it
        close up). True if its allocation is not its to release: it was queued behind
        another task, which keeps it, or the task queued behind it takes it over."""
        task_id = record.task_id
        behind, successor = record.behind, record.successor
        record.behind = record.successor = None
        _drop_tail(worker, job.id, task_id)
        records = job.records
        after = records.get(successor) if successor is not None else None
        if after is not None and not (
            after.placed and after.worker == worker.id and after.behind == task_id
        ):
            after = None
        if behind is None:
            if after is None:
                return False
            after.behind = None  # it holds the allocation now
            self._mark_tail(job, worker, after)
            return True
        ahead = records.get(behind)
        if ahead is not None and ahead.successor == task_id:
            ahead.successor = successor if after is not None else None
            if after is not None:
                after.behind = behind
            if ahead.placed and ahead.worker == worker.id:
                self._mark_tail(job, worker, ahead)
        elif after is not None:
            after.behind = None
        return True

    def _mark_tail(self, job: Job, worker: Worker, record: TaskRecord) -> None:
        """The queue `record` is in got shorter or longer: its end becomes a candidate
        for one more task queued behind it if there is room (`queue_depth`)."""
        records = job.records
        while record.successor is not None:
            following = records.get(record.successor)
            if following is None:
                break
            record = following
        if self.queue_room(job, record, self.depth_of(worker)) > 0:
            worker.tails.setdefault(job.id, {})[record.task_id] = record

    def depth_of(self, worker: Worker) -> int:
        """How many tasks may wait behind each task running on `worker`."""
        if not self.deeper_on_small:
            return self.queue_depth
        return queueing.queue_depth(worker.cpu_count, self.queue_depth)

    def queue_room(self, job: Job, record: TaskRecord, depth: int) -> int:
        """How many more tasks may queue behind `record`, the end of a queue: `depth`
        (its worker's, `depth_of`) less the tasks already queued in front of it."""
        queued = 0
        records = job.records
        while record.behind is not None:
            ahead = records.get(record.behind)
            if ahead is None:
                break
            record, queued = ahead, queued + 1
        return depth - queued

    def _release_nodes(self, job: Job, record: TaskRecord) -> None:
        """Every node still reserved for this multi-node task becomes free again."""
        if record.submit.request.n_nodes <= 0:
            return
        key = (job.id, record.task_id)
        for worker_id in record.workers:
            node = self.workers.get(worker_id)
            if node is not None and node.mn_task == key:
                node.mn_task = None

    def _on_server_start(self, event: ServerStart) -> None:
        self.server_uid = event.server_uid
        self.server_started_at = event.time

    def _on_server_stop(self, event: ServerStop) -> None:
        pass

    def _on_worker_overview(self, event: WorkerOverview) -> None:
        # Hardware samples are for the journal and the watchers; no decision reads them.
        pass

    def _on_worker_connected(self, event: WorkerConnected) -> None:
        if event.id in self.workers:
            self.warnings.append(f"Worker {event.id} connected twice; ignored")
            return
        self.workers[event.id] = Worker(event.id, event.configuration, event.time)
        self._workers_epoch += 1
        self.max_worker_id = max(self.max_worker_id, event.id)
        self.next_worker_id = max(self.next_worker_id, event.id + 1)
        self.autoalloc.worker_connected(event.configuration)

    def _on_worker_stop_requested(self, event: WorkerStopRequested) -> None:
        worker = self.workers.get(event.id)
        if worker is None:
            self._saw_worker(event.id)
        elif worker.is_connected:
            worker.stop_requested = True

    def _on_worker_resumed(self, event: WorkerResumed) -> None:
        worker = self.workers.get(event.id)
        if worker is None or not worker.held:
            return
        worker.held = False
        known = set(event.known)
        for job_id, task_id in sorted(worker.tasks):
            job = self.jobs[job_id]
            record = job.records[task_id]
            if (job_id, task_id) in known and record.state == TaskState.RUNNING:
                # Account for what the task holds; the allocator was rebuilt empty. A
                # multi-node task holds whole nodes, not an allocation.
                request = record.submit.variants[record.variant]
                if worker.allocator is not None and request.n_nodes == 0:
                    record.allocation = worker.allocator.try_allocate(request)
                continue
            self._unplace(job, record)
            record.instance += 1
            record.started_at = None
            record.worker = None
            record.workers = ()
            job.set_state(record, TaskState.WAITING)
            self._refresh(record.submit)

    def _on_worker_lost(self, event: WorkerLost) -> None:
        worker = self.workers.get(event.id)
        if worker is None:
            self._saw_worker(event.id)
            return
        if not worker.is_connected:
            return
        worker.lost_reason = event.reason
        self._workers_epoch += 1
        worker.ended_at = event.time
        worker.held = False
        failure = event.reason in (LostReason.CONNECTION_LOST, LostReason.HEARTBEAT_LOST)
        for job_id, task_id in sorted(worker.tasks):
            job = self.jobs[job_id]
            record = job.records[task_id]
            was_running = record.state == TaskState.RUNNING
            self._unplace(job, record)
            if was_running and failure:
                record.crash_count += 1
            record.instance += 1
            record.started_at = None
            record.worker = None
            record.workers = ()
            job.set_state(record, TaskState.WAITING)
            self._refresh(record.submit)
        worker.tasks.clear()
        worker.tails.clear()
        worker.n_running = 0
        worker.allocator = None
        # A lost secondary node just leaves the task's held set; the root runs on.
        worker.mn_task = None

    def _on_job_open(self, event: JobOpen) -> None:
        if event.job_id in self.jobs:
            self.warnings.append(f"Job {event.job_id} opened twice; ignored")
            return
        self.jobs[event.job_id] = Job(event.job_id, event.name, event.max_fails, True, event.time)
        self.max_job_id = max(self.max_job_id, event.job_id)

    def _on_job_created(self, event: JobCreated) -> None:
        self.max_job_id = max(self.max_job_id, event.job)
        if event.closed_job:
            if event.job in self.jobs:
                self.warnings.append(f"Job {event.job} created twice; ignored")
                return
            desc = event.job_desc
            max_fails = desc.get("max_fails")
            job = Job(
                event.job,
                str(desc.get("name", DEFAULT_JOB_NAME)),
                int(max_fails) if max_fails is not None else None,
                False,
                event.time,
            )
        else:
            found = self.jobs.get(event.job)
            if found is None:
                self.warnings.append(
                    f"Tasks submitted to job {event.job} were ignored: the job is unknown"
                )
                return
            job = found
        graph = event.submit_desc.get("graph")
        if graph is None and "table" in event.submit_desc:
            try:
                graph = expand_table(event.submit_desc)
            except (KeyError, TypeError, ValueError, IndexError) as error:
                self.warnings.append(f"Tasks submitted to job {event.job} were ignored: {error}")
                graph = []
        if graph is not None:
            self.jobs[job.id] = job
            self._add_graph(job, graph, event.time)
            return
        try:
            submit = job.add_submit(event.submit_desc, event.time)
        except (KeyError, TypeError, ValueError) as error:
            # Our commands never make such events; a damaged journal might.
            self.warnings.append(f"Tasks submitted to job {event.job} were ignored: {error}")
            return
        self.jobs[job.id] = job
        self._refresh(submit)

    def _add_graph(self, job: Job, graph: Any, time: float) -> None:
        """One submit of graph tasks (descriptions as `submit_graph` makes them).

        About 1.5 µs per task: what consecutive tasks share (requests, crash limit,
        lane) is parsed and looked up once per change, and the job's indexes and the
        lanes grow in bulk."""
        requests: dict[Any, tuple[ResourceRequest, ...]] = {}
        # Tasks of a live submit share their request objects: look those up by identity
        # (`shared` keeps them alive, so identities are not reused meanwhile).
        by_identity: dict[int, tuple[ResourceRequest, ...]] = {}
        shared: list[Any] = []
        added: list[Submit] = []
        with_deps: list[Submit] = []
        # Ready tasks by lane, gathered here: hashing the variants of every task to find
        # its lane would cost more than the rest of the task.
        ready: dict[tuple[int, int], tuple[Submit, list[int]]] = {}
        append = added.append
        job_id = job.id
        index = len(job.submits)
        last_raw: Any = None
        variants: tuple[ResourceRequest, ...] = ()
        last_limit: Any = None
        crash_limit: tuple[int | None, bool] = (None, False)
        lane_ids: list[int] = []
        lane_of: tuple[int, Any] = (0, None)
        try:
            # Ascending IDs keep the job's submit index cheap to extend.
            for desc in sorted(graph, key=_node_id):
                node = desc["id"]
                raw = desc.get("variants") or desc["resources"]
                if raw is not last_raw:
                    variants = by_identity.get(id(raw))  # type: ignore[assignment]
                    if variants is None:
                        many = raw if "variants" in desc else [raw]
                        key = _frozen(many)
                        variants = requests.get(key)  # type: ignore[assignment]
                        if variants is None:
                            variants = tuple(ResourceRequest.from_wire(v) for v in many)
                            requests[key] = variants
                        by_identity[id(raw)] = variants
                        shared.append(raw)
                    last_raw = raw
                limit = desc.get("crash_limit", 5)
                if limit is not last_limit:
                    crash_limit = parse_crash_limit(limit)
                    last_limit = limit
                if "graph" not in desc or type(node) is not int:
                    raise ValueError(f"not a graph task: {desc!r}"[:200])
                priority = desc.get("priority", 0)
                if type(priority) is not int:
                    priority = int(priority)
                deps = desc.get("deps")
                submit = graph_node(
                    job_id,
                    index,
                    desc,
                    time,
                    variants,
                    crash_limit,
                    node,
                    priority,
                    tuple(deps) if deps else (),
                )
                append(submit)
                index += 1
                if deps:
                    with_deps.append(submit)
                elif priority == lane_of[0] and variants is lane_of[1]:
                    lane_ids.append(node)
                else:
                    lane_of = (priority, variants)
                    found = ready.get((priority, id(variants)))
                    if found is None:
                        found = ready[(priority, id(variants))] = (submit, [])
                    lane_ids = found[1]
                    lane_ids.append(node)
        except (KeyError, TypeError, ValueError) as error:
            self.warnings.append(f"Tasks submitted to job {job.id} were ignored: {error}")
        job.add_nodes(added)
        if with_deps:
            # Deps on tasks of this same submit need no lookup: those are all waiting.
            new_ids = {submit.node for submit in added}
            dependants = job.dependants
            for submit in with_deps:
                count = 0
                deps = submit.deps
                for dep in dict.fromkeys(deps) if len(deps) > 1 else deps:
                    if dep in new_ids or job.state_of(dep) in ACTIVE:
                        count += 1
                        waiting = dependants.get(dep)
                        if waiting is None:
                            dependants[dep] = [submit]
                        else:
                            waiting.append(submit)
                submit.waiting_deps = submit.n_deps = count
                if not count:
                    found = ready.get((submit.priority, id(submit.variants)))
                    if found is None:
                        found = ready[(submit.priority, id(submit.variants))] = (submit, [])
                    found[1].append(submit.node)  # type: ignore[arg-type]
        for first, task_ids in ready.values():
            key = (first.job_id, first.priority, first.variants)
            lane = self.lanes.get(key)
            if lane is None:
                self._lanes_made += 1
                lane = self.lanes[key] = Lane(key, self._lanes_made)
            # Tasks with deps all completed joined late: the IDs are no longer in order.
            lane.extend(sorted(task_ids) if with_deps else task_ids)

    def _on_job_close(self, event: JobClose) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            self._saw_job(event.job_id)
        else:
            job.is_open = False

    def _on_job_cancel(self, event: JobCancel) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            self._saw_job(event.job_id)
        else:
            job.cancel_reason = event.reason or None

    def _on_job_completed(self, event: JobCompleted) -> None:
        job = self.jobs.get(event.job)
        if job is None:
            self._saw_job(event.job)
        elif job.completed_at is None:
            job.completed_at = event.time

    def _saw_job(self, job_id: int) -> None:
        """An event of a job the model does not hold: one forgotten or completed (its ID
        is counted already), or one whose creation a damaged journal lost. That ID was
        given out; it must not be given out again."""
        self.max_job_id = max(self.max_job_id, job_id)

    def _saw_worker(self, worker_id: int) -> None:
        """As `_saw_job`, for a worker whose `worker-connected` a damaged journal lost."""
        self.max_worker_id = max(self.max_worker_id, worker_id)
        self.next_worker_id = max(self.next_worker_id, worker_id + 1)

    def _on_job_forgotten(self, event: JobForgotten) -> None:
        for job_id in event.jobs:
            job = self.jobs.pop(job_id, None)
            if job is not None:
                for submit in job.submits:
                    self.ready.pop((job_id, submit.index), None)
                for key in [key for key in self.lanes if key[0] == job_id]:
                    del self.lanes[key]

    def _on_task_assigned(self, event: TaskAssigned) -> list[Effect]:
        job = self.jobs.get(event.job)
        worker = self.workers.get(event.worker)
        if job is None or worker is None or not worker.accepts_tasks:
            return []
        assert worker.allocator is not None
        record = job.records.get(event.task)
        if record is not None:
            if record.state != TaskState.WAITING or record.placed:
                return []
            submit = record.submit
        else:
            found = job.locate(event.task)
            if found is None or not found[0].is_pristine(found[1]):
                return []
            submit = found[0]
        if submit.waiting_deps:
            return []
        if not 0 <= event.variant < len(submit.variants):
            return []
        if submit.request.n_nodes > 0:
            return self._assign_nodes(job, event, record, submit)
        request = submit.variants[event.variant]
        tail = None
        if event.behind >= 0:
            tail = self._queue_end(job, worker, event.behind, request)
            if tail is None:
                return []
            allocation = tail.allocation
        else:
            allocation = worker.allocator.try_allocate(request)
        if allocation is None:
            return []
        if record is None:
            record = job.record_for(event.task)
            assert record is not None
        record.placed = True
        record.worker = worker.id
        record.workers = (worker.id,)
        record.allocation = allocation
        record.variant = event.variant
        job.sync_queue(record)
        worker.tasks.add((job.id, record.task_id))
        self._chain(job, worker, record, tail)
        if not worker.tails.get(job.id, True):
            del worker.tails[job.id]
        self._refresh(submit)
        return [
            LaunchTask(
                worker.id, job.id, record.task_id, record.instance, allocation, (), event.behind
            )
        ]

    def _queue_end(
        self, job: Job, worker: Worker, task_id: int, request: ResourceRequest
    ) -> TaskRecord | None:
        """The task of `job` a task with `request` may be queued behind on `worker`: the
        end of a queue there (a task holding an allocation of its own for an equal
        request, or one queued behind such a task in turn) with room for one more;
        None if `task_id` is no such task."""
        tail = job.records.get(task_id)
        if (
            tail is None
            or not tail.placed
            or tail.worker != worker.id
            or tail.allocation is None
            or tail.successor is not None
            or tail.submit.request.n_nodes > 0
            or self.queue_room(job, tail, self.depth_of(worker)) <= 0
        ):
            return None
        held = tail.submit.variants[tail.variant]
        return tail if held is request or held == request else None

    def _chain(self, job: Job, worker: Worker, record: TaskRecord, tail: TaskRecord | None) -> None:
        """A just-placed single-node task: queued behind `tail`, or else (holding its
        own allocation) the start of a queue."""
        depth = self.depth_of(worker)
        if tail is None:
            if depth > 0:
                worker.tails.setdefault(job.id, {})[record.task_id] = record
            return
        record.behind = tail.task_id
        tail.successor = record.task_id
        # An emptied dict stays: the caller may hold it (`_on_tasks_assigned`) and
        # drops it at its end.
        worker.tails.get(job.id, {}).pop(tail.task_id, None)
        if self.queue_room(job, record, depth) > 0:
            worker.tails.setdefault(job.id, {})[record.task_id] = record

    def _on_tasks_assigned(self, event: TasksAssigned) -> list[Effect]:
        """Per task, what its `task-assigned` does; the ready set is settled once."""
        job = self.jobs.get(event.job)
        worker = self.workers.get(event.worker)
        if job is None or worker is None or not worker.accepts_tasks:
            return []
        allocator = worker.allocator
        assert allocator is not None
        job_id, worker_id, variant = job.id, worker.id, event.variant
        records = job.records
        held = worker.tasks
        effects: list[Effect] = []
        touched: dict[int, Submit] = {}
        given = event.allocations
        behind = event.behinds
        depth = self.depth_of(worker)
        # The job's candidates for a task queued behind them on this worker (`_chain`).
        mine = worker.tails.get(job_id)
        if mine is None:
            mine = worker.tails[job_id] = {}
        # The submit of the last task: a batch is mostly a run of one submit's tasks.
        last: Submit | None = None
        for index, task_id in enumerate(event.task_ids()):
            record = records.get(task_id)
            rank = -1
            if record is not None:
                if record.state != TaskState.WAITING or record.placed:
                    continue
                submit = record.submit
            else:
                found_rank = last.ids.rank(task_id) if last is not None else None
                if found_rank is not None:
                    assert last is not None
                    submit, rank = last, found_rank  # task IDs are unique within a job
                else:
                    found = job.locate(task_id)
                    if found is None:
                        continue
                    submit, rank = found
                # At the cursor, with nothing claimed ahead or dropped, a task is
                # pristine: the usual case, decided without `is_pristine`'s lookups.
                if (
                    rank != submit.cursor or submit.ahead or submit.dropped
                ) and not submit.is_pristine(rank):
                    continue
            if submit.waiting_deps or not 0 <= variant < len(submit.variants):
                continue
            if submit.request.n_nodes > 0:
                one = TaskAssigned(event.time, job_id, task_id, worker_id, variant=variant)
                effects.extend(self._on_task_assigned(one))
                continue
            after = behind[index] if behind else -1
            tail = None
            if after >= 0:
                tail = self._queue_end(job, worker, after, submit.variants[variant])
                if tail is None:
                    continue
                allocation: Allocation | None = tail.allocation
            elif given:
                allocation = given[index]
                if allocation is not None and not allocator.take(allocation):
                    continue
            else:
                allocation = allocator.try_allocate(submit.variants[variant])
            if allocation is None:
                continue
            if record is None:
                record = job.claim(submit, rank, task_id)
            record.placed = True
            record.worker = worker_id
            record.workers = (worker_id,)
            record.allocation = allocation
            record.variant = variant
            if record.queued:
                job.sync_queue(record)
            held.add((job_id, task_id))
            if tail is None:
                if depth:
                    mine[task_id] = record
            else:
                self._chain(job, worker, record, tail)
            if submit is not last:
                touched[id(submit)] = last = submit
            # LaunchTask(...) without its Python-level __new__: one per task.
            launch = (worker_id, job_id, task_id, record.instance, allocation, (), after)
            effects.append(_new_tuple(LaunchTask, launch))
        if not worker.tails.get(job_id, True):
            del worker.tails[job_id]
        for submit in touched.values():
            self._refresh(submit)
        return effects

    def _assign_nodes(
        self, job: Job, event: TaskAssigned, record: TaskRecord | None, submit: Submit
    ) -> list[Effect]:
        """Reserve every node of a multi-node task; only the root gets a LaunchTask."""
        ids = event.workers or (event.worker,)
        nodes = [self.workers.get(worker_id) for worker_id in ids]
        if (
            len(ids) != submit.request.n_nodes
            or ids[0] != event.worker
            or len(set(ids)) != len(ids)
            or any(node is None or not node.is_free_node for node in nodes)
        ):
            return []
        if record is None:
            record = job.record_for(event.task)
            assert record is not None
        key = (job.id, record.task_id)
        record.placed = True
        record.worker = ids[0]
        record.workers = tuple(ids)
        record.allocation = None
        job.sync_queue(record)
        hosts = []
        for node in nodes:
            assert node is not None
            node.mn_task = key
            hosts.append(node.hostname)
        root = nodes[0]
        assert root is not None
        root.tasks.add(key)
        self._refresh(submit)
        return [
            LaunchTask(
                root.id, job.id, record.task_id, record.instance, Allocation(()), tuple(hosts)
            )
        ]

    def _on_task_started(self, event: TaskStarted) -> None:
        for worker_id in event.workers:
            if worker_id not in self.workers:
                self._saw_worker(worker_id)
        job = self.jobs.get(event.job)
        if job is None:
            self._saw_job(event.job)
            return
        record = job.record_for(event.task)
        if record is None or record.state != TaskState.WAITING:
            return
        first = event.workers[0] if event.workers else None
        if record.placed and record.worker != first:
            self._unplace(job, record)
        worker = self.workers.get(first) if first is not None else None
        if not record.placed and worker is not None and worker.is_connected:
            # Replayed from a journal (no task-assigned there): remember where it runs so
            # that losing that worker counts as a crash of this task.
            record.placed = True
            worker.tasks.add((job.id, record.task_id))
            if record.submit.request.n_nodes > 0:
                for worker_id in event.workers:
                    node = self.workers.get(worker_id)
                    if node is not None and node.is_connected and node.mn_task is None:
                        node.mn_task = (job.id, record.task_id)
        record.instance = event.instance
        record.worker = first
        record.workers = tuple(event.workers)
        record.variant = event.variant
        record.started_at = event.time
        record.finished_at = None
        job.set_state(record, TaskState.RUNNING)
        if record.placed and worker is not None:
            worker.n_running += 1
        job.workers_used.update(event.workers)
        for worker_id in event.workers:
            ran = self.workers.get(worker_id)
            if ran is not None:
                ran.last_task_started = (job.id, record.task_id, event.time)
        self._refresh(record.submit)

    def _finish(
        self, job_id: int, task_id: int, state: TaskState, time: float
    ) -> TaskRecord | None:
        job = self.jobs.get(job_id)
        if job is None:
            self._saw_job(job_id)
            return None
        record = job.record_for(task_id)
        if record is None or record.state in TERMINAL:
            return None
        self._unplace(job, record)
        if record.started_at is not None and state != TaskState.CANCELED:
            job.last_run = time - record.started_at
        record.finished_at = time
        job.set_state(record, state)
        self._refresh(record.submit)
        if job.dependants:
            self._release_dependants(job, task_id, state == TaskState.FINISHED)
        if state == TaskState.FINISHED:
            job.settle(record)
        return record

    def _on_task_finished(self, event: TaskFinished) -> None:
        self._finish(event.job, event.task, TaskState.FINISHED, event.time)

    def _on_tasks_finished(self, event: TasksFinished) -> None:
        """Per task, what its `task-started` (if `started`) and `task-finished` do.

        Two kinds of task take a short path with the same outcome: one placed on the
        reporting worker (the live server), and a pristine one of an array (a replayed
        journal, which has no assignments) that goes straight into the submit's done
        runs. A task's start and end cancel out in the counters, and what a start would
        leave behind (the worker's last started task, the ready set) is settled once
        per event. Any other task (multi-node, graph, moved) goes through the general
        handlers."""
        job_id, time, started = event.job, event.time, event.started
        workers, instance, variant = event.workers, event.instance, event.variant
        job = self.jobs.get(job_id)
        first = workers[0] if len(workers) == 1 else None
        worker = self.workers.get(first) if first is not None else None
        if job is None or worker is None:
            self._tasks_finished_slowly(event)
            return
        connected = worker.is_connected
        records = job.records
        waiting, running, finished = TaskState.WAITING, TaskState.RUNNING, TaskState.FINISHED
        expected = running if started is None else waiting
        allocator = worker.allocator
        held = worker.tasks
        tails = worker.tails
        counts = job.counts
        active = job.active
        touched: dict[int, Submit] = {}
        facts = None
        if started is not None:
            facts = DoneFacts(instance, 0, first, workers, started, time, variant)
        last_started = None
        any_started = False
        for start, last, step in event.ids:
            if (
                facts is not None
                and last > start
                and not job.dependants
                and start not in records  # else not pristine: no replayed run
                and self._replay_run(job, start, last, step, facts, touched)
            ):
                last_started = last
                any_started = True
                continue
            for task_id in range(start, last + 1, step):
                record = records.get(task_id)
                if record is None and facts is not None:
                    found = job.locate(task_id)
                    if found is None:
                        continue  # an unknown task: neither its start nor its end does a thing
                    submit, rank = found
                    if (
                        submit.node is None
                        and submit.request.n_nodes == 0
                        and submit.is_pristine(rank)
                    ):
                        submit.claim(rank)
                        counts[finished] += 1
                        touched[id(submit)] = submit
                        last_started = task_id
                        any_started = True
                        if job.dependants:
                            self._release_dependants(job, task_id, True)
                        submit.add_done(rank, rank + 1, facts)
                        continue
                if (
                    record is None
                    or not connected
                    or record.state is not expected
                    or not record.placed
                    or record.worker != first
                    or record.submit.request.n_nodes > 0
                ):
                    if started is not None:
                        self._on_task_started(
                            TaskStarted(started, job_id, task_id, instance, workers, variant)
                        )
                        now_record = records.get(task_id)
                        if now_record is not None and now_record.state is running:
                            last_started = None  # the general path set it already
                    self._finish(job_id, task_id, finished, time)
                    continue
                if started is not None:
                    record.instance = instance
                    record.workers = workers
                    record.variant = variant
                    record.started_at = started
                    last_started = task_id
                    any_started = True
                    job.last_run = time - started
                else:
                    worker.n_running -= 1
                    counts[running] -= 1
                    if record.started_at is not None:
                        job.last_run = time - record.started_at
                record.placed = False
                held.discard((job_id, task_id))
                allocation, record.allocation = record.allocation, None
                if record.behind is not None or record.successor is not None:
                    if self._unlink(job, worker, record):
                        allocation = None
                elif tails:
                    _drop_tail(worker, job_id, task_id)
                if allocation is not None and allocator is not None:
                    allocator.release(allocation)
                record.finished_at = time
                record.state = finished
                counts[finished] += 1
                del active[task_id]
                if record.queued:
                    job.sync_queue(record)
                submit = record.submit
                touched[id(submit)] = submit
                if job.dependants:
                    self._release_dependants(job, task_id, True)
                if facts is not None and not record.crash_count and submit.node is None:
                    # What `settle` does: the record's facts are the event's (its start
                    # and end are the event's, set above, and it never crashed).
                    rank = submit.ids.rank(task_id)
                    if rank is not None:
                        del records[task_id]
                        submit.add_done(rank, rank + 1, facts)
                else:
                    job.settle(record)
        if any_started:
            job.workers_used.update(workers)
            if last_started is not None:
                worker.last_task_started = (job_id, last_started, started)  # type: ignore[assignment]
        for submit in touched.values():
            self._refresh(submit)

    @staticmethod
    def _replay_run(
        job: Job,
        start: int,
        last: int,
        step: int,
        facts: DoneFacts,
        touched: dict[int, Submit],
    ) -> bool:
        """A replayed run of pristine array tasks, finished in one step (the counters,
        the submit's claims and one done run); False if it is anything else."""
        found = job.locate(start)
        if found is None:
            return False
        submit, first = found
        end = first + (last - start) // step + 1
        if (
            submit.node is not None
            or submit.request.n_nodes > 0
            or end > len(submit.ids)
            or submit.ids.slice(first, end) != [(start, last, step)]
            or not submit.claim_run(first, end)
        ):
            return False
        job.counts[TaskState.FINISHED] += end - first
        touched[id(submit)] = submit
        submit.add_done(first, end, facts)
        return True

    def _tasks_finished_slowly(self, event: TasksFinished) -> None:
        job_id, time, started = event.job, event.time, event.started
        if started is not None:
            workers, instance, variant = event.workers, event.instance, event.variant
            start = self._on_task_started
            for task_id in event.task_ids():
                start(TaskStarted(started, job_id, task_id, instance, workers, variant))
                self._finish(job_id, task_id, TaskState.FINISHED, time)
        else:
            for task_id in event.task_ids():
                self._finish(job_id, task_id, TaskState.FINISHED, time)

    def _on_task_failed(self, event: TaskFailed) -> None:
        record = self._finish(event.job, event.task, TaskState.FAILED, event.time)
        if record is not None:
            record.error = event.error

    def _on_task_returned(self, event: TaskReturned) -> None:
        job = self.jobs.get(event.job)
        record = job.records.get(event.task) if job is not None else None
        if (
            job is None
            or record is None
            or not record.placed
            or record.worker != event.worker
            or record.instance != event.instance
            or record.behind is None
            or record.state != TaskState.WAITING
        ):
            return
        self._unplace(job, record)
        record.worker = None
        record.workers = ()
        job.set_state(record, TaskState.WAITING)
        # The task it waited for ran long: no more queueing behind this job's tasks
        # until one of them is seen to finish quickly again.
        job.last_run = None
        self._refresh(record.submit)

    def _on_task_notified(self, event: TaskNotified) -> None:
        pass  # only forwarded to live streams (graphs.md §4)

    def _on_task_canceled(self, event: TaskCanceled) -> list[Effect]:
        return self._terminate_groups(event.tasks, TaskState.CANCELED, event.time)

    def _on_task_aborted(self, event: TaskAborted) -> list[Effect]:
        return self._terminate_groups(event.tasks, TaskState.ABORTED, event.time)

    def _terminate_groups(
        self, groups: Iterable[tuple[int, Iterable[IdItem]]], state: TaskState, time: float
    ) -> list[Effect]:
        effects: list[Effect] = []
        for job_id, raw_items in groups:
            job = self.jobs.get(job_id)
            if job is None:
                self._saw_job(job_id)
                continue
            items = [clean for item in raw_items if (clean := _clean_item(item)) is not None]
            index = _ItemIndex(items)
            touched: dict[int, Submit] = {}
            for record in [r for r in job.active.values() if r.task_id in index]:
                worker = self._unplace(job, record)
                record.finished_at = time
                job.set_state(record, state)
                touched[id(record.submit)] = record.submit
                if worker is not None:
                    effects.append(KillTask(worker.id, job.id, record.task_id, record.instance))
            for item in items:
                self._drop_item(job, item, state, time, touched)
            for submit in touched.values():
                self._refresh(submit)
            if job.dependants:
                for task_id in [t for t in job.dependants if t in index]:
                    if job.state_of(task_id) in TERMINAL:
                        del job.dependants[task_id]
        return effects

    def _drop_item(
        self, job: Job, item: IdItem, state: TaskState, time: float, touched: dict[int, Submit]
    ) -> None:
        """Pristine tasks among `item` become `state` (records were handled already)."""
        start, last, step = item
        found = job.locate(start)
        if found is not None:
            submit, first = found
            end = submit.ids.rank(last)
            if end is not None and submit.ids.slice(first, end + 1) == [item]:
                job.drop_pristine(submit, first, end + 1, state, time)
                touched[id(submit)] = submit
                return
        # An item that does not line up with one submit's IDs (a run of graph tasks, or
        # not made by our commands): one task at a time.
        for task_id in range(start, last + 1, step):
            if task_id in job.records:
                continue
            found = job.locate(task_id)
            if found is not None:
                job.drop_pristine(found[0], found[1], found[1] + 1, state, time)
                touched[id(found[0])] = found[0]

    # ===================================================================================
    # commands: validate, return events, change nothing

    def open_job(
        self, *, now: float, name: str | None = None, max_fails: int | None = None
    ) -> list[Event]:
        """`hq job open`; the new job's ID is `events[0].job_id`."""
        _check_name(name)
        return [JobOpen(now, self.next_job_id, name or DEFAULT_JOB_NAME, max_fails)]

    def submit(
        self,
        submit_desc: Mapping[str, Any],
        *,
        now: float,
        job_id: int | None = None,
        name: str | None = None,
        max_fails: int | None = None,
    ) -> list[Event]:
        """`hq submit` (new closed job) or `hq submit --job ID` (attach to an open job).

        The new or target job's ID is `events[0].job`.
        """
        desc = dict(submit_desc)
        tasks = desc.get("tasks")
        if not isinstance(tasks, Mapping):
            raise HqError("Invalid submit: missing task description")
        if job_id is None:
            _check_name(name)
            job = None
            target = self.next_job_id
            base = 0
        else:
            if name is not None:
                raise HqError("Parameter --name is not allowed when submitting to an open job.")
            if max_fails is not None:
                raise HqError(
                    "Parameter --max-fails is not allowed when submitting to an open job."
                )
            job = self.jobs.get(job_id)
            if job is None:
                raise NotFound(f"Job {job_id} not found.")
            if not job.is_open:
                raise WrongState(f"Job {job_id} is not opened.")
            target = job_id
            top = job.max_task_id()
            base = 0 if top is None else top + 1
        ids, entry_offset = _resolve_ids(tasks, base)
        low, high = ids.min(), ids.max()
        if job is not None and low is not None and high is not None:
            clashes = [
                clash
                for submit in job.submits_overlapping(low, high)
                if (clash := find_clash(ids.items, submit.ids.items)) is not None
            ]
            if clashes:
                raise HqError(f"Task {min(clashes)} already exists in job {job_id}.")
        desc["tasks"] = {
            "ids": [list(item) for item in ids.items],
            "entries": tasks.get("entries"),
            "entry_offset": entry_offset,
        }
        _check_desc(desc)
        if job is None:
            job_desc = {
                "name": name if name is not None else DEFAULT_JOB_NAME,
                "max_fails": max_fails,
            }
        else:
            job_desc = {"name": job.name, "max_fails": job.max_fails}
        events: list[Event] = [JobCreated(now, target, job is None, job_desc, desc)]
        if job is None and len(ids) == 0:
            events.append(JobCompleted(now, target))
        return events

    def submit_graph(
        self,
        submit_dir: str,
        stream_path: str | None,
        tasks: Sequence[Mapping[str, Any]],
        *,
        now: float,
        job_id: int | None = None,
        name: str | None = None,
        max_fails: int | None = None,
    ) -> list[Event]:
        """A graph of tasks (graphs.md §1.4 stage D), as a new closed job, or into the
        open job `job_id` (then `name` and `max_fails` are ignored).

        `tasks` are resolved task descriptions in the order sent (dicts are taken over:
        they become the journal's and the model's descriptions), each with `id` and
        `deps` and the per-task keys of a submit description (`program`, `resources`,
        `pin`, `priority`, `time_limit`, `crash_limit`, `task_dir`, `stdin`). A dep
        must be an earlier task of this submit or a task already in the job.
        The job's ID is `events[0].job`.
        """
        job = self.jobs.get(job_id) if job_id is not None else None
        ids = [task["id"] for task in tasks]
        self._check_graph(job, job_id, ids, [task.get("deps") for task in tasks])
        target, job_desc, group = self._graph_target(job, job_id, name, max_fails)
        descs = []
        for task in tasks:
            # Taken over, not copied, and without the keys that hold their defaults:
            # every reader of a description falls back to the same defaults, and a big
            # graph keeps one of these per task (in memory and in the journal).
            desc = task if isinstance(task, dict) else dict(task)
            for key, default in _GRAPH_DEFAULTS:
                if key in desc and desc[key] == default and type(desc[key]) is type(default):
                    del desc[key]
            desc["submit_dir"] = submit_dir
            if stream_path is not None:
                desc["stream_path"] = stream_path
            desc["graph"] = group
            descs.append(desc)
        if descs:
            _check_desc(descs[0])
        graph = {"submit_dir": submit_dir, "stream_path": stream_path, "graph": descs}
        events: list[Event] = [JobCreated(now, target, job is None, job_desc, graph)]
        if job is None and not descs:
            events.append(JobCompleted(now, target))
        return events

    def submit_graph_table(
        self,
        submit_dir: str,
        stream_path: str | None,
        table: Mapping[str, Any],
        *,
        now: float,
        job_id: int | None = None,
        name: str | None = None,
        max_fails: int | None = None,
    ) -> list[Event]:
        """`submit_graph` of a graph in table form (hyperq.server.model.graph.expand_table,
        values already checked): the same rules and the same tasks, and an event that
        keeps the table rather than one description per task."""
        job = self.jobs.get(job_id) if job_id is not None else None
        self._check_graph(job, job_id, table["ids"], table_deps(table))
        target, job_desc, group = self._graph_target(job, job_id, name, max_fails)
        desc = {"submit_dir": submit_dir, "stream_path": stream_path, "group": group}
        desc["table"] = table
        for template in table["templates"]:
            _check_desc({**template, "program": {"args": [], **template["program"]}})
        events: list[Event] = [JobCreated(now, target, job is None, job_desc, desc)]
        if job is None and not table["ids"]:
            events.append(JobCompleted(now, target))
        return events

    @staticmethod
    def _check_graph(
        job: Job | None,
        job_id: int | None,
        ids: Sequence[int],
        deps_of: Sequence[Sequence[int] | None],
    ) -> None:
        """Stage D's task rules (graphs.md §1.4), first offender in sent order."""
        if job is not None:
            for task_id in ids:
                if job.locate(task_id) is not None:
                    raise HqError(f"Task {task_id} already exists in job {job_id}.")
        # Position of each ID in the submit (the first one, for a duplicate).
        position: dict[int, int] = {}
        for index, task_id in enumerate(ids):
            if position.setdefault(task_id, index) != index:
                raise HqError(f"Task {task_id} is defined more than once.")
        for index, deps in enumerate(deps_of):
            if not deps:
                continue
            for dep in deps:
                # An earlier task of this submit, or (not itself) a task of the job.
                at = position.get(dep)
                if (at is None and (job is None or job.locate(dep) is None)) or (
                    at is not None and at >= index
                ):
                    raise HqError(f"Invalid dependency on {dep}")

    def _graph_target(
        self, job: Job | None, job_id: int | None, name: str | None, max_fails: int | None
    ) -> tuple[int, dict[str, Any], int]:
        """(job ID, job description, graph group) of a graph submit, after stage D."""
        if job_id is not None:
            if job is None:
                raise NotFound(f"Job {job_id} not found.")
            if not job.is_open:
                raise WrongState(f"Job {job_id} is not opened.")
            group = len({s.desc.get("graph", -1 - s.index) for s in job.submits})
            return job_id, {"name": job.name, "max_fails": job.max_fails}, group
        _check_name(name)
        job_desc = {"name": name if name is not None else "", "max_fails": max_fails}
        return self.next_job_id, job_desc, 0

    def close_job(self, job_id: int, *, now: float) -> list[Event]:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"Closing job {job_id} failed; job not found")
        if not job.is_open:
            raise WrongState(f"Closing job {job_id} failed; job is already closed")
        events: list[Event] = [JobClose(now, job_id)]
        if job.active_count == 0:
            events.append(JobCompleted(now, job_id))
        return events

    def cancel_job(self, job_id: int, *, now: float, reason: str | None = None) -> CancelResult:
        """`hq job cancel`: every waiting or running task of the job becomes CANCELED."""
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"Canceling job {job_id} failed; job not found")
        active = job.active_count
        if active == 0:
            raise WrongState(f"Canceling job {job_id} failed; all tasks are already finished")
        events: list[Event] = [JobCancel(now, job_id, reason or "")]
        events.extend(self._terminate_events(job, TaskCanceled, now, frozenset()))
        if not job.is_open:
            events.append(JobCompleted(now, job_id))
        return CancelResult(events, active, job.total - active)

    def forget_jobs(
        self,
        job_ids: Iterable[int],
        *,
        now: float,
        states: Collection[JobState] | None = None,
    ) -> ForgetResult:
        """`hq job forget`: drop completed jobs whose state is among `states`."""
        if states is None:
            states = (JobState.FINISHED, JobState.FAILED, JobState.ABORTED, JobState.CANCELED)
        selected = sorted(set(job_ids))
        forgotten = []
        for job_id in selected:
            job = self.jobs.get(job_id)
            if job is not None and job.is_completed and job.job_state() in states:
                forgotten.append(job_id)
        events: list[Event] = [JobForgotten(now, tuple(forgotten))] if forgotten else []
        return ForgetResult(events, len(forgotten), len(selected) - len(forgotten))

    def worker_connected(self, configuration: Mapping[str, Any], *, now: float) -> list[Event]:
        """A worker registered; its ID is `events[0].id`."""
        try:
            ResourceDescriptor.from_json(configuration["resources"])
        except (KeyError, TypeError, ValueError) as error:
            raise HqError(f"Invalid worker configuration: {error}") from error
        return [WorkerConnected(now, self.next_worker_id, dict(configuration))]

    def stop_worker(self, worker_id: int, *, now: float) -> list[Event]:
        """`hq worker stop`: no more tasks go there; the edge then tells it to stop."""
        worker = self.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"Stopping worker {worker_id} failed; worker not found")
        if not worker.is_connected:
            raise WrongState(f"Stopping worker {worker_id} failed; worker is already stopped")
        if worker.stop_requested:
            return []
        return [WorkerStopRequested(now, worker_id)]

    def worker_resumed(
        self, worker_id: int, known: Iterable[tuple[int, int]], *, now: float
    ) -> list[Event]:
        """A held `reconnect` worker is back; `known` are the tasks it still has."""
        worker = self.workers.get(worker_id)
        if worker is None or not worker.held:
            raise NotFound(f"Worker {worker_id} is not waiting to reconnect")
        return [WorkerResumed(now, worker_id, tuple(sorted(set(known))))]

    def connected_workers(self) -> list[Worker]:
        """The connected workers in ID order (the list is shared: do not change it)."""
        key = (self._workers_epoch, len(self.workers))
        if key != self._connected_key:
            self._connected = [w for _, w in sorted(self.workers.items()) if w.is_connected]
            self._connected_key = key
        return self._connected

    def held_workers(self) -> list[int]:
        return sorted(w for w, worker in self.workers.items() if worker.held)

    def worker_lost(self, worker_id: int, *, now: float, reason: str) -> list[Event]:
        """The worker is gone. A worker asked to stop is always lost as `Stopped`."""
        worker = self.workers.get(worker_id)
        if worker is None or not worker.is_connected:
            return []
        lost = LostReason.STOPPED if worker.stop_requested else LostReason(reason)
        events: list[Event] = []
        # Workers report a start up to 20 ms late (or with the end), so a task placed
        # here may be running although the server has not heard. Presume it started:
        # crash counting and never-restart then treat it as the running task it may be
        # (for never-restart, the safe side), and a journal replay sees the same. Not a
        # task queued behind another: the worker had it start only once that one ended,
        # and the server has not heard of that end.
        for job_id, task_id in sorted(worker.tasks):
            record = self.jobs[job_id].records[task_id]
            if record.behind is None:
                events += self._unreported_start(job_id, record, worker_id, now)
        presumed = {(e.job, e.task) for e in events if isinstance(e, TaskStarted)}
        events.append(WorkerLost(now, worker_id, str(lost)))
        failed: dict[int, list[int]] = {}
        skip: dict[int, set[int]] = {}
        for job_id, task_id in sorted(worker.tasks):
            record = self.jobs[job_id].records[task_id]
            if record.state != TaskState.RUNNING and (job_id, task_id) not in presumed:
                continue
            submit = record.submit
            error = None
            if submit.never_restart:
                error = NEVER_RESTART_ERROR
            elif lost.is_failure and submit.crash_limit is not None:
                if record.crash_count + 1 >= submit.crash_limit:
                    error = crash_limit_error(record.crash_count + 1)
            if error is not None:
                job = self.jobs[job_id]
                gone = skip.setdefault(job_id, set())
                gone.add(task_id)
                self._failure_events(job, task_id, error, now, events, gone)
                failed.setdefault(job_id, []).append(task_id)
        for job_id in sorted({job_id for job_id, _ in worker.tasks}):
            n_failed = len(failed.get(job_id, ()))
            gone = frozenset(skip.get(job_id, ()))
            events.extend(self._follow_ups(self.jobs[job_id], now, n_failed, -len(gone), gone))
        return events

    def assign(self, assignments: Iterable[Assignment], *, now: float) -> list[Event]:
        """Scheduler decisions as events; apply them right away, in this order.

        Consecutive decisions for one job, worker and variant become one
        `tasks-assigned` (a worker's share of a pass is typically a run of IDs)."""
        events: list[Event] = []
        run: list[int] = []
        allocations: list[Allocation] = []
        behind: list[int] = []
        key: tuple[int, int, int] | None = None

        def close() -> None:
            if key is None or not run:
                return
            ids = tuple(ordered_runs(run))
            queued = tuple(behind) if any(after >= 0 for after in behind) else ()
            events.append(
                TasksAssigned(now, key[0], ids, key[1], key[2], tuple(allocations), queued)
            )

        for a in assignments:
            if a.workers:
                close()
                run, key = [], None
                events.append(
                    TaskAssigned(
                        now, a.job_id, a.task_id, a.worker_id, workers=a.workers, variant=a.variant
                    )
                )
                continue
            this = (a.job_id, a.worker_id, a.variant)
            if this != key:
                close()
                run, allocations, behind, key = [], [], [], this
            run.append(a.task_id)
            allocations.append(a.allocation)
            behind.append(a.after)
        close()
        return events

    def _placed_record(
        self, job_id: int, task_id: int, worker_id: int, instance: int
    ) -> tuple[Job, TaskRecord] | None:
        job = self.jobs.get(job_id)
        record = job.records.get(task_id) if job is not None else None
        if (
            job is None
            or record is None
            or not record.placed
            or record.worker != worker_id
            or record.instance != instance
        ):
            return None
        return job, record

    @staticmethod
    def _unreported_start(
        job_id: int, record: TaskRecord, worker_id: int, at: float
    ) -> list[Event]:
        """The start of a placed task whose worker has not reported it (workers report
        starts late, or with the end), as the event the journal needs; [] if known."""
        if record.state != TaskState.WAITING:
            return []
        workers = record.workers or (worker_id,)
        return [TaskStarted(at, job_id, record.task_id, record.instance, workers, record.variant)]

    def task_started(
        self,
        job_id: int,
        task_id: int,
        *,
        worker_id: int,
        instance: int,
        now: float,
        variant: int = 0,
    ) -> list[Event]:
        found = self._placed_record(job_id, task_id, worker_id, instance)
        if found is None or found[1].state != TaskState.WAITING:
            return []
        variant = variant or found[1].variant
        workers = found[1].workers or (worker_id,)
        return [TaskStarted(now, job_id, task_id, instance, workers, variant)]

    def task_returned(
        self, job_id: int, task_id: int, *, worker_id: int, instance: int, now: float
    ) -> list[Event]:
        """The worker gives back a task queued behind another, unstarted (its
        `returned` report); [] unless the task is just that."""
        found = self._placed_record(job_id, task_id, worker_id, instance)
        if found is None or found[1].behind is None or found[1].state != TaskState.WAITING:
            return []
        return [TaskReturned(now, job_id, task_id, worker_id, instance)]

    def task_finished(
        self,
        job_id: int,
        task_id: int,
        *,
        worker_id: int,
        instance: int,
        now: float,
        ran_for: float | None = None,
        ended_at: float | None = None,
    ) -> list[Event]:
        """`ran_for`: seconds the task ran, when its start was not reported before.
        `ended_at`: when it ended, if before `now` (a result queued while the server was
        away); what it causes (an abort, the job's completion) still happens `now`."""
        found = self._placed_record(job_id, task_id, worker_id, instance)
        if found is None:
            return []
        job, record = found
        end = _ended(ended_at, now, record)
        # Finished before its start was reported: the journal still gets the start.
        events = self._unreported_start(job_id, record, worker_id, end - (ran_for or 0.0))
        events.append(TaskFinished(end, job_id, task_id))
        events.extend(self._follow_ups(job, now, 0, -1, frozenset((task_id,))))
        return events

    def tasks_finished(
        self,
        job_id: int,
        task_ids: Iterable[int],
        *,
        worker_id: int,
        instance: int,
        now: float,
        ran_for: float | None = None,
        ended_at: float | None = None,
    ) -> list[Event]:
        """`task_finished` for each of `task_ids` in order, as if each one's events were
        applied before the next is decided, but as a few `tasks-finished` events: one
        per run of tasks that finished alike (same start and end, nodes, variant)."""
        job = self.jobs.get(job_id)
        if job is None:
            return []
        records = job.records
        events: list[Event] = []
        seen: set[int] = set()
        run: list[int] = []
        key: tuple[float, float | None, tuple[int, ...], int] | None = None

        def close() -> None:
            if run and key is not None:
                end, started, workers, variant = key
                ids = tuple(ordered_runs(run))
                events.append(TasksFinished(end, job_id, ids, instance, workers, variant, started))

        for task_id in task_ids:
            record = records.get(task_id)
            if (
                record is None
                or not record.placed
                or record.worker != worker_id
                or record.instance != instance
                or task_id in seen
            ):
                continue
            seen.add(task_id)
            end = _ended(ended_at, now, record)
            started = None
            if record.state == TaskState.WAITING:
                started = end - (ran_for or 0.0)
            this = (end, started, record.workers or (worker_id,), record.variant)
            if this != key:
                close()
                run = []
                key = this
            run.append(task_id)
        close()
        if seen:
            events.extend(self._follow_ups(job, now, 0, -len(seen), frozenset(seen)))
        return events

    def task_failed(
        self,
        job_id: int,
        task_id: int,
        *,
        worker_id: int,
        instance: int,
        now: float,
        error: str,
        ran_for: float | None = None,
        ended_at: float | None = None,
    ) -> list[Event]:
        """The task failed on its worker (also before it started, e.g. spawn errors).

        `ran_for`: seconds its process ran, when its start was not reported before.
        `ended_at`: as for `task_finished`."""
        found = self._placed_record(job_id, task_id, worker_id, instance)
        if found is None:
            return []
        job, record = found
        end = _ended(ended_at, now, record)
        events: list[Event] = []
        if ran_for is not None:  # its process ran (else it could not even be spawned)
            events = self._unreported_start(job_id, record, worker_id, end - ran_for)
        aborted = self._failure_events(job, task_id, error, end, events, set())
        gone = frozenset((task_id, *aborted))
        events.extend(self._follow_ups(job, now, 1, -len(gone), gone))
        return events

    @staticmethod
    def _failure_events(
        job: Job, task_id: int, error: str, at: float, events: list[Event], skip: set[int]
    ) -> list[int]:
        """Appends the failure of `task_id`, preceded by the abort of every waiting task
        that depends on it (graphs.md §2.3); returns the aborted task IDs. Tasks in
        `skip` are not aborted (they fail or were aborted already in the same batch)."""
        aborted = transitive_dependants(job, task_id, skip) if job.dependants else []
        for chunk in _chunks(ids_to_items(aborted), CHUNK_ITEMS):
            events.append(TaskAborted(at, ((job.id, chunk),)))
        events.append(TaskFailed(at, job.id, task_id, error))
        return aborted

    def _follow_ups(
        self, job: Job, now: float, new_failures: int, active_delta: int, gone: frozenset[int]
    ) -> list[Event]:
        """Max-fails abort and completion after `new_failures` failures of tasks `gone`."""
        events: list[Event] = []
        active = job.active_count + active_delta
        failed = job.counts[TaskState.FAILED] + new_failures
        if new_failures and job.max_fails is not None and failed > job.max_fails and active > 0:
            events.extend(self._terminate_events(job, TaskAborted, now, gone))
            active = 0
        if active == 0 and not job.is_open and not job.is_completed:
            events.append(JobCompleted(now, job.id))
        return events

    def _terminate_events(
        self,
        job: Job,
        cls: type[TaskCanceled] | type[TaskAborted],
        now: float,
        exclude: frozenset[int],
    ) -> list[Event]:
        """Events turning every waiting/running task of `job` (but `exclude`) into `cls`."""
        items = ids_to_items(sorted(t for t in job.active if t not in exclude))
        nodes: list[int] = []
        for submit in job.submits:
            if submit.node is not None:
                # One task each: gathered into runs, not one item per graph task.
                if submit.pristine_left and submit.node not in exclude:
                    nodes.append(submit.node)
                continue
            for first, end in submit.pristine_segments():
                items.extend(submit.ids.slice(first, end))
        items.extend(ids_to_items(sorted(nodes)))
        return [cls(now, ((job.id, chunk),)) for chunk in _chunks(items, CHUNK_ITEMS)]

    # ===================================================================================
    # queries

    def job_ids(self) -> list[int]:
        return sorted(self.jobs)

    def job_info(self, job_id: int) -> JobInfo | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        return JobInfo(
            id=job.id,
            name=job.name,
            state=job.job_state(),
            is_open=job.is_open,
            cancel_reason=job.cancel_reason,
            max_fails=job.max_fails,
            task_count=job.total,
            task_stats={key: job.count(TaskState(key)) for key in TASK_STAT_KEYS},
            submitted_at=job.submitted_at,
            completed_at=job.completed_at,
            workers=tuple(sorted(job.workers_used)),
            submit_count=len(job.submits),
        )

    def job_summary(self) -> dict[JobState, int]:
        counts = {state: 0 for state in JobState}
        for job in self.jobs.values():
            counts[job.job_state()] += 1
        return counts

    def job_submits(self, job_id: int) -> list[Mapping[str, Any]]:
        job = self.jobs.get(job_id)
        return [submit.desc for submit in job.submits] if job is not None else []

    def submit_desc(self, job_id: int, index: int) -> Mapping[str, Any]:
        """One submit's description (O(1): a graph job has one submit per task)."""
        return self.jobs[job_id].submits[index].desc

    def job_submit_times(self, job_id: int) -> list[float]:
        """When each of the job's submits was made, in `job_submits` order."""
        job = self.jobs.get(job_id)
        return [submit.submitted_at for submit in job.submits] if job is not None else []

    def job_task_items(self, job_id: int) -> list[IdItem]:
        """All task IDs of the job as (start, last, step) items, sorted, runs joined."""
        job = self.jobs.get(job_id)
        if job is None:
            return []
        return merge_adjacent(sorted(item for submit in job.submits for item in submit.ids.items))

    def task(self, job_id: int, task_id: int) -> TaskView | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        record = job.records.get(task_id)
        if record is not None:
            return record_view(job.id, record)
        found = job.locate(task_id)
        if found is None:
            return None
        submit, rank = found
        return pristine_view(job.id, submit, task_id, rank)

    def launch_facts(self, job_id: int, task_id: int) -> tuple[int, int, Any] | None:
        """(submit index, variant, entry) of a task, for its launch message: the record
        of a placed task answers without building a whole view."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        record = job.records.get(task_id)
        if record is not None:
            submit = record.submit
            return submit.index, record.variant, submit.entry(task_id)
        view = self.task(job_id, task_id)
        return None if view is None else (view.submit_index, view.variant, view.entry)

    def iter_tasks(
        self,
        job_id: int,
        task_ids: Iterable[int] | None = None,
        states: Collection[TaskState] | None = None,
    ) -> Iterator[TaskView]:
        """Tasks of the job in ascending ID order, optionally only `task_ids` / `states`.

        A generator, so a caller can stop (or pause between chunks) at any point;
        unknown IDs in `task_ids` are skipped (check with `task`).
        """
        job = self.jobs.get(job_id)
        if job is None:
            return
        wanted = None if states is None else frozenset(states)
        if task_ids is not None:
            views: Iterable[TaskView | None] = (
                self.task(job_id, task_id) for task_id in sorted(set(task_ids))
            )
        elif wanted is not None and wanted <= RECORD_ONLY_STATES:
            views = (record_view(job.id, job.records[t]) for t in sorted(job.records))
            if TaskState.FINISHED in wanted:
                views = heapq.merge(views, done_views(job), key=lambda view: view.task_id)
        elif len(job.submits) == 1:
            views = submit_views(job, job.submits[0])
        else:
            views = heapq.merge(
                *(submit_views(job, submit) for submit in job.submits),
                key=lambda view: view.task_id,
            )
        for view in views:
            if view is not None and (wanted is None or view.state in wanted):
                yield view

    def failed_tasks(self, job_id: int, limit: int) -> tuple[list[TaskView], int]:
        """The first `limit` failed tasks by ID, and how many failed in total."""
        job = self.jobs.get(job_id)
        if job is None:
            return [], 0
        failed = sorted(t for t, r in job.records.items() if r.state == TaskState.FAILED)
        views = [record_view(job.id, job.records[t]) for t in failed[:limit]]
        return views, len(failed)

    def worker_ids(self) -> list[int]:
        return sorted(self.workers)

    def worker_info(self, worker_id: int) -> WorkerView | None:
        worker = self.workers.get(worker_id)
        if worker is None:
            return None
        return WorkerView(
            id=worker.id,
            configuration=worker.configuration,
            hostname=worker.hostname,
            started_at=worker.started_at,
            ended_at=worker.ended_at,
            lost_reason=worker.lost_reason,
            last_task_started=worker.last_task_started,
            assigned_tasks=len(worker.tasks),
            running_tasks=worker.n_running,
            stop_requested=worker.stop_requested,
            mn_main=worker.mn_main,
        )

    def hostname(self, worker_id: int) -> str | None:
        worker = self.workers.get(worker_id)
        return worker.hostname if worker is not None else None

    def record_count(self) -> int:
        """Per-task records held in memory (the compactness budget)."""
        return sum(len(job.records) for job in self.jobs.values())

    def snapshot(self) -> dict[str, Any]:
        """Every fact of the model as plain data, for comparisons and debug dumps.

        Lists every task, so it is for tests and small models, not for million-task jobs.
        """
        jobs = {}
        for job_id in sorted(self.jobs):
            job = self.jobs[job_id]
            jobs[job_id] = {
                "name": job.name,
                "max_fails": job.max_fails,
                "is_open": job.is_open,
                "cancel_reason": job.cancel_reason,
                "submitted_at": job.submitted_at,
                "completed_at": job.completed_at,
                "workers_used": sorted(job.workers_used),
                "stats": {key: job.count(TaskState(key)) for key in TASK_STAT_KEYS},
                "submits": [dict(submit.desc) for submit in job.submits],
                "submit_times": [submit.submitted_at for submit in job.submits],
                "tasks": [view_facts(view, job) for view in self.iter_tasks(job_id)],
                "queued": [list(submit.requeued) for submit in job.submits],
            }
        workers = {}
        for worker_id in sorted(self.workers):
            worker = self.workers[worker_id]
            workers[worker_id] = {
                "configuration": dict(worker.configuration),
                "started_at": worker.started_at,
                "ended_at": worker.ended_at,
                "lost_reason": worker.lost_reason,
                "stop_requested": worker.stop_requested,
                "tasks": sorted(worker.tasks),
                "n_running": worker.n_running,
                "last_task_started": worker.last_task_started,
                "idle": worker.allocator.is_idle() if worker.allocator is not None else None,
            }
        return {
            "server_uid": self.server_uid,
            "server_started_at": self.server_started_at,
            "max_job_id": self.max_job_id,
            "next_worker_id": self.next_worker_id,
            "jobs": jobs,
            "workers": workers,
            "ready": sorted(self.ready),
            "lanes": sorted(
                (key[0], key[1], sorted(lane.members)) for key, lane in self.lanes.items()
            ),
            "deps": {
                job_id: {
                    s.node: s.waiting_deps
                    for s in job.submits
                    if s.node is not None and s.waiting_deps
                }
                for job_id, job in self.jobs.items()
            },
        }


# ---------------------------------------------------------------------------------------
# helpers


def _drop_tail(worker: Worker, job_id: int, task_id: int) -> None:
    """The task is no longer the end of a queue on `worker` with room behind it."""
    mine = worker.tails.get(job_id)
    if mine is not None and mine.pop(task_id, None) is not None and not mine:
        del worker.tails[job_id]


def _ended(ended_at: float | None, now: float, record: TaskRecord) -> float:
    """A reported end time, kept between the task's recorded start and `now`."""
    if ended_at is None:
        return now
    floor = record.started_at if record.started_at is not None else ended_at
    return min(max(ended_at, floor), now)


_GRAPH_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("deps", []),
    ("pin", None),
    ("priority", 0),
    ("time_limit", None),
    ("crash_limit", 5),
    ("task_dir", False),
    ("stdin", None),
)


def _node_id(desc: Any) -> int:
    return int(desc["id"])


def _frozen(value: Any) -> Any:
    """A hashable copy of plain wire data (lists and maps), to share equal requests."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def _check_name(name: str | None) -> None:
    if name is not None and ("\n" in name or "\t" in name):
        raise HqError("name cannot have a newline or a tab")


def _resolve_ids(tasks: Mapping[str, Any], base: int) -> tuple[TaskIdSet, int]:
    """The submit's task IDs and entry offset; `base` = first free ID of the job."""
    entries = tasks.get("entries")
    if entries is not None and not isinstance(entries, list | tuple):
        raise HqError("Invalid submit: entries must be a list")
    raw = tasks.get("ids")
    if raw is None:
        count = 1 if entries is None else len(entries)
        return TaskIdSet.single_run(base, count), base
    try:
        ids = TaskIdSet.build(raw)
    except DuplicateTaskId as error:
        raise HqError(f"Task {error.task_id} is defined more than once.") from error
    except (TypeError, ValueError) as error:
        raise HqError(f"Invalid submit: bad task IDs {raw!r}") from error
    top = ids.max()
    if entries is not None and top is not None and top >= len(entries):
        raise HqError(f"Invalid submit: task {top} has no entry")
    return ids, 0


def _check_desc(desc: Mapping[str, Any]) -> None:
    """Refuse descriptions the model could not replay (wording for developers)."""
    try:
        ResourceRequest.from_wire(desc["resources"])
        parse_crash_limit(desc.get("crash_limit", 5))
        priority = desc.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"priority must be an integer, got {priority!r}")
        program = desc.get("program")
        if not isinstance(program, Mapping) or not isinstance(program.get("args"), list):
            raise ValueError("program.args must be a list")
    except KeyError as error:
        raise HqError(f"Invalid submit: missing {error}") from error
    except (TypeError, ValueError) as error:
        raise HqError(f"Invalid submit: {error}") from error

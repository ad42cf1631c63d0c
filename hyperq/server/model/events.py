"""The events that change the server model: one definition for four uses.

They are what `Model.apply` consumes, what the journal persists (as `to_wire` maps in
CBOR), what `hq journal export` prints (`to_export_json`, journal.md §5) and what
`hq journal stream` sends. Events are plain frozen data with the time supplied by the
caller: nothing here reads a clock, touches a file or knows about trio.

Persistence: every event whose class has `persisted = True` goes to the journal. Three
kinds are transient (`persisted = False`) and only ever live in a running server:
`task-assigned` (a task handed to a worker but not yet reported started: a restore turns
every assigned or running task back into a waiting one, so storing assignments would
only double the journal's size), `worker-resumed` (see its class) and `job-forgotten`
(only completed jobs can be forgotten, and a restore drops completed jobs anyway).

`worker-stop-requested` is persisted but not exported (`exported = False`): HyperQueue
has no such event, so `hq journal export/stream/replay` leave it out. It is journaled
because `hq worker stop` is acknowledged only once durable, and a restore must know that
a `reconnect` worker was stopped, not hold it for the grace period.

Replaying *all* events, transient ones included, through a fresh model rebuilds the
same model; replaying the persisted ones is what `restore` does.

The submit description carried by `job-created` (`submit_desc`) is a plain map built by
the client (`hq submit`) and completed by the server (`Model.submit`):

    {
      "submit_dir": str,              # the client's cwd, absolute
      "stream_path": str | None,      # --stream (later)
      "tasks": {
        "ids": [[start, last, step], ...] | None,
                                      # IdRanges.items; None = let the server choose:
                                      # one task (or one per entry), IDs starting at 0,
                                      # or at max existing ID + 1 in an open job
        "entries": [str, ...] | None, # --each-line / --from-json, one per entry
        "entry_offset": int,          # set by the server: task T's entry is
                                      # entries[T - entry_offset] (0 when ids are given)
      },
      "program": {
        "args": [str, ...],
        "env": {str: str},
        "cwd": str,                   # stage-1 resolved (jobs.md §2)
        "stdout": None | {"path": str, "rm_if_finished": bool},   # None = `none`
        "stderr": None | {"path": str, "rm_if_finished": bool},
      },
      "resources": ResourceRequest.to_wire(),  # its min_time is --time-request
      "pin": None | "taskset" | "omp",
      "priority": int,
      "time_limit": float | None,     # seconds
      "crash_limit": int | "never-restart" | "unlimited",   # int > 0
      "task_dir": bool,
      "stdin": bytes | None,
    }

A graph submit (`Model.submit_graph`, graphs.md) is instead
`{"submit_dir", "stream_path", "graph": [TASK_DESC, ...]}`: one description per task in
the form above (its `tasks.ids` = that one task) plus `"deps": [int, ...]`, `"graph": k`
(the k-th user submit of the job) and optionally `"variants"` (all resource variants).
Or the same tasks in table form, `{"submit_dir", "stream_path", "group": k, "table": …}`
(hyperq.server.model.graph.expand_table), which the model expands when it applies it.

The server stores `tasks.ids` always resolved (never None) so that replaying a
`job-created` needs no decision. Keys the model does not know are kept as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from hyperq.common.duration import format_timestamp
from hyperq.common.resources import Allocation, ResourceRequest

IdItem = tuple[int, int, int]
"""(start, last, step) of task IDs, `last` included (as in hyperq.common.idrange)."""

TaskGroups = tuple[tuple[int, tuple[IdItem, ...]], ...]
"""Task IDs of several jobs: ((job_id, (item, ...)), ...); never expanded per task."""


class LostReason(StrEnum):
    """Why a worker left (the journal's `reason` strings, worker.md §4)."""

    STOPPED = "Stopped"
    CONNECTION_LOST = "ConnectionLost"
    HEARTBEAT_LOST = "HeartbeatLost"
    IDLE_TIMEOUT = "IdleTimeout"
    TIME_LIMIT_REACHED = "TimeLimitReached"

    @property
    def is_failure(self) -> bool:
        """Failures count against the crash limit of the tasks running there."""
        return self in (LostReason.CONNECTION_LOST, LostReason.HEARTBEAT_LOST)


@dataclass(frozen=True)
class Event:
    """Base of all events. `time` is epoch seconds, chosen by whoever made the event."""

    kind: ClassVar[str] = ""
    persisted: ClassVar[bool] = True
    exported: ClassVar[bool] = True  # shown by `hq journal export/stream/replay`
    time: float


@dataclass(frozen=True)
class ServerStart(Event):
    kind: ClassVar[str] = "server-start"
    server_uid: str


@dataclass(frozen=True)
class ServerStop(Event):
    kind: ClassVar[str] = "server-stop"


@dataclass(frozen=True)
class WorkerConnected(Event):
    """`configuration` is the worker JSON's `configuration` object (worker.md §7).

    The model reads `resources` (ResourceDescriptor.to_json()), `time_limit` (seconds or
    None) and `hostname`; every other key (e.g. `pid`, `allocation`) is kept verbatim.
    """

    kind: ClassVar[str] = "worker-connected"
    id: int
    configuration: Mapping[str, Any]


@dataclass(frozen=True)
class WorkerLost(Event):
    kind: ClassVar[str] = "worker-lost"
    id: int
    reason: str  # a LostReason value


@dataclass(frozen=True)
class WorkerOverview(Event):
    """A worker's hardware sample (cluster.md §4); `hw_state` is the spec's STATE map.

    Sent only by workers started with `--overview-interval`, so every one is journaled
    (journal.md §1). It changes nothing the scheduler reads: it is here for the journal,
    the streams and whoever replays them (report, dashboard).
    """

    kind: ClassVar[str] = "worker-overview"
    id: int
    hw_state: Mapping[str, Any]
    # (job, task, CPU labels) of the tasks running there: for the dashboard's per-CPU
    # view, not part of the exported JSON (cluster.md §4).
    running_cpus: tuple[tuple[int, int, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class WorkerOverviewTemporary(WorkerOverview):
    """An overview a worker without `--overview-interval` sends only while a dashboard
    watches (cluster.md §4): streamed to watchers that asked for overviews, never
    journaled, exported as a plain `worker-overview`."""

    kind: ClassVar[str] = "worker-overview-temporary"
    persisted: ClassVar[bool] = False


@dataclass(frozen=True)
class WorkerStopRequested(Event):
    """`hq worker stop` asked this worker to stop; nothing new is assigned to it."""

    kind: ClassVar[str] = "worker-stop-requested"
    exported: ClassVar[bool] = False
    id: int


@dataclass(frozen=True)
class WorkerResumed(Event):
    """A `reconnect` worker held since a restore came back and keeps its running tasks.

    Transient: if the server restarts again, the journal still shows the worker as
    connected, so the restore holds it again. `tasks` are the (job, task) pairs the
    worker still knows (running, or finished and not yet reported); any other task held
    on it goes back to waiting.
    """

    kind: ClassVar[str] = "worker-resumed"
    persisted: ClassVar[bool] = False
    id: int
    known: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class JobOpen(Event):
    kind: ClassVar[str] = "job-open"
    job_id: int
    name: str
    max_fails: int | None


@dataclass(frozen=True)
class JobCreated(Event):
    """A submit: a new closed job (`closed_job`) or tasks added to an open job.

    `job_desc` = {"name": str, "max_fails": int | None}; `submit_desc` is described in
    the module docstring.
    """

    kind: ClassVar[str] = "job-created"
    job: int
    closed_job: bool
    job_desc: Mapping[str, Any]
    submit_desc: Mapping[str, Any]


@dataclass(frozen=True)
class JobClose(Event):
    kind: ClassVar[str] = "job-close"
    job_id: int


@dataclass(frozen=True)
class JobCancel(Event):
    kind: ClassVar[str] = "job-cancel"
    job_id: int
    reason: str  # "" = no reason


@dataclass(frozen=True)
class JobCompleted(Event):
    kind: ClassVar[str] = "job-completed"
    job: int


@dataclass(frozen=True)
class JobForgotten(Event):
    kind: ClassVar[str] = "job-forgotten"
    persisted: ClassVar[bool] = False
    jobs: tuple[int, ...]


@dataclass(frozen=True)
class TaskAssigned(Event):
    """The scheduler handed a waiting task to a worker (transient, see module docstring)."""

    kind: ClassVar[str] = "task-assigned"
    persisted: ClassVar[bool] = False
    job: int
    task: int
    worker: int
    # A multi-node task: every node in placement order, the root (`worker`) first.
    workers: tuple[int, ...] = ()
    variant: int = 0  # index of the resource variant it runs with
    # Queued behind this task of the job, placed on the same worker: it runs on that
    # task's allocation once that task has ended (-1: an allocation of its own).
    behind: int = -1


@dataclass(frozen=True)
class TasksAssigned(Event):
    """Several waiting tasks of one job handed to one worker with one resource variant,
    in `ids` order: what one `task-assigned` per task would do (transient, as those).
    Multi-node tasks always go as `task-assigned`."""

    kind: ClassVar[str] = "tasks-assigned"
    persisted: ClassVar[bool] = False
    job: int
    ids: tuple[IdItem, ...]
    worker: int
    variant: int = 0
    # The scheduler's allocation for each task, in `ids` order: applying takes exactly
    # these (what allocating again in the same order would give); () = allocate.
    allocations: tuple[Allocation, ...] = ()
    # Each task's `behind` (as `TaskAssigned`'s), in `ids` order; () = none has one.
    behinds: tuple[int, ...] = ()

    def task_ids(self) -> Iterator[int]:
        for start, last, step in self.ids:
            yield from range(start, last + 1, step)


@dataclass(frozen=True)
class TaskReturned(Event):
    """A worker gave back a task queued behind another (that one ran too long): it
    waits again, for any worker (transient, as assignments)."""

    kind: ClassVar[str] = "task-returned"
    persisted: ClassVar[bool] = False
    job: int
    task: int
    worker: int
    instance: int


@dataclass(frozen=True)
class TaskStarted(Event):
    kind: ClassVar[str] = "task-started"
    job: int
    task: int
    instance: int
    workers: tuple[int, ...]
    variant: int = 0


@dataclass(frozen=True)
class TaskFinished(Event):
    kind: ClassVar[str] = "task-finished"
    job: int
    task: int


@dataclass(frozen=True)
class TasksFinished(Event):
    """Tasks of one job that finished alike, as one event: a worker's batch reported as
    one `finished-ids` item. Exactly what one `task-started` (when `started` is set:
    the worker had not reported the start) and one `task-finished` per task, in `ids`
    order, would do; `hq journal export/stream/replay` show it expanded so (`expand`).

    `ids` are (start, last, step) runs in report order; every task was placed on
    `workers` with `instance` and `variant`, and ended at `time`."""

    kind: ClassVar[str] = "tasks-finished"
    job: int
    ids: tuple[IdItem, ...]
    instance: int
    workers: tuple[int, ...]
    variant: int
    started: float | None

    def task_ids(self) -> Iterator[int]:
        for start, last, step in self.ids:
            yield from range(start, last + 1, step)


@dataclass(frozen=True)
class TaskFailed(Event):
    kind: ClassVar[str] = "task-failed"
    job: int
    task: int
    error: str


@dataclass(frozen=True)
class TaskCanceled(Event):
    """Every waiting or running task among `tasks` becomes CANCELED (others stay)."""

    kind: ClassVar[str] = "task-canceled"
    tasks: TaskGroups


@dataclass(frozen=True)
class TaskAborted(Event):
    """Every waiting or running task among `tasks` becomes ABORTED (others stay)."""

    kind: ClassVar[str] = "task-aborted"
    tasks: TaskGroups


# Automatic allocation (alloc.md §6): queues and their allocations, so that a restored
# server knows its queues again and the allocations still in the batch system.


@dataclass(frozen=True)
class AutoallocQueueCreated(Event):
    kind: ClassVar[str] = "autoalloc-queue-created"
    queue_id: int
    params: Mapping[str, Any]


@dataclass(frozen=True)
class AutoallocQueueRemoved(Event):
    kind: ClassVar[str] = "autoalloc-queue-removed"
    queue_id: int


@dataclass(frozen=True)
class AutoallocAllocationQueued(Event):
    kind: ClassVar[str] = "autoalloc-allocation-queued"
    queue_id: int
    allocation_id: str
    worker_count: int


@dataclass(frozen=True)
class AutoallocAllocationStarted(Event):
    kind: ClassVar[str] = "autoalloc-allocation-started"
    queue_id: int
    allocation_id: str


@dataclass(frozen=True)
class AutoallocAllocationFinished(Event):
    kind: ClassVar[str] = "autoalloc-allocation-finished"
    queue_id: int
    allocation_id: str


@dataclass(frozen=True)
class TaskNotified(Event):
    """A running task sent a message (`hq task notify`, graphs.md §4). Never stored and
    never applied to the model: only live event streams and waiting submitters see it."""

    kind: ClassVar[str] = "task-notify"
    persisted: ClassVar[bool] = False
    job: int
    task: int
    worker: int
    message: bytes


EVENT_TYPES: tuple[type[Event], ...] = (
    ServerStart,
    ServerStop,
    WorkerConnected,
    WorkerLost,
    WorkerStopRequested,
    WorkerResumed,
    WorkerOverview,
    WorkerOverviewTemporary,
    JobOpen,
    JobCreated,
    JobClose,
    JobCancel,
    JobCompleted,
    JobForgotten,
    TaskAssigned,
    TasksAssigned,
    TaskReturned,
    TaskStarted,
    TaskFinished,
    TasksFinished,
    TaskFailed,
    TaskCanceled,
    TaskAborted,
    AutoallocQueueCreated,
    AutoallocQueueRemoved,
    AutoallocAllocationQueued,
    AutoallocAllocationStarted,
    AutoallocAllocationFinished,
    TaskNotified,
)
REGISTRY: dict[str, type[Event]] = {cls.kind: cls for cls in EVENT_TYPES}


# ---------------------------------------------------------------------------------------
# Wire form (CBOR-friendly maps)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected a bool, got {value!r}")
    return value


def _map(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a map, got {value!r}")
    return dict(value)


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {value!r}")
    return tuple(_int(v) for v in value)


def _item(value: Any) -> IdItem:
    start, last, step = _ints(value)
    return (start, last, step)


def _opt_float(value: Any) -> float | None:
    return None if value is None else _float(value)


def _items(value: Any) -> tuple[IdItem, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of ID items, got {value!r}")
    out = []
    for item in value:
        start, last, step = _item(item)
        if step <= 0 or last < start:
            raise ValueError(f"bad ID item {item!r}")
        out.append((start, last, step))
    return tuple(out)


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"expected bytes, got {value!r}")
    return value


def _pairs(value: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list of (job, task) pairs")
    return tuple((_int(pair[0]), _int(pair[1])) for pair in value)


def _task_groups(value: Any) -> TaskGroups:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {value!r}")
    groups = []
    for group in value:
        job, items = group
        if not isinstance(items, list | tuple):
            raise ValueError(f"expected a list of ID items, got {items!r}")
        groups.append((_int(job), tuple(_item(item) for item in items)))
    return tuple(groups)


def _running_cpus(value: Any) -> tuple[tuple[int, int, tuple[str, ...]], ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {value!r}")
    return tuple((_int(job), _int(task), tuple(_str(c) for c in cpus)) for job, task, cpus in value)


# Field names mean the same thing in every event, so one decoder per name suffices.
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "time": _float,
    "server_uid": _str,
    "id": _int,
    "configuration": _map,
    "reason": _str,
    "job_id": _int,
    "name": _str,
    "max_fails": _opt_int,
    "job": _int,
    "closed_job": _bool,
    "job_desc": _map,
    "submit_desc": _map,
    "jobs": _ints,
    "task": _int,
    "worker": _int,
    "instance": _int,
    "workers": _ints,
    "variant": _int,
    "behind": _int,
    "behinds": _ints,
    "error": _str,
    "tasks": _task_groups,
    "known": _pairs,
    "queue_id": _int,
    "params": _map,
    "allocation_id": _str,
    "worker_count": _int,
    "hw_state": _map,
    "running_cpus": _running_cpus,
    "message": _bytes,
    "ids": _items,
    "allocations": lambda value: tuple(Allocation.from_wire(a) for a in value),
    "started": _opt_float,
}


def _plain(value: Any) -> Any:
    """Tuples become lists, maps get string keys: what CBOR and JSON both carry."""
    if isinstance(value, Allocation):
        return value.to_wire()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES
}


def to_wire(event: Event) -> dict[str, Any]:
    """The map the journal stores: {"kind": ..., "time": ..., <fields>}."""
    out: dict[str, Any] = {"kind": event.kind}
    for name in _FIELD_NAMES[type(event)]:
        out[name] = _plain(getattr(event, name))
    return out


# Per kind: (class, [(field name, decoder, has a default)]); restoring a journal decodes
# every record, so the dataclass introspection is done once, not per event.
_FIELD_PLANS: dict[str, tuple[type[Event], list[tuple[str, Callable[[Any], Any], bool]]]] = {
    cls.kind: (
        cls,
        [
            (f.name, _DECODERS[f.name], f.default is not dataclasses.MISSING)
            for f in dataclasses.fields(cls)
        ],
    )
    for cls in EVENT_TYPES
}


def from_wire(data: Mapping[str, Any]) -> Event:
    """Inverse of `to_wire`; raises ValueError for anything malformed or unknown."""
    if not isinstance(data, Mapping):
        raise ValueError(f"an event must be a map, got {type(data).__name__}")
    kind = data.get("kind")
    plan = _FIELD_PLANS.get(kind) if isinstance(kind, str) else None
    if plan is None:
        raise ValueError(f"unknown event kind {kind!r}")
    cls, fields = plan
    values: dict[str, Any] = {}
    for name, decoder, has_default in fields:
        if name not in data:
            if has_default:
                continue
            raise ValueError(f"event {kind!r} lacks field {name!r}")
        try:
            values[name] = decoder(data[name])
        except (TypeError, ValueError) as error:
            raise ValueError(f"event {kind!r}, field {name!r}: {error}") from error
    return cls(**values)


def to_record(event: Event) -> list[Any]:
    """The journal's compact form: [kind, time, <fields in declaration order>].

    Positional arrays decode about twice as fast as maps, and a restore decodes every
    record of the journal. Field values go in as they are (CBOR writes tuples as arrays,
    as it does lists): converting them first cost a submit's record 20x its encoding.
    """
    return [event.kind, *[getattr(event, name) for name in _FIELD_NAMES[type(event)]]]


def plain_record(event: Event) -> list[Any]:
    """`to_record` with every value reduced to lists and string-keyed dicts, for the
    rare field holding some other kind of sequence or mapping."""
    return [event.kind, *(_plain(getattr(event, name)) for name in _FIELD_NAMES[type(event)])]


def from_record(record: Any) -> Event:
    """Inverse of `to_record`; raises ValueError for anything malformed or unknown."""
    if not isinstance(record, list) or not record:
        raise ValueError("a journal record must be a non-empty array")
    kind = record[0]
    plan = _FIELD_PLANS.get(kind) if isinstance(kind, str) else None
    if plan is None:
        raise ValueError(f"unknown event kind {kind!r}")
    cls, fields = plan
    if len(record) - 1 > len(fields) or any(
        not has_default for _n, _d, has_default in fields[len(record) - 1 :]
    ):
        raise ValueError(f"event {kind!r} has {len(record) - 1} fields")
    try:
        values = record[1:]
        return cls(*[fields[i][1](value) for i, value in enumerate(values)])
    except (TypeError, ValueError, IndexError) as error:
        raise ValueError(f"event {kind!r}: {error}") from error


# ---------------------------------------------------------------------------------------
# `hq journal export` JSON (journal.md §5)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _task_refs(groups: TaskGroups) -> list[dict[str, int]]:
    return [
        {"job_id": job, "job_task_id": task}
        for job, items in groups
        for start, last, step in items
        for task in range(start, last + 1, step)
    ]


def _export_ids(ids: Any) -> Any:
    # The original dumps its range structure here; tests never look inside.
    if not isinstance(ids, list | tuple):
        return ids
    return {
        "ranges": [
            {"start": s, "count": (last - s) // step + 1, "step": step} for s, last, step in ids
        ]
    }


def _export_resources(raw: Any) -> Any:
    try:
        return [ResourceRequest.from_wire(raw).to_json()]
    except (TypeError, ValueError):
        return _jsonable(raw)


def _export_submit(desc: Mapping[str, Any]) -> dict[str, Any]:
    graph = desc.get("graph")
    table = desc.get("table")
    if isinstance(table, Mapping) and isinstance(table.get("ids"), list):
        graph = table["ids"]  # a graph in table form (hyperq.server.model.graph)
    if isinstance(graph, list):
        return {
            "submit_dir": desc.get("submit_dir"),
            "stream_path": desc.get("stream_path"),
            "task_desc": {"n_tasks": len(graph)},
        }
    tasks = desc.get("tasks") or {}
    return {
        "submit_dir": desc.get("submit_dir"),
        "stream_path": desc.get("stream_path"),
        "task_desc": {
            "ids": _export_ids(tasks.get("ids")),
            "resources": _export_resources(desc.get("resources")),
            "time_limit": desc.get("time_limit"),
            "priority": desc.get("priority", 0),
            "crash_limit": desc.get("crash_limit"),
        },
    }


def export_payload(event: Event) -> dict[str, Any]:
    """The `event` object of an export line: {"type": kind, <fields as in §5>}."""
    out: dict[str, Any] = {"type": event.kind}
    if isinstance(event, JobCreated):
        out["job"] = event.job
        out["closed_job"] = event.closed_job
        out["job_desc"] = {
            "name": event.job_desc.get("name"),
            "max_fails": event.job_desc.get("max_fails"),
        }
        out["submit_desc"] = _export_submit(event.submit_desc)
    elif isinstance(event, TaskStarted):
        out.update(job=event.job, task=event.task, instance=event.instance)
        if len(event.workers) == 1:
            out["worker"] = event.workers[0]
        else:
            out["workers"] = list(event.workers)
        if event.variant > 0:
            out["variant"] = event.variant
    elif isinstance(event, TaskCanceled | TaskAborted):
        out["tasks"] = _task_refs(event.tasks)
    elif isinstance(event, _AUTOALLOC_EVENTS):
        # The original names these fields with dashes (`queue-id`, `allocation-id`).
        for field in dataclasses.fields(event):
            if field.name != "time":
                out[field.name.replace("_", "-")] = _jsonable(getattr(event, field.name))
    elif isinstance(event, WorkerOverview):
        out.update(
            {
                "type": WorkerOverview.kind,
                "id": event.id,
                "hw-state": {"state": _jsonable(event.hw_state)},
            }
        )
    else:
        for field in dataclasses.fields(event):
            if field.name != "time":
                out[field.name] = _jsonable(getattr(event, field.name))
    return out


_AUTOALLOC_EVENTS = (
    AutoallocQueueCreated,
    AutoallocQueueRemoved,
    AutoallocAllocationQueued,
    AutoallocAllocationStarted,
    AutoallocAllocationFinished,
)


def to_export_json(event: Event) -> dict[str, Any]:
    """One `hq journal export` line: {"time": "<RFC3339>", "event": {"type": ...}}."""
    if isinstance(event, TaskNotified):
        # The original's notification line has no `type` (graphs.md §4.1).
        payload: dict[str, Any] = {
            "task_id": {"job_id": event.job, "job_task_id": event.task},
            "worker_id": event.worker,
            "message": list(event.message),
        }
        return {"time": format_timestamp(event.time), "event": payload}
    return {"time": format_timestamp(event.time), "event": export_payload(event)}


def expand(event: Event) -> list[Event]:
    """The per-task events a range event stands for (what users read: `hq journal
    export/stream/replay`, reports, the dashboard); any other event as it is."""
    if isinstance(event, TasksAssigned):
        behind = event.behinds or (-1,) * sum(1 for _ in event.task_ids())
        return [
            TaskAssigned(
                event.time, event.job, task, event.worker, variant=event.variant, behind=after
            )
            for task, after in zip(event.task_ids(), behind, strict=True)
        ]
    if not isinstance(event, TasksFinished):
        return [event]
    out: list[Event] = []
    job, time, started = event.job, event.time, event.started
    instance, workers, variant = event.instance, event.workers, event.variant
    for task in event.task_ids():
        if started is not None:
            out.append(TaskStarted(started, job, task, instance, workers, variant))
        out.append(TaskFinished(time, job, task))
    return out


def expand_all(events: Iterable[Event]) -> Iterator[Event]:
    for event in events:
        if isinstance(event, TasksFinished | TasksAssigned):
            yield from expand(event)
        else:
            yield event


def persisted(events: Iterable[Event]) -> list[Event]:
    """The events a journal keeps, in order."""
    return [event for event in events if event.persisted]

"""The declared shape of every message that crosses a connection.

Each client request op, each worker→server message and each server→worker message has
one type here. A receiver converts the decoded CBOR value with `convert(value, Type)`
before any handler logic runs, so handlers see typed values and a value that does not
fit becomes one `SchemaError` naming the field and what was expected
(`submit_desc.program.args[0]: expected a string`), never an exception deep inside a
handler. The conversion (msgspec, in C) checks types and shapes only; the rules about
values (ranges, names, NUL bytes) are the receiver's (`hyperq.server.submitcheck`).

Unknown map keys are ignored, so that an older peer keeps working when a newer one adds
an optional field. No I/O here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Struct

T = TypeVar("T")

# (start, last, step): one item of an ID range list, as `IdRanges` and `TaskIdSet` use.
IdItem = tuple[int, int, int]


class SchemaError(Exception):
    """A message that does not fit its declared type; `message` says where and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "bytes": "bytes",
    "array": "a list",
    "object": "a map",
    "null": "null",
}
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]*)`(?P<rest>.*?)(?: - at `\$(?P<at>[^`]*)`)?\Z")
_MISSING = re.compile(
    r"Object missing required field `(?P<field>[^`]*)`(?: - at `\$(?P<at>[^`]*)`)?\Z"
)
_INVALID = re.compile(r"(?P<what>.*?)(?: - at `\$(?P<at>[^`]*)`)?\Z", re.S)


def _words(want: str) -> str:
    parts = [p.strip() for p in want.split("|")]
    return " or ".join(_TYPE_WORDS.get(p, p) for p in parts)


def _place(prefix: str, at: str | None) -> str:
    path = prefix + (at or "")
    return path.lstrip(".") or "request"


def describe(error: msgspec.ValidationError, prefix: str = "") -> str:
    """msgspec's message in our words: `<field path>: <what was expected>`."""
    text = str(error)
    if m := _MISSING.match(text):
        field = _place(prefix, m["at"]) if m["at"] or prefix else ""
        return f"{field + '.' if field else ''}{m['field']}: missing"
    if m := _EXPECTED.match(text):
        rest = m["rest"]
        got = re.match(r"(?P<extra>.*?), got `(?P<got>[^`]*)`\Z", rest)
        if got is not None:
            extra = got["extra"]
            return f"{_place(prefix, m['at'])}: expected {_words(m['want'])}{extra}"
        # "Expected `array` of length 4, got 3", "Expected `int` >= 0"
        return f"{_place(prefix, m['at'])}: expected {_words(m['want'])}{rest}"
    m = _INVALID.match(text)
    assert m is not None
    what = m["what"][:1].lower() + m["what"][1:]
    return f"{_place(prefix, m['at'])}: {what}"


def convert(value: Any, kind: type[T], prefix: str = "") -> T:
    """`value` (decoded CBOR) as `kind`; SchemaError naming the field if it does not fit."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as error:
        raise SchemaError(describe(error, prefix)) from None


def convert_message(value: Any, kinds: dict[str, type[T]]) -> T:
    """A message tagged by its `op`, as the type `kinds` names for that op.

    Looked up here rather than by converting to a union of the types: msgspec caches
    what it knows about a Struct class, not about a union, and re-reading the union cost
    ~5 µs per message where the Struct alone costs under 1 µs.
    """
    op = value.get("op") if isinstance(value, dict) else None
    if not isinstance(op, str):
        raise SchemaError("op: missing" if isinstance(value, dict) else "expected a map")
    kind = kinds.get(op)
    if kind is None:
        raise SchemaError(f"op: unknown message {op!r}")
    return convert(value, kind)


def to_wire(value: Struct) -> dict[str, Any]:
    """A typed message as plain CBOR-encodable values (bytes stay bytes)."""
    return msgspec.to_builtins(value, builtin_types=(bytes,))


# =======================================================================================
# Client requests: `{"op": <name>, ...fields}`; one type per op (the op key is ignored).


class Selector(Struct, frozen=True):
    """Which jobs or workers: `last`, `all` (the command's own meaning) or ID ranges."""

    kind: Literal["last", "all", "ids"]
    ranges: list[IdItem] | None = None


class NoFields(Struct, frozen=True):
    """Ops that take nothing but their name."""


class OutputWire(Struct, frozen=True):
    path: str
    rm_if_finished: bool = False


class ProgramWire(Struct, frozen=True):
    args: list[str]
    cwd: str
    env: dict[str, str] = {}
    stdout: OutputWire | None = None
    stderr: OutputWire | None = None


class ResourceEntryWire(Struct, frozen=True, array_like=True):
    name: str
    amount: int
    policy: str


class ResourcesWire(Struct, frozen=True, array_like=True):
    """`ResourceRequest.to_wire()`: `[[[name, amount, policy], …], n_nodes, min_time, weight]`."""

    entries: list[ResourceEntryWire]
    n_nodes: int
    min_time: float
    weight: int


class TasksWire(Struct, frozen=True):
    ids: list[IdItem] | None = None
    entries: list[str] | None = None
    entry_offset: int = 0


class SubmitDesc(Struct, frozen=True):
    submit_dir: str
    program: ProgramWire
    resources: ResourcesWire
    tasks: TasksWire
    stream_path: str | None = None
    pin: str | None = None
    priority: int = 0
    time_limit: float | None = None
    crash_limit: int | str = 5
    task_dir: bool = False
    stdin: bytes | None = None
    on_notify: str | None = None


class JobDesc(Struct, frozen=True):
    name: str | None = None
    max_fails: int | None = None


class SubmitRequest(Struct, frozen=True):
    submit_desc: SubmitDesc
    job_desc: JobDesc | None = None
    job: int | None = None


class JobOpenRequest(Struct, frozen=True):
    name: str | None = None
    max_fails: int | None = None


class SelectorRequest(Struct, frozen=True):
    """Ops that name jobs or workers and nothing else (job-close, worker-stop, ...)."""

    selector: Selector


class JobCancelRequest(Struct, frozen=True):
    selector: Selector
    reason: str | None = None


class StatesRequest(Struct, frozen=True):
    """job-forget, job-task-ids: a selector and an optional state filter."""

    selector: Selector
    states: list[str] | None = None


class JobInfoRequest(Struct, frozen=True):
    selector: Selector
    with_tasks: bool = False


class JobWaitRequest(Struct, frozen=True):
    selector: Selector
    without_close: bool = False


class TaskListRequest(Struct, frozen=True):
    selector: Selector
    tasks: list[IdItem] | None = None
    states: list[str] | None = None


class TaskInfoRequest(Struct, frozen=True):
    selector: Selector
    tasks: list[IdItem]


class JournalStreamRequest(Struct, frozen=True):
    follow: bool = False
    # The dashboard's extras (cluster.md §4, §7): temporary overviews with each running
    # task's CPUs, and a marker between the history and the live events.
    overviews: bool = False
    live_marker: bool = False


class SubmitGraphRequest(Struct, frozen=True):
    """A whole task graph (graphs.md §2): the envelope is typed here. `submit_desc` is
    either a `GraphTableWire` (it has `ids`; converted by hyperq.server.graphapi) or the
    older list of task maps, each checked field by field there, naming the failing field
    the same way."""

    submit_desc: dict[str, Any]
    job: int | None = None
    job_desc: JobDesc | None = None


TaskIdInt = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Index = Annotated[int, msgspec.Meta(ge=0)]


class GraphShapeWire(Struct, frozen=True):
    """What tasks of a graph table share: everything of a task but its ID, deps, args
    and stdin. `resources` and `variants` are indexes into `GraphTableWire.requests`."""

    resources: Index
    variants: list[Index] | None = None
    env: dict[str, str] = {}
    cwd: str | None = None  # None: the submit dir
    stdout: OutputWire | None = None  # None: discarded
    stderr: OutputWire | None = None
    pin: str | None = None
    priority: Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)] = 0
    time_limit: float | None = None
    crash_limit: int | str = 5
    task_dir: bool = False


class GraphTableWire(Struct, frozen=True):
    """`submit_desc` of a `submit-graph` in table form (graphs.md §1; hyperq.server.graphapi):
    task k has ID `ids[k]`, args `argvs[argv_of[k]]`, the rest `shapes[shape_of[k]]`
    (an absent column means index 0 for every task), the next `dep_counts[k]` IDs of the
    flat `deps`, and stdin from the (task index, bytes) pairs of `stdins`. Equal values
    are sent once, so 100,000 similar tasks cost a few bytes each to send and to decode."""

    submit_dir: str
    ids: list[TaskIdInt]
    argvs: list[list[str]]
    shapes: list[GraphShapeWire]
    requests: list[Any]
    stream_path: str | None = None
    argv_of: list[Index] | None = None
    shape_of: list[Index] | None = None
    dep_counts: list[Index] | None = None
    deps: list[TaskIdInt] = []
    stdins: list[tuple[Index, bytes]] = []


class TaskExplainRequest(Struct, frozen=True):
    job: int | Literal["last"]
    task: int


class JobNotificationsRequest(Struct, frozen=True):
    job: int


CLIENT_REQUESTS: dict[str, type[Struct]] = {
    "server-info": NoFields,
    "server-stop": NoFields,
    "debug-dump": NoFields,
    "submit": SubmitRequest,
    "job-open": JobOpenRequest,
    "job-close": SelectorRequest,
    "job-list": NoFields,
    "job-summary": NoFields,
    "job-info": JobInfoRequest,
    "job-cancel": JobCancelRequest,
    "job-forget": StatesRequest,
    "job-wait": JobWaitRequest,
    "job-progress": SelectorRequest,
    "job-task-ids": StatesRequest,
    "task-list": TaskListRequest,
    "task-info": TaskInfoRequest,
    "worker-list": NoFields,
    "worker-info": SelectorRequest,
    "worker-stop": SelectorRequest,
    "journal-flush": NoFields,
    "journal-prune": NoFields,
    "journal-stream": JournalStreamRequest,
    "submit-graph": SubmitGraphRequest,
    "task-explain": TaskExplainRequest,
    "job-notifications": JobNotificationsRequest,
}
"""The request type of each client op (the client API dispatches on these names)."""


class AllocParamsRequest(Struct, frozen=True):
    """`alloc-add` / `alloc-dry-run`: the queue's parameters are checked field by field
    by hyperq.alloc (QueueParams.from_wire), the one place that knows them."""

    params: dict[str, Any]
    no_dry_run: bool = False


class AllocQueueRequest(Struct, frozen=True):
    queue_id: int


class AllocRemoveRequest(Struct, frozen=True):
    queue_id: int
    force: bool = False


class AllocLogRequest(Struct, frozen=True):
    allocation_id: str
    stream: Literal["stdout", "stderr"]


ALLOC_REQUESTS: dict[str, type[Struct]] = {
    "alloc-add": AllocParamsRequest,
    "alloc-dry-run": AllocParamsRequest,
    "alloc-list": NoFields,
    "alloc-info": AllocQueueRequest,
    "alloc-log": AllocLogRequest,
    "alloc-pause": AllocQueueRequest,
    "alloc-resume": AllocQueueRequest,
    "alloc-remove": AllocRemoveRequest,
}
"""The automatic allocator's ops (alloc.md §2), registered by the server when it starts
the allocator; their handlers take the validated request as plain values."""


# =======================================================================================
# Worker → server. Updates are arrays whose first element is their kind.


class WorkerConfigWire(Struct, frozen=True):
    """The parts of a worker's configuration the server reads; the rest is kept as sent."""

    resources: Any
    hostname: str = ""
    time_limit: float | None = None
    heartbeat_interval: float | None = None
    idle_timeout: float | None = None
    on_server_lost: str | None = None
    overview_interval: float | None = None


class Resume(Struct, frozen=True):
    """A `reconnect` worker coming back: who it was and the tasks it still has."""

    worker_id: int
    server_uid: str
    known: list[IdItem] = []


class Register(Struct, frozen=True, tag_field="op", tag="register"):
    configuration: dict[str, Any]
    pid: int | None = None
    resume: Resume | None = None


class Started(Struct, frozen=True, array_like=True, tag="started"):
    job: int
    task: int
    instance: int
    ago: float | None = None


class Finished(Struct, frozen=True, array_like=True, tag="finished"):
    job: int
    task: int
    instance: int
    ran_for: float | None = None
    ended_ago: float | None = None


class Failed(Struct, frozen=True, array_like=True, tag="failed"):
    job: int
    task: int
    instance: int
    error: str
    ran_for: float | None = None
    ended_ago: float | None = None


class Notify(Struct, frozen=True, array_like=True, tag="notify"):
    """A running task's `hq task notify` message (graphs.md §4)."""

    job: int
    task: int
    instance: int
    message: bytes
    ago: float | None = None


class FinishedIds(Struct, frozen=True, array_like=True, tag="finished-ids"):
    """Tasks of one job and instance that ended together, alike in `ran_for` and
    `ended_ago` (a zero-worker's whole batch): their IDs as (start, last, step) runs in
    the order the worker reports them, so one item stands for thousands of `Finished`."""

    job: int
    instance: int
    ids: list[IdItem]
    ran_for: float | None = None
    ended_ago: float | None = None

    def task_ids(self) -> list[int]:
        """The IDs in report order. Runs that step backwards or by 0 are not a worker's
        and are skipped (the caller bounds the count first: `id_count`)."""
        out: list[int] = []
        for start, last, step in self.ids:
            if step > 0 and last >= start:
                out.extend(range(start, last + 1, step))
        return out

    def id_count(self) -> int:
        return sum(
            (last - start) // step + 1
            for start, last, step in self.ids
            if step > 0 and last >= start
        )


class Returned(Struct, frozen=True, array_like=True, tag="returned"):
    """A task the worker was given with `after` and gives back unstarted: the task it
    waited for ran too long. The server makes it a waiting task again."""

    job: int
    task: int
    instance: int


TaskUpdate = Started | Finished | Failed | Notify | FinishedIds | Returned


class Updates(Struct, frozen=True, tag_field="op", tag="updates"):
    items: list[TaskUpdate] = []


class Heartbeat(Struct, frozen=True, tag_field="op", tag="heartbeat"):
    pass


class Goodbye(Struct, frozen=True, tag_field="op", tag="goodbye"):
    reason: str | None = None


class Overview(Struct, frozen=True, tag_field="op", tag="overview"):
    """A hardware overview (cluster.md §4). Its nested shape is checked field by field
    by hyperq.server.overview, which keeps what the spec knows and skips the rest."""

    hw_state: dict[str, Any]
    tasks: list[Any] = []


WorkerMessage = Updates | Heartbeat | Goodbye | Overview
"""What a registered worker may send."""
WORKER_MESSAGES: dict[str, type[WorkerMessage]] = {
    "updates": Updates,
    "heartbeat": Heartbeat,
    "goodbye": Goodbye,
    "overview": Overview,
}


# =======================================================================================
# Server → worker.


class RegisterReply(Struct, frozen=True):
    worker: dict[str, Any]
    server_uid: str
    drop: list[IdItem] = []


class LaunchDesc(Struct, frozen=True):
    """The part of a submit description a worker needs to run its tasks."""

    program: ProgramWire
    submit_dir: str
    stdin: bytes | None = None
    task_dir: bool = False
    pin: str | None = None
    time_limit: float | None = None
    # Where streamed channels (path `<pipe>`) go: the submit's --stream DIR, resolved.
    stream_dir: str | None = None


# How many launch descriptions a worker keeps per connection (the slots of `SlotDesc`).
DESC_SLOTS = 64
DescSlot = Annotated[int, msgspec.Meta(ge=0, lt=DESC_SLOTS)]
# What a launched task names as its description: a key of the message's own `descs`
# (the form before slots), or a slot of the worker's that this message or an earlier
# one on the same connection filled.
DescRef = DescSlot | str


class SlotDesc(Struct, frozen=True, array_like=True):
    """`[slot, desc]`: the worker keeps `desc` in `slot` for the rest of the connection
    (replacing what the slot held), so that later messages name it by number instead of
    carrying it again. The server decides which slot a new description overwrites; a
    new connection starts with every slot empty on both ends."""

    slot: DescSlot
    desc: LaunchDesc


# A launched task's `after`: the ID of a task of the same job that this worker was
# given earlier and that holds this task's allocation. The worker starts the task when
# that one has ended, however it ended; at once if it holds no such task (it ended
# already). Until it starts, a queued task may be canceled (it is dropped, never run)
# or, queued too long, given back (`Returned`). None: start at once.
After = Annotated[int, msgspec.Meta(ge=0)] | None


class LaunchItem(Struct, frozen=True):
    job: int
    task: int
    instance: int
    desc: DescRef
    allocation: list[Any]
    entry: str | None = None
    # The hostnames of a multi-node task's workers, root first (cluster.md §1).
    nodes: list[str] = []
    after: After = None


class Compute(Struct, frozen=True, tag_field="op", tag="compute"):
    tasks: list[LaunchItem]
    descs: dict[str, LaunchDesc] = {}
    # Filled before any of the message's tasks is looked at.
    slots: list[SlotDesc] = []


class LaunchRow(Struct, frozen=True, array_like=True):
    """A `LaunchItem` as an array, `[job, task, instance, desc, allocation, entry]` (and
    the node hostnames of a multi-node task): no map keys to encode, seal and decode for
    every task."""

    job: int
    task: int
    instance: int
    desc: DescRef
    allocation: list[Any]
    entry: str | None = None
    nodes: list[str] = []
    after: After = None


class ComputeRows(Struct, frozen=True, tag_field="op", tag="compute-rows"):
    """`Compute` with its tasks as rows (what the server sends since issue 24; a worker
    still takes `compute`)."""

    tasks: list[LaunchRow]
    descs: dict[str, LaunchDesc] = {}
    slots: list[SlotDesc] = []


class LaunchRun(Struct, frozen=True, array_like=True):
    """Consecutive tasks `task`, `task + 1`, … of one job, instance and description, each
    holding `per_task` units of one indexed resource with the same share, as
    `[job, task, instance, desc, resource, request, amount, share, per_task, labels,
    entries, afters]`: what differs from task to task (the unit labels, `per_task` of
    them each, the array entries and the `after`s if any) is a flat column, so a run of
    1-CPU tasks costs a short string per task to encode, seal and decode instead of a
    nested row."""

    job: int
    task: int
    instance: int
    desc: DescRef
    resource: str
    # The request of the resource: [amount, policy], as in an allocation's wire form.
    request: tuple[int, str]
    amount: int
    share: int
    per_task: int
    labels: list[str]
    entries: list[str | None] | None = None
    # Each task's `after` (see `After`), -1 for none; None: no task of the run has one.
    afters: list[Annotated[int, msgspec.Meta(ge=-1)]] | None = None

    def __post_init__(self) -> None:
        if self.per_task < 1 or not self.labels or len(self.labels) % self.per_task:
            raise ValueError("labels must be a non-empty multiple of per_task")
        count = len(self.labels) // self.per_task
        if self.entries is not None and len(self.entries) != count:
            raise ValueError("entries must have one item per task")
        if self.afters is not None and len(self.afters) != count:
            raise ValueError("afters must have one item per task")

    def rows(self) -> list[LaunchRow]:
        """The run's tasks as the rows `compute-rows` would carry (same allocations)."""
        head = [self.resource, list(self.request), self.amount]
        share = self.share
        step = self.per_task
        labels = self.labels
        entries = self.entries
        afters = self.afters
        return [
            LaunchRow(
                self.job,
                self.task + index,
                self.instance,
                self.desc,
                [[*head, [[label, share] for label in labels[at : at + step]]]],
                None if entries is None else entries[index],
                [],
                None if afters is None or afters[index] < 0 else afters[index],
            )
            for index, at in enumerate(range(0, len(labels), step))
        ]


class ComputeRuns(Struct, frozen=True, tag_field="op", tag="compute-runs"):
    """`ComputeRows` with its tasks as runs (what the server sends when every task of a
    batch fits a `LaunchRun`; a worker still takes `compute` and `compute-rows`)."""

    runs: list[LaunchRun]
    descs: dict[str, LaunchDesc] = {}
    slots: list[SlotDesc] = []

    @property
    def tasks(self) -> list[LaunchRow]:
        return [row for run in self.runs for row in run.rows()]


class Cancel(Struct, frozen=True, tag_field="op", tag="cancel"):
    tasks: list[IdItem] = []


class Stop(Struct, frozen=True, tag_field="op", tag="stop"):
    reason: str = "stopped"


class OverviewRequest(Struct, frozen=True, tag_field="op", tag="overview-request"):
    """Temporary overviews on or off (a dashboard is watching, cluster.md §4)."""

    enabled: bool = False


ServerMessage = Compute | ComputeRows | ComputeRuns | Cancel | Stop | OverviewRequest
"""What the server may send a registered worker."""
SERVER_MESSAGES: dict[str, type[ServerMessage]] = {
    "compute": Compute,
    "compute-rows": ComputeRows,
    "compute-runs": ComputeRuns,
    "cancel": Cancel,
    "stop": Stop,
    "overview-request": OverviewRequest,
}

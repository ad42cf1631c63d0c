"""The `submit-graph` request: a whole task graph in one submit (graphs.md §1).

Request (the CLI's `hq job submit-file` and the Python API send the same):

    {"op": "submit-graph",
     "job": int | None,                      # attach to this open job
     "job_desc": {"name": str | None, "max_fails": int | None},   # ignored with "job"
     "submit_desc": {
        "submit_dir": str,                   # the client's cwd, absolute
        "stream_path": str | None,
        "requests": [ResourceRequest.to_wire(), ...],   # optional shared table
        "tasks": [TASK, ...]}}               # deps only on earlier tasks (topological)

    TASK = {"id": int, "deps": [int, ...],
            "program": {"args": [str], "env": {str: str}, "cwd": str (default: submit_dir),
                        "stdout": None | {"path": str, "rm_if_finished": bool},
                        "stderr": None | {...}},
            "resources": REQUEST,                # the first variant
            "variants": [REQUEST, ...] | None,   # all, when > 1
            (REQUEST = ResourceRequest.to_wire(), or an index into submit_desc.requests)
            "pin": None | "taskset" | "omp", "priority": int,
            "time_limit": float | None, "crash_limit": int > 0 | "never-restart" |
            "unlimited", "task_dir": bool, "stdin": bytes | None}

Every key of TASK but `id`, `program.args` and `resources` may be left out for its default
(deps [], env {}, cwd = submit_dir, stdout/stderr null = discarded, pin null, priority 0,
time_limit null, crash_limit 5, task_dir false, stdin null): a 100,000-task graph must
fit one 16 MiB frame. A client wanting HyperQueue's default outputs sends the paths
`%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout` / `.stderr` itself. Paths are stored as written
and resolved when the task starts (graphs.md §1.6).

The table form of `submit_desc` (`hyperq.transport.schemas.GraphTableWire`, told apart by
its `ids` key) carries the same tasks with every distinct value sent once: the Python API
and `hq job submit-file` send it, because decoding and checking 100,000 task maps cost the
server more than a second. Its values are checked once per distinct value (each shape,
request and argv list), the per-task columns by msgspec in C, and the descriptions it
becomes are those of the task-map form.

Reply: {"job": <id>}. Every field is checked here and a bad one gets an error naming it;
the graph rules (duplicates, deps, the job) are the model's (`Model.submit_graph`).

Also here: `task-explain` {"job": int | "last", "task": int} (graphs.md §3) and the
stream `job-notifications` {"job": int} behind `hq submit --wait --on-notify` (§4).
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator, Mapping
from typing import Any

import trio

from hyperq.common.errors import HqError
from hyperq.common.resources import ResourceRequest
from hyperq.server.core import ServerCore
from hyperq.server.model.events import TaskNotified
from hyperq.server.model.explain import explain_task
from hyperq.transport import schemas
from hyperq.transport.peer import PeerConnection

MAX_TASK_ID = 2**32 - 1
# Completion arrives as persisted events too; this bounds the wait if one is missed
# (e.g. a subscription cut off for reading too slowly).
CHECK_PERIOD = 1.0
_PINS = (None, "taskset", "omp")


class GraphRequestError(HqError):
    """A field of a `submit-graph` request is malformed."""


def _fail(where: str, what: str) -> GraphRequestError:
    return GraphRequestError(f"Invalid submit-graph request: {where}: {what}")


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, f"expected an integer in {low}..{high}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "expected a string")
    return value


def _output(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"path", "rm_if_finished"}:
        raise _fail(where, "expected null or {path, rm_if_finished}")
    if not isinstance(value["rm_if_finished"], bool):
        raise _fail(f"{where}.rm_if_finished", "expected a bool")
    return {"path": _str(value["path"], f"{where}.path"), "rm_if_finished": value["rm_if_finished"]}


def _program(value: Any, where: str, submit_dir: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, "expected a map")
    args = value.get("args")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _fail(f"{where}.args", "expected a list of strings")
    env = value.get("env", {})
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise _fail(f"{where}.env", "expected a map of strings")
    return {
        "args": list(args),
        "env": dict(env),
        "cwd": _str(value.get("cwd", submit_dir), f"{where}.cwd"),
        "stdout": _output(value.get("stdout"), f"{where}.stdout"),
        "stderr": _output(value.get("stderr"), f"{where}.stderr"),
    }


def _request(value: Any, where: str, seen: dict[Any, list[Any]]) -> list[Any]:
    """The request's wire form, one shared object per distinct request; an integer is an
    index into `submit_desc.requests` (`seen` holds that table under int keys)."""
    if isinstance(value, int) and not isinstance(value, bool):
        table_wire = seen.get(value)
        if table_wire is None:
            raise _fail(where, "no such index in submit_desc.requests")
        return table_wire
    key = repr(value)
    wire = seen.get(key)
    if wire is None:
        try:
            wire = seen[key] = ResourceRequest.from_wire(value).to_wire()
        except (TypeError, ValueError) as error:
            raise _fail(where, str(error)) from None
    return wire


def check_task(
    raw: Any, index: int, requests: dict[Any, list[Any]], submit_dir: str
) -> dict[str, Any]:
    """One TASK of the request, checked field by field, as a clean map with every key
    (a missing optional key takes its default)."""
    where = f"submit_desc.tasks[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, "expected a map")
    deps = raw.get("deps", [])
    if not isinstance(deps, list):
        raise _fail(f"{where}.deps", "expected a list of task IDs")
    task: dict[str, Any] = {
        "id": _int(raw.get("id"), f"{where}.id", 0, MAX_TASK_ID),
        "deps": [_int(d, f"{where}.deps", 0, MAX_TASK_ID) for d in deps],
        "program": _program(raw.get("program"), f"{where}.program", submit_dir),
        "resources": _request(raw.get("resources"), f"{where}.resources", requests),
    }
    variants = raw.get("variants")
    if variants is not None:
        if not isinstance(variants, list) or not variants:
            raise _fail(f"{where}.variants", "expected a non-empty list")
        task["variants"] = [
            _request(v, f"{where}.variants[{i}]", requests) for i, v in enumerate(variants)
        ]
    pin = raw.get("pin")
    if pin not in _PINS:
        raise _fail(f"{where}.pin", "expected null, taskset or omp")
    task["pin"] = pin
    task["priority"] = _int(raw.get("priority", 0), f"{where}.priority", -(2**31), 2**31 - 1)
    time_limit = raw.get("time_limit")
    if time_limit is not None and (
        isinstance(time_limit, bool) or not isinstance(time_limit, int | float) or time_limit < 0
    ):
        raise _fail(f"{where}.time_limit", "expected null or seconds")
    task["time_limit"] = time_limit
    crash_limit = raw.get("crash_limit", 5)
    if crash_limit not in ("never-restart", "unlimited"):
        _int(crash_limit, f"{where}.crash_limit", 1, 65535)
    task["crash_limit"] = crash_limit
    task_dir = raw.get("task_dir", False)
    if not isinstance(task_dir, bool):
        raise _fail(f"{where}.task_dir", "expected a bool")
    task["task_dir"] = task_dir
    stdin = raw.get("stdin")
    if stdin is not None and not isinstance(stdin, bytes):
        raise _fail(f"{where}.stdin", "expected null or bytes")
    task["stdin"] = stdin
    return task


def _shape_template(
    shape: schemas.GraphShapeWire,
    where: str,
    requests: dict[Any, list[Any]],
    submit_dir: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One shape of a graph table, checked: (program without args, the other keys of
    the description without those at their defaults)."""

    def output(value: schemas.OutputWire | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {"path": value.path, "rm_if_finished": value.rm_if_finished}

    program = {
        "env": shape.env,
        "cwd": shape.cwd if shape.cwd is not None else submit_dir,
        "stdout": output(shape.stdout),
        "stderr": output(shape.stderr),
    }
    rest: dict[str, Any] = {"resources": _request(shape.resources, f"{where}.resources", requests)}
    if shape.variants is not None:
        if not shape.variants:
            raise _fail(f"{where}.variants", "expected a non-empty list")
        rest["variants"] = [
            _request(v, f"{where}.variants[{i}]", requests) for i, v in enumerate(shape.variants)
        ]
    if shape.pin not in _PINS:
        raise _fail(f"{where}.pin", "expected null, taskset or omp")
    if shape.pin is not None:
        rest["pin"] = shape.pin
    if shape.priority:
        rest["priority"] = shape.priority
    time_limit = shape.time_limit
    if time_limit is not None:
        if not math.isfinite(time_limit) or time_limit < 0:
            raise _fail(f"{where}.time_limit", "expected null or seconds")
        rest["time_limit"] = time_limit
    crash_limit = shape.crash_limit
    if crash_limit not in ("never-restart", "unlimited"):
        _int(crash_limit, f"{where}.crash_limit", 1, 65535)
    if crash_limit != 5:
        rest["crash_limit"] = crash_limit
    if shape.task_dir:
        rest["task_dir"] = True
    return program, rest


def check_table(raw: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """A `submit_desc` in table form → (submit_dir, stream_path, the table as the model
    and the journal keep it: see `hyperq.server.model.graph.expand_table`). Every value
    is checked once here; raises SchemaError or GraphRequestError naming the bad field."""
    table = schemas.convert(raw, schemas.GraphTableWire, "submit_desc")
    where = "submit_desc"
    submit_dir = table.submit_dir
    count = len(table.ids)
    for name in ("argv_of", "shape_of", "dep_counts"):
        column = getattr(table, name)
        if column is not None and len(column) != count:
            raise _fail(f"{where}.{name}", f"expected {count} items, one per task")
    for name, column, size in (
        ("argv_of", table.argv_of, len(table.argvs)),
        ("shape_of", table.shape_of, len(table.shapes)),
    ):
        top = (max(column) if column else -1) if column is not None else (0 if count else -1)
        if top >= size:
            raise _fail(f"{where}.{name}", f"index {top} is not in {name[:-3]}s")
    dep_counts = table.dep_counts
    deps = table.deps
    if (sum(dep_counts) if dep_counts is not None else 0) != len(deps):
        raise _fail(f"{where}.deps", "expected as many IDs as dep_counts add up to")
    stdins = []
    for number, (index, stdin) in enumerate(table.stdins):
        if index >= count:
            raise _fail(f"{where}.stdins[{number}]", f"no task {index} in this submit")
        stdins.append([index, stdin])
    requests: dict[Any, list[Any]] = {}
    for number, wire in enumerate(table.requests):
        requests[number] = _request(wire, f"{where}.requests[{number}]", requests)
    templates = []
    for number, shape in enumerate(table.shapes):
        program, rest = _shape_template(shape, f"{where}.shapes[{number}]", requests, submit_dir)
        templates.append({"program": program, **rest})
    out: dict[str, Any] = {"ids": table.ids, "argvs": table.argvs, "templates": templates}
    if table.argv_of is not None:
        out["argv_of"] = table.argv_of
    if table.shape_of is not None:
        out["shape_of"] = table.shape_of
    if dep_counts is not None and deps:
        out["dep_counts"] = dep_counts
        out["deps"] = deps
    if stdins:
        out["stdins"] = stdins
    return submit_dir, table.stream_path, out


def _interner() -> Any:
    """Equal programs of a graph (often all of them but their IDs) become one shared map:
    a copy per task would cost the server memory in proportion to the graph.

    Paths stay as written: graph tasks get no stage-1 resolution at submit, every
    placeholder is filled when the task starts (graphs.md §1.6)."""
    programs: dict[tuple[Any, ...], dict[str, Any]] = {}

    def intern(program: dict[str, Any]) -> dict[str, Any]:
        out, err = program["stdout"], program["stderr"]
        key = (
            program["cwd"],
            None if out is None else (out["path"], out["rm_if_finished"]),
            None if err is None else (err["path"], err["rm_if_finished"]),
            tuple(program["args"]),
            tuple(program["env"].items()),
        )
        return programs.setdefault(key, program)

    return intern


async def submit_graph(core: ServerCore, request: Mapping[str, Any]) -> dict[str, Any]:
    job_id = request.get("job")
    if job_id is not None:
        _int(job_id, "job", 0, MAX_TASK_ID)
    job_desc = request.get("job_desc") or {}
    if not isinstance(job_desc, Mapping):
        raise _fail("job_desc", "expected a map")
    name = job_desc.get("name")
    if name is not None:
        _str(name, "job_desc.name")
    max_fails = job_desc.get("max_fails")
    if max_fails is not None:
        _int(max_fails, "job_desc.max_fails", 0, 2**63 - 1)
    desc = request.get("submit_desc")
    if not isinstance(desc, Mapping):
        raise _fail("submit_desc", "expected a map")
    if "ids" in desc:
        try:
            submit_dir, stream_path, table = check_table(desc)
        except schemas.SchemaError as error:
            raise GraphRequestError(f"Invalid submit-graph request: {error.message}") from None
        with _collector_paused():
            job = _commit_descs(
                core, job_id, name, max_fails, submit_dir, stream_path, table, table=True
            )
        await core.durable()
        return {"job": job}
    submit_dir = _str(desc.get("submit_dir"), "submit_desc.submit_dir")
    stream_path = desc.get("stream_path")
    if stream_path is not None:
        _str(stream_path, "submit_desc.stream_path")
    raw_tasks = desc.get("tasks")
    if not isinstance(raw_tasks, list):
        raise _fail("submit_desc.tasks", "expected a list")
    requests: dict[Any, list[Any]] = {}
    table = desc.get("requests") or []
    if not isinstance(table, list):
        raise _fail("submit_desc.requests", "expected a list")
    for number, wire in enumerate(table):
        requests[number] = _request(wire, f"submit_desc.requests[{number}]", requests)
    tasks = []
    for index, raw in enumerate(raw_tasks):
        tasks.append(check_task(raw, index, requests, submit_dir))
        raw_tasks[index] = None  # the decoded original goes now, not with the request
    intern = _interner()
    for task in tasks:
        task["program"] = intern(task["program"])
    with _collector_paused():
        job = _commit_descs(
            core, job_id, name, max_fails, submit_dir, stream_path, tasks, table=False
        )
    await core.durable()
    return {"job": job}


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a graph becomes model objects (no await
    inside, so nothing else runs meanwhile). They all live on, yet young-generation
    passes (every 20,000 allocations, hyperq.server.startup) walked them again and again:
    a quarter of the server's time for 100,000 tasks. After it, one pass suffices."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _commit_descs(
    core: ServerCore,
    job_id: int | None,
    name: str | None,
    max_fails: int | None,
    submit_dir: str,
    stream_path: str | None,
    tasks: Any,
    *,
    table: bool,
) -> int:
    """Stage D, the event, the model: the new tasks' job ID (not durable yet)."""
    model = core.model
    target = job_id if job_id is not None else model.next_job_id
    if stream_path:
        # Workers read a task's `stream_dir`, resolved as for `hq submit --stream`;
        # `stream_path` stays as the client sent it (the journal shows it so).
        bare = {"cwd": submit_dir, "stdout": None, "stderr": None}
        stream_dir = core.resolve_submit(
            {"submit_dir": submit_dir, "program": bare, "stream_path": stream_path}, target
        )["stream_dir"]
        # Each task description carries it: the table's through its shapes.
        for task in tasks["templates"] if table else tasks:
            task["stream_dir"] = stream_dir
    events = (model.submit_graph_table if table else model.submit_graph)(
        submit_dir,
        stream_path,
        tasks,
        now=core.now(),
        job_id=job_id,
        name=None if job_id is not None else name,
        max_fails=None if job_id is not None else max_fails,
    )
    core.commit(events)
    return events[0].job  # type: ignore[attr-defined,no-any-return]


async def task_explain(core: ServerCore, request: Mapping[str, Any]) -> dict[str, Any]:
    """`task-explain` {"job": int | "last", "task": int} → explain_task's map."""
    model = core.model
    job = request.get("job")
    if job == "last":
        job = model.max_job_id
    job_id = _int(job, "job", 0, 2**63 - 1)
    task_id = _int(request.get("task"), "task", 0, MAX_TASK_ID)
    return explain_task(model, job_id, task_id, core.now())


async def job_notifications(
    core: ServerCore, request: Mapping[str, Any], peer: PeerConnection
) -> None:
    """`job-notifications` {"job": int}: for `hq submit --wait --on-notify`. Replies
    {"ok": None}, then {"notify": {"task", "worker", "message"}} per notification of the
    job's tasks in arrival order, then {"done": True} once the job completed (or is gone).
    """
    job_id = _int(request.get("job"), "job", 0, 2**63 - 1)
    model = core.model

    def done() -> bool:
        job = model.jobs.get(job_id)
        return job is None or job.is_completed

    subscription = core.subscribe()

    async def forward(event: Any) -> None:
        if isinstance(event, TaskNotified) and event.job == job_id:
            item = {"task": event.task, "worker": event.worker, "message": event.message}
            await peer.send({"notify": item})

    try:
        await peer.send({"ok": None})
        while not done():
            with trio.move_on_after(CHECK_PERIOD):
                # Any event may complete the job; notifications of the job go out.
                seq_event = await subscription.receive.receive()
                await forward(seq_event[1])
            if subscription.overflowed:
                break
        # Events are published before they are applied: every notification sent
        # before the job completed is queued by now, and goes out before `done`.
        while not subscription.overflowed:
            try:
                seq_event = subscription.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            await forward(seq_event[1])
        await peer.send({"done": True})
    finally:
        core.unsubscribe(subscription)

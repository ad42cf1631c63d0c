"""A job's tasks turned into the server's `submit-graph` request, in its table form
(hyperq.client.graphwire): the one place that knows the wire form of a job.

One job is one request (all task kinds, deps, variants, binary stdin), unless it would not
fit one frame: then the job is opened, its tasks go in several graph submits (a dep may
point to a task of an earlier part), and the job is closed. Values many tasks share (the
argument lists, everything but ID, deps and stdin, the resource requests) are sent once
and looked up once per distinct object, so a 100,000-task job costs ~1 µs per task here.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from hyperq.api.ffi.protocol import JobDescription, ResourceRequest, TaskDescription
from hyperq.api.output import StdioDef
from hyperq.api.task.program import ExternalProgram
from hyperq.api.task.task import Task
from hyperq.client.graphwire import TASK_BYTES, GraphTable
from hyperq.client.session import ClientSession
from hyperq.common import resources as res
from hyperq.common.errors import HqError

DEFAULT_JOB_NAME = "PyAPI job"
# `StdioDef(path=None)` means the CLI's default path (with the `job-<id>` folder).
CLI_DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
CLI_DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"
DEFAULT_CRASH_LIMIT = 5
# Estimated bytes of tasks per request: well under the 16 MiB frame limit.
PART_BUDGET = 14 * 1024 * 1024
_I32 = 2**31


def _float32(value: float) -> float:
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def request_entry(name: str, value: Any) -> res.ResourceRequestEntry:
    """One resource of a `ResourceRequest`: int and float amounts are compact."""
    if isinstance(value, bool):
        raise Exception(f"Invalid amount of resource `{name}`: {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise Exception(f"Invalid amount of resource `{name}`: {value}")
        return res.ResourceRequestEntry(name, value * res.AMOUNT_SCALE)
    if isinstance(value, float):
        # The original computes fractions in float32, so 105.1 gives exactly 105.1.
        units = math.ceil(_float32(_float32(value) * res.AMOUNT_SCALE))
        if units <= 0:
            raise Exception(f"Invalid amount of resource `{name}`: {value}")
        return res.ResourceRequestEntry(name, units)
    if isinstance(value, str):
        return res.parse_request_entry(name, value)
    raise Exception(f"Invalid amount of resource `{name}`: {value!r}")


def resource_request(request: ResourceRequest) -> res.ResourceRequest:
    entries = [
        request_entry(res.check_resource_name(str(name)), value)
        for name, value in request.resources.items()
        # A multi-node task takes whole workers, so it carries no CPU amount.
        if not (request.n_nodes > 0 and name == res.CPUS)
    ]
    min_time = request.min_time.total_seconds() if request.min_time is not None else 0.0
    return res.ResourceRequest(tuple(entries), n_nodes=int(request.n_nodes), min_time=min_time)


def resource_variants(variants: Sequence[ResourceRequest]) -> list[res.ResourceRequest]:
    if not variants:
        return [res.parse_task_request(None)]
    return [resource_request(variant) for variant in variants]


class _RequestWires:
    """Table indexes of the tasks' resource requests, each request converted once per
    table: many tasks share one `ResourceRequest` object, or have none (the default)."""

    def __init__(self, table: GraphTable) -> None:
        self.table = table
        self.default: int | None = None
        # Keyed by the identities of the request objects; the tasks keep them alive.
        self.known: dict[Any, tuple[int, ...]] = {}
        self.alive: list[Any] = []

    def get(self, resources: Any) -> tuple[int, ...]:
        if not resources:
            if self.default is None:
                self.default = self.table.request(res.parse_task_request(None).to_wire())
            return (self.default,)
        key = (
            id(resources)
            if isinstance(resources, ResourceRequest)
            else tuple(id(item) for item in resources)
        )
        found = self.known.get(key)
        if found is None:
            # Kept for the submit: no other object may take a remembered identity.
            self.alive.append(resources)
            variants = [resources] if isinstance(resources, ResourceRequest) else list(resources)
            found = self.known[key] = tuple(
                self.table.request(request.to_wire()) for request in resource_variants(variants)
            )
        return found


def _stdio(stdio: Any, default: str) -> dict[str, Any] | None:
    """A task's stdout/stderr (None, a path or a StdioDef) on the wire."""
    if stdio is None:
        return None
    if isinstance(stdio, StdioDef):
        path = default if stdio.path is None else os.fspath(stdio.path)
        return {"path": path, "rm_if_finished": stdio.on_close == "rm-if-finished"}
    return {"path": os.fspath(stdio), "rm_if_finished": False}


def _stdio_key(stdio: Any) -> Any:
    if stdio is None or type(stdio) is str:
        return stdio
    if isinstance(stdio, StdioDef):
        path = None if stdio.path is None else os.fspath(stdio.path)
        return (path, stdio.on_close)
    return (os.fspath(stdio), "none")


def _crash_limit(value: int | None) -> int | str:
    if value is None:
        return DEFAULT_CRASH_LIMIT
    # The original's limit of 0 fails a task at its first crash.
    return "never-restart" if value == 0 else int(value)


def _check_priority(priority: Any) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise Exception(f"Priority must be an integer, not {priority!r}")
    if not -_I32 <= priority < _I32:
        raise Exception(f"Priority {priority} is out of range")


def _check_args(args: Sequence[Any]) -> None:
    for arg in args:
        if not isinstance(arg, str):
            raise Exception("Task outputs (`hq.Output`) are not supported by hyperq")


def _check_env(env: Mapping[Any, Any]) -> None:
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise Exception(f"Environment variables must be strings: {key!r}={value!r}")


Row = tuple[
    int,  # id
    Sequence[str],  # args
    Mapping[str, str] | None,  # env
    str | None,  # cwd
    Any,  # stdout: None, a path or a StdioDef
    Any,  # stderr
    bytes | None,  # stdin
    Sequence[int],  # deps (IDs)
    bool,  # task_dir
    int,  # priority
    Any,  # resources: None, a ResourceRequest or a sequence of them
    int | None,  # crash_limit
]


def task_rows(tasks: Sequence[Task], client: Any) -> Iterator[Row]:
    """The submitted fields of each task. Programs are read directly; any other task
    goes through its `_build` (functions pickle themselves there)."""
    for task in tasks:
        if type(task) is ExternalProgram:
            deps = task.dependencies
            yield (
                task.task_id,
                task.args,
                task._env,
                task.cwd,
                task._stdout,
                task._stderr,
                task.stdin,
                [dep.task_id for dep in deps] if deps else (),
                task.task_dir,
                task.priority,
                task.resources,
                task.crash_limit,
            )
        else:
            desc = task._build(client)
            yield description_row(desc)


def description_row(task: TaskDescription) -> Row:
    resources = task.resource_request
    return (
        task.id,
        task.args,
        task.env,
        task.cwd,
        task.stdout,
        task.stderr,
        task.stdin,
        task.dependencies,
        task.task_dir,
        task.priority,
        resources or None,
        task.crash_limit,
    )


class _Part:
    """One table being filled, with its lookups of values already in it."""

    def __init__(self, submit_dir: str) -> None:
        self.table = GraphTable(submit_dir)
        self.wires = _RequestWires(self.table)
        self.shapes: dict[Any, int] = {}
        self.argvs: dict[Any, int] = {}
        self.alive: list[Any] = []

    def add(self, row: Row) -> None:
        (
            task_id,
            args,
            env,
            cwd,
            stdout,
            stderr,
            stdin,
            deps,
            task_dir,
            priority,
            resources,
            crash_limit,
        ) = row
        args_key = tuple(args)
        try:
            argv = self.argvs.get(args_key)
        except TypeError:
            _check_args(args)
            raise
        if argv is None:
            _check_args(args)
            argv = self.argvs[args_key] = self.table.argv(args)
        key = (
            cwd or None,
            tuple(env.items()) if env else (),
            stdout if stdout is None or type(stdout) is str else _stdio_key(stdout),
            stderr if stderr is None or type(stderr) is str else _stdio_key(stderr),
            task_dir,
            priority,
            crash_limit,
            resources if resources is None else id(resources),
        )
        try:
            shape = self.shapes.get(key)
        except TypeError:
            _check_env(env or {})  # an unhashable value: not a string
            raise
        if shape is None:
            self.alive.append(resources)  # its identity is in the key
            shape = self.shapes[key] = self.table.shape(_shape(row, self.wires))
        table = self.table
        if deps or stdin:
            table.add(task_id, argv, shape, deps, stdin or None)
        else:
            # `table.add` of a task without deps and stdin, inline: the common case.
            table.ids.append(task_id)
            table.argv_of.append(argv)
            table.shape_of.append(shape)
            table.dep_counts.append(0)
            table.size += TASK_BYTES


def _tables(rows: Iterable[Row], submit_dir: str) -> list[GraphTable]:
    """The tasks in table form: one table per part of at most PART_BUDGET bytes."""
    tables: list[GraphTable] = []
    known: set[int] = set()
    part = _Part(submit_dir)
    for row in rows:
        task_id, deps, priority = row[0], row[7], row[9]
        if task_id in known:
            raise Exception("Non unique IDs in submitted task graph")
        # The server takes deps on earlier tasks only; the API creates them in order.
        if deps:
            for dep in deps:
                if dep not in known:
                    raise Exception("Invalid dependency id")
        known.add(task_id)
        if type(priority) is not int:
            _check_priority(priority)
        part.add(row)
        if part.table.size > PART_BUDGET:
            # The task goes into the next part (with its values); alone, it is too big.
            if len(part.table) > 1:
                part.table.remove_last()
                tables.append(part.table)
                part = _Part(submit_dir)
                part.add(row)
            if part.table.size > PART_BUDGET:
                raise Exception(f"Task {task_id} is too large to be submitted")
    tables.append(part.table)
    return tables


def _shape(row: Row, wires: _RequestWires) -> dict[str, Any]:
    _id, _args, env, cwd, stdout, stderr, _stdin, _deps, task_dir, priority = row[:10]
    _check_priority(priority)
    variants = wires.get(row[10])
    shape: dict[str, Any] = {"resources": variants[0]}
    if len(variants) > 1:
        shape["variants"] = list(variants)
    if env:
        _check_env(env)
        shape["env"] = dict(env)
    if cwd:
        shape["cwd"] = os.fspath(cwd)
    if stdout is not None:
        shape["stdout"] = _stdio(stdout, CLI_DEFAULT_STDOUT)
    if stderr is not None:
        shape["stderr"] = _stdio(stderr, CLI_DEFAULT_STDERR)
    if priority:
        shape["priority"] = priority
    crash_limit = _crash_limit(row[11])
    if crash_limit != DEFAULT_CRASH_LIMIT:
        shape["crash_limit"] = crash_limit
    if task_dir:
        shape["task_dir"] = True
    return shape


def submit_job(session: ClientSession, job: JobDescription, submit_dir: str) -> int:
    """Send the job; returns its ID. Refusals raise `Exception` with the server's text."""
    rows = (description_row(task) for task in job.tasks)
    return submit_rows(session, job.name, job.max_fails, rows, submit_dir)


def submit_rows(
    session: ClientSession,
    name: str | None,
    max_fails: int | None,
    rows: Iterable[Row],
    submit_dir: str,
) -> int:
    job_desc = {"name": name or DEFAULT_JOB_NAME, "max_fails": max_fails}
    try:
        # A bad resource request (`cpus="3 sideways"`) raises HqError here already.
        tables = _tables(rows, submit_dir)
        if len(tables) == 1:
            reply = session.request(
                "submit-graph", job=None, job_desc=job_desc, submit_desc=tables[0].wire()
            )
            return int(reply["job"])
        reply = session.request("job-open", **job_desc)
        job_id = int(reply["job"])
        selector = {"kind": "ids", "ranges": [[job_id, job_id, 1]]}
        try:
            for table in tables:
                session.request(
                    "submit-graph",
                    job=job_id,
                    job_desc={"name": None, "max_fails": None},
                    submit_desc=table.wire(),
                )
        except HqError:
            # Half a job must not run: cancel what arrived, then close it.
            for op in ("job-cancel", "job-close"):
                with contextlib.suppress(HqError):
                    session.request(op, selector=selector)
            raise
        session.request("job-close", selector=selector)
        return job_id
    except HqError as error:
        raise Exception(error.message) from None

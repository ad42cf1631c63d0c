"""Job definition files (`hq job submit-file`, graphs.md §1): TOML → one submit request.

Pure: takes the file's text, returns the request to send (a `submit-graph` for
`[[task]]`, a plain `submit` for `[array]`); every mistake is an HqError with the
original's wording: stage A (TOML and types) and B (structure) prefixed
`Deserialization error: `, stage C (the graph) without a prefix. No I/O here.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from hyperq.cli import jobtoml
from hyperq.common.duration import parse_duration
from hyperq.common.errors import HqError
from hyperq.common.idrange import IdRanges
from hyperq.common.placeholders import STREAM_MARK
from hyperq.common.resources import (
    AMOUNT_SCALE,
    DEFAULT_WEIGHT,
    AllocationPolicy,
    ResourceRequest,
    ResourceRequestEntry,
    parse_request_entry,
)

DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"
MAX_ID = 2**32 - 1

_JOB_KEYS = ("name", "max_fails", "stream", "data_layer", "task", "array")
_CONFIG_KEYS = (
    "command", "env", "cwd", "stdout", "stderr", "stdin", "pin", "task_dir", "time_limit",
    "priority", "crash_limit", "request",
)  # fmt: skip
_TASK_KEYS = (*_CONFIG_KEYS, "id", "deps")
_TASK_KEY_SET = frozenset(_TASK_KEYS)
_ARRAY_KEYS = (*_CONFIG_KEYS, "ids", "entries")
_REQUEST_KEYS = ("resources", "n_nodes", "time_request", "weight")


class JobFileError(HqError):
    """Stages A and B: the file is not a valid job definition."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Deserialization error: {message}")


@dataclass(frozen=True)
class JobFileRequest:
    """What to send: `op` ("submit-graph" or "submit") and its arguments."""

    op: str
    job_desc: dict[str, Any]
    submit_desc: dict[str, Any]
    task_count: int


# ---------------------------------------------------------------------------------------
# stage A: types


def _keys(table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            expected = ", ".join(f"`{k}`" for k in allowed)
            raise JobFileError(f"unknown field `{key}`, expected one of {expected}")


def _type_error(key: str, value: Any, expected: str) -> JobFileError:
    kind = type(value).__name__
    return JobFileError(f"invalid type: {kind} `{value!r}`, expected {expected} for key `{key}`")


def _string(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise _type_error(key, value, "a string")
    return value


def _int(table: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(key, value, "an integer")
    if not low <= value <= high:
        raise JobFileError(
            f"invalid value: integer `{value}`, expected {low}..{high} for key `{key}`"
        )
    return value


def _bool(table: Mapping[str, Any], key: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise _type_error(key, value, "a boolean")
    return value


def _strings(table: Mapping[str, Any], key: str) -> list[str] | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _type_error(key, value, "a sequence of strings")
    return value


def _duration(table: Mapping[str, Any], key: str) -> float | None:
    text = _string(table, key)
    if text is None:
        return None
    # humantime only: `HH:MM:SS` is `hq submit`'s, not the job file's.
    if ":" in text:
        raise JobFileError(f"invalid duration `{text}` for key `{key}`")
    try:
        return parse_duration(text)
    except HqError as error:
        raise JobFileError(f"{error.message} for key `{key}`") from None


def _output(table: Mapping[str, Any], key: str, default: str) -> dict[str, Any] | None:
    value = table.get(key)
    if value is None:
        return {"path": default, "rm_if_finished": False}
    if value == "none":
        return None
    if isinstance(value, str):
        return {"path": value, "rm_if_finished": False}
    if isinstance(value, dict):
        _keys(value, ("path", "on_close"))
        path = _string(value, "path")
        on_close = _string(value, "on_close")
        if path is None:
            raise JobFileError("missing field `path`")
        if on_close is None:
            raise JobFileError("missing field `on_close`")
        if on_close not in ("none", "rm-if-finished"):
            raise JobFileError(f"unknown variant `{on_close}`, expected `none` or `rm-if-finished`")
        return {"path": path, "rm_if_finished": on_close == "rm-if-finished"}
    raise _type_error(key, value, "`none`, a path or {path, on_close}")


def _crash_limit(table: Mapping[str, Any]) -> int | str:
    value = table.get("crash_limit", 5)
    if isinstance(value, str) and value in ("never-restart", "unlimited"):
        return value
    if isinstance(value, str):
        if not value.isdigit():
            raise JobFileError(f"Invalid crash limit: {value}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error("crash_limit", value, "an integer or a string")
    if value == 0:
        raise JobFileError("Crash limit cannot be 0. Use `never-restart` or `unlimited` instead.")
    if not 0 < value <= 65535:
        raise JobFileError(f"Invalid crash limit: {value}")
    return value


def _amount_entry(name: str, value: Any) -> ResourceRequestEntry:
    if isinstance(value, bool):
        raise _type_error(name, value, "an integer, a float or a string")
    if value == 0 and isinstance(value, int | float):
        # The original does not refuse zero amounts in job files (graphs.md §1.3).
        return ResourceRequestEntry(name, 0, AllocationPolicy.COMPACT)
    try:
        if isinstance(value, int):
            return parse_request_entry(name, str(value))
        if isinstance(value, float):
            # The original goes through a 32-bit float rounded to 4 decimals.
            scaled = round(value * AMOUNT_SCALE)
            whole, frac = divmod(scaled, AMOUNT_SCALE)
            text = str(whole) if frac == 0 else f"{whole}.{str(frac).rjust(4, '0').rstrip('0')}"
            return parse_request_entry(name, text)
        if isinstance(value, str):
            return parse_request_entry(name, value)
    except HqError as error:
        raise JobFileError(error.message) from None
    raise _type_error(name, value, "an integer, a float or a string")


def _variant(table: Any) -> ResourceRequest:
    if not isinstance(table, dict):
        raise _type_error("request", table, "a table")
    _keys(table, _REQUEST_KEYS)
    resources = table.get("resources", {})
    if not isinstance(resources, dict):
        raise _type_error("resources", resources, "a table")
    entries = tuple(_amount_entry(name, value) for name, value in resources.items())
    n_nodes = _int(table, "n_nodes", 0, 2**16 - 1) or 0
    min_time = _duration(table, "time_request") or 0.0
    weight = table.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise _type_error("weight", weight, "a number")
    if weight <= 0:
        raise JobFileError("Resource weight has to be positive number")
    return ResourceRequest(
        entries, n_nodes=n_nodes, min_time=min_time, weight=round(weight * DEFAULT_WEIGHT)
    )


def _config(table: Mapping[str, Any], submit_dir: str, streamed: bool) -> dict[str, Any]:
    """The shared task keys of `[[task]]` and `[array]` as the server's task fields."""
    command = _strings(table, "command")
    if command is None:
        raise JobFileError("missing field `command`")
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise _type_error("env", env, "a table of strings")
    cwd = _string(table, "cwd")
    # A channel not given goes to the job's stream, as with `hq submit --stream`.
    stdout = _output(table, "stdout", STREAM_MARK if streamed else DEFAULT_STDOUT)
    stderr = _output(table, "stderr", STREAM_MARK if streamed else DEFAULT_STDERR)
    stdin = _string(table, "stdin")
    pin = table.get("pin", "none")
    if pin not in ("none", "taskset", "omp"):
        raise JobFileError(f"unknown variant `{pin}`, expected one of `none`, `taskset`, `omp`")
    requests = table.get("request")
    if requests is None:
        variants = [ResourceRequest((parse_request_entry("cpus", "1"),))]
    elif not isinstance(requests, list) or not requests:
        raise _type_error("request", requests, "a non-empty sequence of tables")
    else:
        variants = [_variant(item) for item in requests]
    task: dict[str, Any] = {
        "program": {
            "args": command,
            "env": dict(env),
            "cwd": cwd if cwd is not None else submit_dir,
            "stdout": stdout,
            "stderr": stderr,
        },
        "resources": variants[0].to_wire(),
        "pin": None if pin == "none" else pin,
        "priority": _int(table, "priority", -(2**31), 2**31 - 1) or 0,
        "time_limit": _duration(table, "time_limit"),
        "crash_limit": _crash_limit(table),
        "task_dir": _bool(table, "task_dir") or any(v.n_nodes > 0 for v in variants),
        "stdin": stdin.encode() if stdin else None,
    }
    if len(variants) > 1:
        task["variants"] = [v.to_wire() for v in variants]
    return task


# ---------------------------------------------------------------------------------------
# stages B and C, and the request


def build_graph(tasks: list[tuple[int, list[int], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Stage C: (id, deps, fields) in file order → tasks in topological order (dep-free
    tasks in file order first, then each task once all its deps were emitted)."""
    ids = [task_id for task_id, _deps, _fields in tasks]
    deps_of = [deps for _id, deps, _fields in tasks]
    fields_of = [fields for _id, _deps, fields in tasks]
    return _graph_tasks(ids, deps_of, fields_of, _topological_order(ids, deps_of))


def _topological_order(ids: list[int], deps_of: list[list[int]]) -> list[int]:
    """Stage C on parallel lists: the indexes of the tasks in topological order."""
    count = len(ids)
    if len(set(ids)) != count:
        seen: set[int] = set()
        for task_id in ids:
            if task_id in seen:
                raise HqError(f"Task {task_id} is defined multiple times")
            seen.add(task_id)
    missing = [0] * count
    dependants: dict[int, list[int]] = {}
    waiting_on = dependants.get
    order: list[int] = []
    for index, deps in enumerate(deps_of):
        if not deps:
            order.append(index)
            continue
        unique = deps if len(deps) == 1 else set(deps)
        missing[index] = len(unique)
        for dep in unique:
            waiting = waiting_on(dep)
            if waiting is None:
                dependants[dep] = [index]
            else:
                waiting.append(index)
    emit = order.append
    for index in order:  # grows while it is walked
        for dependant in waiting_on(ids[index], ()):
            left = missing[dependant] - 1
            missing[dependant] = left
            if not left:
                emit(dependant)
    if len(order) != count:
        stuck = next(ids[index] for index, left in enumerate(missing) if left > 0)
        raise HqError(f"Task {stuck} is part of dependency cycle or has an invalid dependencies")
    return order


def _graph_tasks(
    ids: list[int], deps_of: list[list[int]], fields_of: list[dict[str, Any]], order: list[int]
) -> list[dict[str, Any]]:
    """The request's task list (the one place that knows its wire form)."""
    out = []
    append = out.append
    for index in order:
        task = fields_of[index].copy()
        task["id"] = ids[index]
        deps = deps_of[index]
        if deps:
            task["deps"] = deps
        append(task)
    return out


# Keys the server defaults when absent (hyperq.server.graphapi): leaving them out keeps
# a large graph's request within one frame.
_TASK_DEFAULTS = {
    "pin": None, "priority": 0, "time_limit": None, "crash_limit": 5, "task_dir": False,
    "stdin": None,
}  # fmt: skip


def _compact(fields: dict[str, Any], submit_dir: str) -> dict[str, Any]:
    """A task's fields without the keys at their defaults (shared by equal tasks)."""
    out = {k: v for k, v in fields.items() if k not in _TASK_DEFAULTS or _TASK_DEFAULTS[k] != v}
    program = dict(fields["program"])
    if not program["env"]:
        del program["env"]
    if program["cwd"] == submit_dir:
        del program["cwd"]
    out["program"] = program
    return out


def parse_job_file(text: str, *, submit_dir: str, job: int | None = None) -> JobFileRequest:
    """The whole file → the request; raises HqError with the spec's messages."""
    try:
        # Arrays and inline tables may be shared between tasks: nothing here changes them.
        data = jobtoml.loads(text, shared=True)
    except tomllib.TOMLDecodeError as error:
        raise JobFileError(str(error)) from None
    except ValueError as error:
        # Python's int() refuses numbers of more than 4,300 digits; the file is still bad
        # TOML input for the user, not an internal error.
        raise JobFileError(str(error)) from None
    _keys(data, _JOB_KEYS)
    name = _string(data, "name")
    max_fails = _int(data, "max_fails", 0, 2**63 - 1)
    stream = _string(data, "stream")
    _bool(data, "data_layer")
    raw_tasks = data.get("task")
    if raw_tasks is not None and not isinstance(raw_tasks, list):
        raise _type_error("task", raw_tasks, "an array of tables")
    array = data.get("array")
    if array is not None and not isinstance(array, dict):
        raise _type_error("array", array, "a table")
    task_ids: list[int | None] = []
    deps_of: list[list[int]] = []
    fields_of: list[dict[str, Any]] = []
    # Tasks that differ only in `id` and `deps` (a fan-out of 100,000 equal tasks) are
    # checked once and share one fields map in the request.
    seen: dict[str, dict[str, Any]] = {}
    seen_same: dict[tuple[Any, ...], dict[str, Any]] = {}
    # Distinct resource requests go once into a table that tasks refer to by index.
    requests: list[Any] = []
    table: dict[str, int] = {}

    def index_of(wire: Any) -> int:
        key = repr(wire)
        if key not in table:
            table[key] = len(requests)
            requests.append(wire)
        return table[key]

    streamed = stream is not None
    for raw in raw_tasks or []:
        if type(raw) is not dict:
            raise _type_error("task", raw, "a table")
        if not _TASK_KEY_SET.issuperset(raw):
            _keys(raw, _TASK_KEYS)
        # The parsed file is ours: taking `id` and `deps` out leaves the shared part,
        # whose repr (it tells 1, 1.0 and true apart) finds equal tasks.
        task_id = raw.pop("id", None)
        if task_id is not None and (type(task_id) is not int or not 0 <= task_id <= MAX_ID):
            _int({"id": task_id}, "id", 0, MAX_ID)  # raises, with the message
        deps = raw.pop("deps", None)
        if deps is None:
            deps = []
        elif type(deps) is not list:
            raise _type_error("deps", deps, "a sequence of task IDs")
        else:
            for dep in deps:
                if type(dep) is not int or not 0 <= dep <= MAX_ID:
                    for item in deps:  # the first bad one raises, with its message
                        _int({"deps": item}, "deps", 0, MAX_ID)
        # The fast TOML path gives tasks read from equal lines the very same values: the
        # keys and the values' identities (all alive in `data`) find them without a repr.
        same = (*raw, *map(id, raw.values()))
        fields = seen_same.get(same)
        if fields is None:
            key = repr(raw)
            fields = seen.get(key)
            if fields is None:
                fields = _compact(_config(raw, submit_dir, streamed), submit_dir)
                fields["resources"] = index_of(fields["resources"])
                if "variants" in fields:
                    fields["variants"] = [index_of(v) for v in fields["variants"]]
                seen[key] = fields
            seen_same[same] = fields
        task_ids.append(task_id)
        deps_of.append(deps)
        fields_of.append(fields)
    array_fields = None
    ids: str | None = None
    entries: list[str] | None = None
    if array is not None:
        _keys(array, _ARRAY_KEYS)
        ids = _string(array, "ids")
        entries = _strings(array, "entries")
        array_fields = _config(array, submit_dir, stream is not None)
    # stage B
    if not task_ids and array is None:
        raise JobFileError("No tasks defined")
    if task_ids and array is not None:
        raise JobFileError("Definition of array job and individual task cannot be mixed")
    job_desc = {"name": name if name is not None else "", "max_fails": max_fails}
    if job is not None:
        job_desc = {"name": None, "max_fails": None}
    if array_fields is not None:
        return _array_request(array_fields, ids, entries, job_desc, submit_dir, stream)
    # stage C
    if None in task_ids:
        top = max((task_id for task_id in task_ids if task_id is not None), default=0)
        for index, task_id in enumerate(task_ids):
            if task_id is None:
                top += 1
                task_ids[index] = top
    numbered = cast(list[int], task_ids)
    tasks = _graph_tasks(numbered, deps_of, fields_of, _topological_order(numbered, deps_of))
    submit_desc = {
        "submit_dir": submit_dir,
        "stream_path": stream,
        "requests": requests,
        "tasks": tasks,
    }
    return JobFileRequest("submit-graph", job_desc, submit_desc, len(tasks))


def _array_request(
    fields: dict[str, Any],
    ids: str | None,
    entries: list[str] | None,
    job_desc: dict[str, Any],
    submit_dir: str,
    stream: str | None,
) -> JobFileRequest:
    if ids is None and entries is None:
        raise JobFileError("One of attributes of array must be defined: 'ids', 'entries'")
    if ids is not None:
        try:
            ranges = IdRanges.parse(ids)
        except (HqError, ValueError) as error:
            raise JobFileError(f"invalid ids `{ids}`: {error}") from None
        task_ids = list(ranges)
        if entries is not None and len(entries) != len(task_ids):
            raise JobFileError("Items 'ids' and 'entries' does not match")
    else:
        assert entries is not None
        task_ids = list(range(len(entries)))
    task_entries: list[str] | None = None
    items = [[i, i, 1] for i in task_ids]
    if entries is not None:
        # The model looks entries up by ID: one slot per ID up to the highest.
        top = max(task_ids, default=-1)
        task_entries = [""] * (top + 1)
        for task_id, entry in zip(task_ids, entries, strict=True):
            task_entries[task_id] = entry
    elif ids is not None:
        items = [list(item) for item in ranges.items]
    variants = fields.pop("variants", None)
    if variants is not None:
        fields["variants"] = variants
    submit_desc = {
        "submit_dir": submit_dir,
        "stream_path": stream,
        "tasks": {"ids": items, "entries": task_entries, "entry_offset": 0},
        **fields,
    }
    return JobFileRequest("submit", job_desc, submit_desc, len(task_ids))

"""A `JobDescription` turned into the server's `submit-graph` request: the one place that
knows the wire form of a job.

One job is one request (all task kinds, deps, variants, binary stdin), unless it would not
fit one frame: then the job is opened, its tasks go in several graph submits (a dep may
point to a task of an earlier part), and the job is closed. Keys that hold the server's
defaults are left out, so a 100,000-task job stays small.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from collections.abc import Sequence
from typing import Any

from hyperq.api.ffi.protocol import JobDescription, ResourceRequest, TaskDescription
from hyperq.api.output import StdioDef
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
    """Wire forms of the tasks' resource requests, each computed once per submit: many
    tasks share one `ResourceRequest` object, or have none (the default)."""

    def __init__(self) -> None:
        self.default = res.parse_task_request(None).to_wire()
        # Keyed by the tuple of request objects; the tasks keep them alive meanwhile.
        self.known: dict[tuple[int, ...], list[list[Any]]] = {}

    def get(self, variants: Sequence[ResourceRequest]) -> list[list[Any]]:
        if not variants:
            return [self.default]
        key = tuple(id(variant) for variant in variants)
        wires = self.known.get(key)
        if wires is None:
            wires = self.known[key] = [r.to_wire() for r in resource_variants(variants)]
        return wires


def _stdio(stdio: StdioDef | None, default: str) -> dict[str, Any] | None:
    if stdio is None:
        return None
    path = default if stdio.path is None else os.fspath(stdio.path)
    return {"path": path, "rm_if_finished": stdio.on_close == "rm-if-finished"}


def _crash_limit(value: int | None) -> int | str:
    if value is None:
        return DEFAULT_CRASH_LIMIT
    # The original's limit of 0 fails a task at its first crash.
    return "never-restart" if value == 0 else int(value)


def _check_task(task: TaskDescription) -> None:
    # Runs per task of jobs of 100,000s of tasks: the common case is one pass each.
    if not all(type(arg) is str for arg in task.args):
        for arg in task.args:
            if not isinstance(arg, str):
                raise Exception("Task outputs (`hq.Output`) are not supported by hyperq")
    if task.env:
        for key, value in task.env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise Exception(f"Environment variables must be strings: {key!r}={value!r}")
    priority = task.priority
    if type(priority) is not int:
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise Exception(f"Priority must be an integer, not {priority!r}")
    if not -_I32 <= priority < _I32:
        raise Exception(f"Priority {priority} is out of range")


def graph_task(task: TaskDescription, wires: _RequestWires | None = None) -> dict[str, Any]:
    """One TASK of the `submit-graph` request."""
    _check_task(task)
    variants = (wires or _RequestWires()).get(task.resource_request)
    program: dict[str, Any] = {"args": list(task.args)}
    if task.env:
        program["env"] = dict(task.env)
    if task.cwd:
        program["cwd"] = task.cwd
    if task.stdout is not None:
        program["stdout"] = _stdio(task.stdout, CLI_DEFAULT_STDOUT)
    if task.stderr is not None:
        program["stderr"] = _stdio(task.stderr, CLI_DEFAULT_STDERR)
    wire: dict[str, Any] = {
        "id": task.id,
        "program": program,
        "resources": variants[0],
    }
    if task.dependencies:
        wire["deps"] = list(task.dependencies)
    if len(variants) > 1:
        wire["variants"] = variants
    if task.priority:
        wire["priority"] = task.priority
    crash_limit = _crash_limit(task.crash_limit)
    if crash_limit != DEFAULT_CRASH_LIMIT:
        wire["crash_limit"] = crash_limit
    if task.task_dir:
        wire["task_dir"] = True
    if task.stdin:
        wire["stdin"] = bytes(task.stdin)
    return wire


def _text_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _estimated_size(task: dict[str, Any]) -> int:
    """An upper estimate of the task's CBOR size, to split jobs that would not fit."""
    program = task["program"]
    size = 160 + len(task.get("stdin") or b"") + 9 * len(task.get("deps") or ())
    size += sum(_text_size(arg) + 9 for arg in program["args"])
    size += sum(_text_size(k) + _text_size(v) + 18 for k, v in (program.get("env") or {}).items())
    size += _text_size(program.get("cwd") or "")
    for stream in ("stdout", "stderr"):
        size += _text_size((program.get(stream) or {}).get("path", ""))
    size += 24 * len(task.get("variants") or ()) * (1 + len(task["resources"][0]))
    return size


def _parts(tasks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    parts: list[list[dict[str, Any]]] = [[]]
    used = 0
    for task in tasks:
        size = _estimated_size(task)
        if parts[-1] and used + size > PART_BUDGET:
            parts.append([])
            used = 0
        parts[-1].append(task)
        used += size
    return parts


def submit_job(session: ClientSession, job: JobDescription, submit_dir: str) -> int:
    """Send the job; returns its ID. Refusals raise `Exception` with the server's text."""
    known: set[int] = set()
    for task in job.tasks:
        if task.id in known:
            raise Exception("Non unique IDs in submitted task graph")
        known.add(task.id)
    seen: set[int] = set()
    for task in job.tasks:
        # The server takes deps on earlier tasks only; the API creates them in order.
        if any(dep not in seen for dep in task.dependencies):
            raise Exception("Invalid dependency id")
        seen.add(task.id)

    job_desc = {"name": job.name or DEFAULT_JOB_NAME, "max_fails": job.max_fails}
    try:
        # A bad resource request (`cpus="3 sideways"`) raises HqError here already.
        wires = _RequestWires()
        tasks = [graph_task(task, wires) for task in job.tasks]
        parts = _parts(tasks)
        if len(parts) == 1:
            reply = session.request(
                "submit-graph",
                job=None,
                job_desc=job_desc,
                submit_desc={"submit_dir": submit_dir, "stream_path": None, "tasks": tasks},
            )
            return int(reply["job"])
        for part in parts:
            if len(part) == 1 and _estimated_size(part[0]) > PART_BUDGET:
                raise Exception(f"Task {part[0]['id']} is too large to be submitted")
        reply = session.request("job-open", **job_desc)
        job_id = int(reply["job"])
        selector = {"kind": "ids", "ranges": [[job_id, job_id, 1]]}
        try:
            for part in parts:
                session.request(
                    "submit-graph",
                    job=job_id,
                    job_desc={"name": None, "max_fails": None},
                    submit_desc={"submit_dir": submit_dir, "stream_path": None, "tasks": part},
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

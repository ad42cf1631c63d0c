"""A `JobDescription` turned into the server's submit requests: the one place that knows
the wire form of a job, so the switch to the graph request happens here alone.

Until the server takes a whole task graph in one request, a job goes as array submits:
tasks whose descriptions are equal (all but the ID) share one submit. One group is one
plain `submit` of a closed job; several groups open a job, attach each group, and close
it. Dependencies need the graph request and are refused until then.
"""

from __future__ import annotations

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
from hyperq.common.idrange import IdRanges

DEFAULT_JOB_NAME = "PyAPI job"
# `StdioDef(path=None)` means the CLI's default path (with the `job-<id>` folder).
CLI_DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
CLI_DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"
DEFAULT_CRASH_LIMIT = 5
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
    for arg in task.args:
        if not isinstance(arg, str):
            raise Exception("Task outputs (`hq.Output`) are not supported by hyperq")
    for key, value in (task.env or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise Exception(f"Environment variables must be strings: {key!r}={value!r}")
    if isinstance(task.priority, bool) or not isinstance(task.priority, int):
        raise Exception(f"Priority must be an integer, not {task.priority!r}")
    if not -_I32 <= task.priority < _I32:
        raise Exception(f"Priority {task.priority} is out of range")


def program_desc(task: TaskDescription, submit_dir: str) -> dict[str, Any]:
    """The per-task description in the server's submit form (without the task IDs)."""
    _check_task(task)
    variants = resource_variants(task.resource_request)
    if len(variants) > 1:
        raise Exception("Resource variants are not supported by hyperq yet")
    return {
        "submit_dir": submit_dir,
        "stream_path": None,
        "program": {
            "args": list(task.args),
            "env": dict(task.env or {}),
            "cwd": task.cwd if task.cwd else "%{SUBMIT_DIR}",
            "stdout": _stdio(task.stdout, CLI_DEFAULT_STDOUT),
            "stderr": _stdio(task.stderr, CLI_DEFAULT_STDERR),
        },
        "resources": variants[0].to_wire(),
        "pin": None,
        "priority": task.priority,
        "time_limit": None,
        "crash_limit": _crash_limit(task.crash_limit),
        "task_dir": bool(task.task_dir),
        "stdin": task.stdin or None,
    }


def _group_key(desc: dict[str, Any]) -> Any:
    program = desc["program"]
    return (
        tuple(program["args"]),
        tuple(sorted(program["env"].items())),
        program["cwd"],
        repr(program["stdout"]),
        repr(program["stderr"]),
        repr(desc["resources"]),
        desc["priority"],
        desc["crash_limit"],
        desc["task_dir"],
        desc["stdin"],
    )


def submit_job(session: ClientSession, job: JobDescription, submit_dir: str) -> int:
    """Send the job; returns its ID. Refusals raise `Exception` with the server's text."""
    ids = [task.id for task in job.tasks]
    if len(set(ids)) != len(ids):
        raise Exception("Non unique IDs in submitted task graph")
    known = set(ids)
    for task in job.tasks:
        for dep in task.dependencies:
            if dep not in known:
                raise Exception("Invalid dependency id")
    if any(task.dependencies for task in job.tasks):
        raise Exception("Task dependencies are not supported by hyperq yet")

    groups: dict[Any, tuple[dict[str, Any], list[int]]] = {}
    for task in job.tasks:
        desc = program_desc(task, submit_dir)
        key = _group_key(desc)
        if key in groups:
            groups[key][1].append(task.id)
        else:
            groups[key] = (desc, [task.id])

    job_desc = {"name": job.name or DEFAULT_JOB_NAME, "max_fails": job.max_fails}
    try:
        if len(groups) == 1:
            ((desc, task_ids),) = groups.values()
            reply = session.request(
                "submit", job_desc=job_desc, submit_desc=_with_ids(desc, task_ids), job=None
            )
            return int(reply["job"])
        reply = session.request("job-open", **job_desc)
        job_id = int(reply["job"])
        # Each submit can start running before the next arrives; sent from the highest
        # priority down, tasks still start in priority order.
        ordered = sorted(groups.values(), key=lambda group: -group[0]["priority"])
        for desc, task_ids in ordered:
            session.request(
                "submit", job_desc={}, submit_desc=_with_ids(desc, task_ids), job=job_id
            )
        session.request("job-close", selector={"kind": "ids", "ranges": [[job_id, job_id, 1]]})
        return job_id
    except HqError as error:
        raise Exception(error.message) from None


def _with_ids(desc: dict[str, Any], task_ids: list[int]) -> dict[str, Any]:
    ranges = IdRanges.from_ids(sorted(task_ids))
    return {
        **desc,
        "tasks": {
            "ids": [list(item) for item in ranges.items],
            "entries": None,
            "entry_offset": 0,
        },
    }

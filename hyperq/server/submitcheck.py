"""The rules a submit must meet, checked on the server for every client.

`hq submit` applies the same rules before it sends anything, but the CLI is not the only
client (the Python API, users' scripts): the server checks again, after the request has
been converted to its declared type (`hyperq.transport.schemas`), so here only values
are in question, never types. Every check costs O(ranges), not O(tasks): a million-task
array is one range. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from hyperq.common.errors import HqError
from hyperq.common.idrange import MAX_ID
from hyperq.common.resources import (
    CPUS,
    GPUS_AMD,
    GPUS_NVIDIA,
    MEM,
    AllocationPolicy,
    check_resource_name,
)
from hyperq.transport.schemas import (
    IdItem,
    JobDesc,
    JobOpenRequest,
    SubmitDesc,
    SubmitRequest,
    WorkerConfigWire,
)

U32 = 2**32
I32 = 2**31
CRASH_LIMIT_WORDS = ("never-restart", "unlimited")
POLICIES = frozenset(policy.value for policy in AllocationPolicy)
# Names nearly every submit uses, valid by definition: no pattern match for them.
KNOWN_NAMES = frozenset((CPUS, MEM, GPUS_NVIDIA, GPUS_AMD))
PIN_MODES = ("taskset", "omp", "openmp")
# A resource amount is fixed-point ×10 000; a u32 count of units is plenty.
MAX_AMOUNT = (U32 - 1) * 10_000
# Ranges whose spans overlap (`0-10:2,1-11:2`) are stored expanded into plain runs, so
# their size must be bounded; ranges that do not overlap cost nothing per task.
MAX_INTERLEAVED_TASKS = 1_000_000


class InvalidRequest(HqError):
    """A request with a value outside the rules; the message names the field."""


def _fail(field: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid request: {field}: {reason}")


def _path(field: str, value: str | None, *, empty_ok: bool = False) -> None:
    if value is None:
        return
    if "\0" in value:
        raise _fail(field, "contains a NUL byte")
    if not value and not empty_ok:
        raise _fail(field, "cannot be empty")


def _u32(field: str, value: int | None, low: int = 0) -> None:
    if value is not None and not low <= value < U32:
        raise _fail(field, f"must be in range {low}..{U32 - 1}")


def _duration(field: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise _fail(field, "must be a finite, non-negative number of seconds")


def _name(field: str, name: str | None) -> None:
    if name is not None and ("\n" in name or "\t" in name):
        # The CLI's wording, which scripts may match.
        raise HqError("name cannot have a newline or a tab")


def check_items(field: str, items: Iterable[IdItem]) -> None:
    """ID range items: IDs within u32, steps ≥ 1, start ≤ last; interleaving bounded."""
    spans: list[tuple[int, int, int]] = []
    for index, (start, last, step) in enumerate(items):
        if not 0 <= start <= last <= MAX_ID:
            raise _fail(f"{field}[{index}]", f"expected 0 <= start <= last <= {MAX_ID}")
        if step < 1:
            raise _fail(f"{field}[{index}]", "the step must be at least 1")
        spans.append((start, last, (last - start) // step + 1))
    spans.sort()
    interleaved = 0
    reach = -1
    for start, last, count in spans:
        if start <= reach:
            interleaved += count
        reach = max(reach, last)
    if interleaved and sum(count for _s, _l, count in spans) > MAX_INTERLEAVED_TASKS:
        raise _fail(
            field, f"overlapping ranges may hold at most {MAX_INTERLEAVED_TASKS} tasks in all"
        )


def check_job_fields(name: str | None, max_fails: int | None, field: str) -> None:
    _name(f"{field}.name", name)
    _u32(f"{field}.max_fails", max_fails)


def check_job_open(request: JobOpenRequest) -> None:
    check_job_fields(request.name, request.max_fails, "request")


def check_submit_desc(desc: SubmitDesc, field: str = "submit_desc") -> None:
    """The rules of jobs.md §1 for one submit description."""
    program = desc.program
    if not program.args:
        raise _fail(f"{field}.program.args", "cannot be empty")
    for index, arg in enumerate(program.args):
        if "\0" in arg:
            raise _fail(f"{field}.program.args[{index}]", "contains a NUL byte")
    for key, value in program.env.items():
        if not key or "=" in key or "\0" in key:
            raise _fail(f"{field}.program.env", f"invalid variable name {key!r}")
        if "\0" in value:
            raise _fail(f"{field}.program.env[{key!r}]", "contains a NUL byte")
    _path(f"{field}.program.cwd", program.cwd)
    for channel, output in (("stdout", program.stdout), ("stderr", program.stderr)):
        if output is not None:
            _path(f"{field}.program.{channel}.path", output.path)
    _path(f"{field}.submit_dir", desc.submit_dir)
    if not desc.submit_dir.startswith("/"):
        raise _fail(f"{field}.submit_dir", "must be an absolute path")
    _path(f"{field}.stream_path", desc.stream_path)
    _path(f"{field}.on_notify", desc.on_notify, empty_ok=True)

    resources = desc.resources
    names = set()
    for index, entry in enumerate(resources.entries):
        where = f"{field}.resources.entries[{index}]"
        if entry.name not in KNOWN_NAMES:
            try:
                check_resource_name(entry.name)
            except HqError:
                raise _fail(f"{where}.name", f"invalid resource name {entry.name!r}") from None
        if entry.name in names:
            raise _fail(f"{where}.name", f"resource {entry.name!r} requested twice")
        names.add(entry.name)
        if entry.policy not in POLICIES:
            raise _fail(f"{where}.policy", f"unknown policy {entry.policy!r}")
        if entry.policy == AllocationPolicy.ALL:
            if entry.amount != 0:
                raise _fail(f"{where}.amount", "must be 0 with the `all` policy")
        elif not 0 < entry.amount <= MAX_AMOUNT:
            raise _fail(f"{where}.amount", f"must be in range 1..{MAX_AMOUNT}")
    _u32(f"{field}.resources.n_nodes", resources.n_nodes)
    _duration(f"{field}.resources.min_time", resources.min_time)
    if not 0 < resources.weight <= MAX_AMOUNT:
        raise _fail(f"{field}.resources.weight", f"must be in range 1..{MAX_AMOUNT}")

    if desc.pin is not None and desc.pin not in PIN_MODES:
        raise _fail(f"{field}.pin", f"expected one of {', '.join(PIN_MODES[:2])}")
    if not -I32 <= desc.priority < I32:
        raise _fail(f"{field}.priority", f"must be in range {-I32}..{I32 - 1}")
    _duration(f"{field}.time_limit", desc.time_limit)
    crash = desc.crash_limit
    if isinstance(crash, str):
        if crash not in CRASH_LIMIT_WORDS:
            raise _fail(f"{field}.crash_limit", "expected a number, never-restart or unlimited")
    else:
        _u32(f"{field}.crash_limit", crash, low=1)

    tasks = desc.tasks
    if tasks.ids is not None:
        check_items(f"{field}.tasks.ids", tasks.ids)
        if tasks.entries is not None and tasks.ids:
            top = max(last for _start, last, _step in tasks.ids)
            if top >= len(tasks.entries):
                raise _fail(f"{field}.tasks.entries", f"task {top} has no entry")
    elif tasks.entries is not None and len(tasks.entries) > U32 - 1:
        raise _fail(f"{field}.tasks.entries", "too many entries")
    if tasks.entry_offset != 0:
        # Set by the server when it stores a submit; a client has no say in it.
        raise _fail(f"{field}.tasks.entry_offset", "must be 0")


def check_submit(request: SubmitRequest) -> None:
    job_desc = request.job_desc or JobDesc()
    check_job_fields(job_desc.name, job_desc.max_fails, "job_desc")
    _u32("job", request.job)
    check_submit_desc(request.submit_desc)


def check_worker_config(config: WorkerConfigWire) -> None:
    """The durations the server's watchdog and scheduler read from a registering worker."""
    for field in ("heartbeat_interval", "idle_timeout", "time_limit", "overview_interval"):
        _duration(f"configuration.{field}", getattr(config, field))

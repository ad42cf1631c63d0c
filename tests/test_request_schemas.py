"""Untrusted input at the in-process dispatchers: every client op and every worker
message, with arbitrary CBOR values (hypothesis) and with valid requests changed one
field at a time. Each gets a reply (an error or a result); none raises."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed

from hyperq.cli.submitdesc import SubmitRequest, TaskOptions, build_submit
from hyperq.common.idrange import IdRanges
from hyperq.common.resources import (
    AllocatedResource,
    Allocation,
    AllocationPolicy,
    ResourceRequestEntry,
)
from hyperq.server.clientapi import ClientApi, parse_request
from hyperq.server.core import ServerCore, WorkerLink
from hyperq.server.info import ServerInfo
from hyperq.server.lifecycle import StopRequest
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.state import LaunchTask
from hyperq.server.workerconn import WorkerHandler, launch_message
from hyperq.transport import schemas
from hyperq.transport.schemas import SchemaError
from tests.test_model import worker_config

STREAM_OPS = ("job-progress", "journal-stream")
OPS = sorted(set(schemas.CLIENT_REQUESTS) - set(STREAM_OPS))


def make_api() -> ClientApi:
    info = ServerInfo("uid1", "127.0.0.1", 1, "127.0.0.1", 2, "0.1.0", 1, time.time(), None)
    return ClientApi(StopRequest(), ServerCore("uid1", time.time(), None), info)


def valid_submit(**options: Any) -> dict[str, Any]:
    """A submit exactly as `hq submit` builds it."""
    request = SubmitRequest(
        options=TaskOptions(**options), command=["true", "arg"], directives="off"
    )
    built = build_submit(request, submit_dir="/tmp")
    return {"op": "submit", "job_desc": built.job_desc, "submit_desc": built.submit_desc}


IDS = {"kind": "ids", "ranges": [[0, 3, 1]]}
VALID: dict[str, dict[str, Any]] = {
    "server-info": {},
    "server-stop": {},
    "debug-dump": {},
    "submit": valid_submit(array=IdRanges.parse("0-9")),
    "job-open": {"name": "j", "max_fails": 2},
    "job-close": {"selector": {"kind": "all"}},
    "job-list": {},
    "job-summary": {},
    "job-info": {"selector": IDS, "with_tasks": True},
    "job-cancel": {"selector": IDS, "reason": "why"},
    "job-forget": {"selector": {"kind": "all"}, "states": ["finished"]},
    "job-wait": {"selector": {"kind": "last"}, "without_close": False},
    "job-progress": {"selector": IDS},
    "job-task-ids": {"selector": IDS, "states": ["waiting"]},
    "task-list": {"selector": IDS, "tasks": [[0, 5, 1]], "states": ["waiting"]},
    "task-info": {"selector": IDS, "tasks": [[0, 2, 1]]},
    "worker-list": {},
    "worker-info": {"selector": {"kind": "all"}},
    "worker-stop": {"selector": IDS},
    "journal-flush": {},
    "journal-prune": {},
    "journal-stream": {"follow": False},
    "submit-graph": {
        "job_desc": {"name": "g", "max_fails": None},
        "submit_desc": {
            "submit_dir": "/tmp",
            "tasks": [
                {"id": 0, "program": {"args": ["true"]}, "resources": [[], 0, 0.0, 10_000]},
                {
                    "id": 1,
                    "deps": [0],
                    "program": {"args": ["true"]},
                    "resources": [[], 0, 0.0, 10_000],
                },
            ],
        },
    },
    "task-explain": {"job": 1, "task": 0},
    "job-notifications": {"job": 1},
}


def request_of(op: str) -> dict[str, Any]:
    value = copy.deepcopy(VALID[op])
    value["op"] = op
    return value


async def dispatch(api: ClientApi, request: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        reply = await api.dispatch(request)
    assert isinstance(reply, dict)
    assert set(reply) in ({"ok"}, {"error"}), reply
    if "error" in reply:
        assert isinstance(reply["error"], str) and reply["error"]
    # Whatever the answer, it must go back over the wire.
    cbor2.dumps(reply)
    return reply


# --- the contract: the CLI's own requests fit -------------------------------------------


def test_every_op_has_a_valid_example_and_a_type() -> None:
    assert set(VALID) == set(schemas.CLIENT_REQUESTS)
    api = make_api()
    assert set(api.ops) | set(api.stream_ops) == set(schemas.CLIENT_REQUESTS)


@pytest.mark.parametrize("op", sorted(VALID))
def test_valid_requests_convert(op: str) -> None:
    typed = parse_request(op, request_of(op))
    assert isinstance(typed, schemas.CLIENT_REQUESTS[op])


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "name": "n",
            "max_fails": 3,
            "priority": -5,
            "time_limit": 2.5,
            "crash_limit": "unlimited",
        },
        {"pin": "omp", "cpus": "2", "task_dir": True, "env": [("A", "1")], "stream": "log"},
        {"array": IdRanges.parse("1-1000000"), "cwd": "/x/%{TASK_ID}"},
    ],
)
async def test_cli_submits_are_accepted(options: dict[str, Any]) -> None:
    api = make_api()
    reply = await dispatch(api, valid_submit(**options))
    assert reply == {"ok": {"job": 1}}


async def test_the_issue_example_names_the_field() -> None:
    api = make_api()
    request = request_of("submit")
    request["submit_desc"]["program"]["args"] = [["ls", "-l"]]
    reply = await dispatch(api, request)
    assert reply["error"] == (
        "Invalid submit request: submit_desc.program.args[0]: expected a string"
    )
    request["submit_desc"]["program"]["args"] = "ls -l"
    reply = await dispatch(api, request)
    assert reply["error"] == "Invalid submit request: submit_desc.program.args: expected a list"
    request["submit_desc"]["program"]["args"] = ["ls"]
    del request["submit_desc"]["program"]["cwd"]
    reply = await dispatch(api, request)
    assert reply["error"] == "Invalid submit request: submit_desc.program.cwd: missing"
    request = request_of("submit")
    request["job_desc"] = "name"
    reply = await dispatch(api, request)
    assert reply["error"] == "Invalid submit request: job_desc: expected a map or null"
    # Nothing of that reached the model.
    assert api.model.job_ids() == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("program", "args"), [], "submit_desc.program.args: cannot be empty"),
        (("program", "args"), ["a\0b"], "submit_desc.program.args[0]: contains a NUL byte"),
        (("program", "env"), {"A=B": "1"}, "submit_desc.program.env: invalid variable name"),
        (("program", "env"), {"A": "\0"}, "contains a NUL byte"),
        (("program", "cwd"), "/a\0b", "submit_desc.program.cwd: contains a NUL byte"),
        (("program", "stdout"), {"path": "\0"}, "submit_desc.program.stdout.path: contains"),
        (("submit_dir",), "relative", "submit_desc.submit_dir: must be an absolute path"),
        (("tasks", "ids"), [[5, 2, 1]], "submit_desc.tasks.ids[0]: expected 0 <= start"),
        (("tasks", "ids"), [[0, 2**32, 1]], "submit_desc.tasks.ids[0]: expected 0 <= start"),
        (("tasks", "ids"), [[0, 5, 0]], "submit_desc.tasks.ids[0]: the step must be at least 1"),
        (("tasks", "ids"), [[0, 2**32 - 2, 2], [1, 2**32 - 1, 2]], "overlapping ranges"),
        (("tasks", "entry_offset"), 7, "submit_desc.tasks.entry_offset: must be 0"),
        (("resources",), [[["cpus", 0, "compact"]], 0, 0.0, 10000], "amount: must be in range"),
        (("resources",), [[["1x", 1, "compact"]], 0, 0.0, 10000], "invalid resource name"),
        (("resources",), [[["cpus", 1, "wild"]], 0, 0.0, 10000], "unknown policy 'wild'"),
        (("resources",), [[["cpus", 1, "compact"]] * 2, 0, 0.0, 10000], "requested twice"),
        (("resources",), [[], 0, math.nan, 10000], "resources.min_time: must be a finite"),
        (("resources",), [[], 0, 0.0, 0], "resources.weight: must be in range"),
        (("resources",), [[], 2**32, 0.0, 10000], "resources.n_nodes: must be in range"),
        (("pin",), "always", "submit_desc.pin: expected one of taskset, omp"),
        (("priority",), 2**31, "submit_desc.priority: must be in range"),
        (("time_limit",), math.inf, "submit_desc.time_limit: must be a finite"),
        (("time_limit",), -1.0, "submit_desc.time_limit: must be a finite"),
        (("crash_limit",), 0, "submit_desc.crash_limit: must be in range 1.."),
        (("crash_limit",), "sometimes", "submit_desc.crash_limit: expected a number"),
    ],
)
async def test_submit_rules_are_checked_on_the_server(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    api = make_api()
    request = request_of("submit")
    target = request["submit_desc"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    reply = await dispatch(api, request)
    assert "error" in reply
    assert message in reply["error"]
    assert api.model.job_ids() == []
    # The same API takes an honest submit right after.
    assert await dispatch(api, request_of("submit")) == {"ok": {"job": 1}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"job_desc": {"name": "a\nb", "max_fails": None}}, "name cannot have a newline or a tab"),
        ({"job_desc": {"name": "a", "max_fails": -1}}, "job_desc.max_fails: must be in range"),
        ({"job": 2**32}, "job: must be in range"),
        ({"job": 1}, "Parameter --name is not allowed when submitting to an open job."),
        ({"job": 1, "job_desc": None}, "Job 1 not found."),
    ],
)
async def test_job_fields_are_checked(change: dict[str, Any], message: str) -> None:
    api = make_api()
    request = request_of("submit")
    request.update(change)
    reply = await dispatch(api, request)
    assert message in reply["error"]


async def test_interleaved_selectors_are_bounded() -> None:
    api = make_api()
    huge = {"kind": "ids", "ranges": [[0, 2**32 - 2, 2], [1, 2**32 - 1, 2]]}
    for op in ("job-info", "job-cancel", "worker-info"):
        reply = await dispatch(api, {"op": op, "selector": huge})
        assert "overlapping ranges" in reply["error"]
    reply = await dispatch(api, {"op": "task-info", "selector": IDS, "tasks": huge["ranges"]})
    assert "error" in reply or reply["ok"]["found"] is False


# --- arbitrary values -------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
cbor_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def field_names(kind: Any) -> list[str]:
    return list(getattr(kind, "__struct_fields__", ()))


@st.composite
def requests(draw: st.DrawFn, op: str) -> dict[str, Any]:
    """Arbitrary maps for `op`: its real field names with arbitrary values, plus noise;
    sometimes a valid request with one nested value replaced."""
    if draw(st.booleans()):
        request = request_of(op)
        containers: list[Any] = [request]
        for container in containers:
            for value in container.values() if isinstance(container, dict) else container:
                if isinstance(value, dict | list) and len(containers) < 30:
                    containers.append(value)
        target = draw(
            st.sampled_from([c for c in containers if c]) if any(containers) else st.just(request)
        )
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target, key=str)))
            if key != "op":
                target[key] = draw(cbor_values)
        elif isinstance(target, list) and target:
            target[draw(st.integers(0, len(target) - 1))] = draw(cbor_values)
        return request
    names = [*field_names(schemas.CLIENT_REQUESTS[op]), "selector", "tasks", "extra"]
    request = draw(st.dictionaries(st.sampled_from(names), cbor_values, max_size=4))
    request["op"] = op
    return request


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_requests_get_a_reply(op: str, data: st.DataObject) -> None:
    request = data.draw(requests(op))

    async def main() -> None:
        await dispatch(make_api(), request)

    trio.run(main)


@settings(max_examples=200, deadline=None)
@given(request=cbor_values)
def test_arbitrary_values_get_a_reply(request: Any) -> None:
    async def main() -> None:
        await dispatch(make_api(), request)

    trio.run(main)


@pytest.mark.parametrize("op", STREAM_OPS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_stream_requests_convert_or_name_the_field(op: str, data: st.DataObject) -> None:
    request = data.draw(requests(op))
    try:
        typed = parse_request(op, request)
    except SchemaError as error:
        assert ": " in error.message
    else:
        assert isinstance(typed, schemas.CLIENT_REQUESTS[op])


class FakePeer:
    """One request in, every reply kept; then the client hangs up."""

    def __init__(self, request: Any) -> None:
        self.pending = [request]
        self.sent: list[Any] = []

    async def recv(self) -> Any:
        if self.pending:
            return self.pending.pop()
        raise ConnectionClosed(None)

    async def send(self, value: Any) -> None:
        cbor2.dumps(value)
        self.sent.append(value)

    async def send_large(self, value: Any) -> None:
        await self.send(value)


@pytest.mark.parametrize("op", STREAM_OPS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_stream_requests_get_a_reply(op: str, data: st.DataObject) -> None:
    request = data.draw(requests(op))
    peer = FakePeer(request)

    async def main() -> None:
        # A valid `journal-stream --follow` streams until the server stops: cut it short.
        with trio.move_on_after(0.5):
            await make_api().handle_connection(peer)  # type: ignore[arg-type]

    trio.run(main)
    first = peer.sent[0]
    assert isinstance(first, dict)
    assert "ok" in first or ("error" in first and isinstance(first["error"], str)), first


# --- one field at a time ----------------------------------------------------------------

BAD_VALUES: list[Any] = [None, True, -1, 2**64, 1.5, math.nan, "x", "\0", b"x", [], [[1]], {}]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "op":
                continue
            yield (*prefix, key)
            yield from paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value[:3]):
            yield (*prefix, index)
            yield from paths(inner, (*prefix, index))


@pytest.mark.parametrize("op", OPS)
async def test_mutations_one_field_at_a_time(op: str) -> None:
    base = request_of(op)
    checked = 0
    for path in paths(base):
        for bad in BAD_VALUES:
            request = copy.deepcopy(base)
            target = request
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = bad
            api = make_api()
            reply = await dispatch(api, request)
            checked += 1
            if "error" in reply and reply["error"].startswith(f"Invalid {op} request: "):
                # A type error names a field on the path that was changed.
                named = reply["error"].removeprefix(f"Invalid {op} request: ").split(":")[0]
                assert named.split(".")[0].split("[")[0] in (str(path[0]), "request"), reply
    assert checked >= len(BAD_VALUES) or not base.keys() - {"op"}


# --- worker messages on the server ------------------------------------------------------


def registered(core: ServerCore) -> int:
    events = core.model.worker_connected(worker_config(cpus=2), now=core.now())
    core.commit(events)
    worker_id = events[0].id  # type: ignore[attr-defined]
    core.links[worker_id] = WorkerLink(worker_id)
    return worker_id


def core_with_running_task() -> tuple[ServerCore, int]:
    core = ServerCore("uid1", time.time(), None)
    worker_id = registered(core)
    desc = schemas.to_wire(schemas.convert(valid_submit()["submit_desc"], schemas.SubmitDesc))
    core.commit(core.model.submit(core.resolve_submit(desc, 1), now=core.now()))
    core.schedule_now()
    return core, worker_id


worker_items = st.one_of(
    cbor_values,
    st.tuples(
        st.sampled_from(["started", "finished", "failed", "other"]),
        st.integers(-1, 3),
        st.integers(-1, 3),
        st.integers(-1, 3),
    ).map(list),
    st.tuples(
        st.sampled_from(["started", "finished", "failed"]),
        st.just(1),
        st.just(0),
        st.just(0),
        cbor_values,
        cbor_values,
        cbor_values,
    ).map(list),
    st.tuples(
        st.just("finished-ids"),
        st.integers(-1, 3),
        st.integers(-1, 3),
        st.lists(
            st.tuples(
                st.integers(-2, 2**32), st.integers(-2, 2**32), st.integers(-2, 2**32)
            ).map(list),
            max_size=3,
        ),
    ).map(list),
)
worker_messages = st.one_of(
    cbor_values,
    st.fixed_dictionaries(
        {"op": st.sampled_from(["updates", "heartbeat", "goodbye", "register", "x"])},
        optional={"items": st.lists(worker_items, max_size=4), "reason": cbor_values},
    ),
)


@settings(max_examples=300, deadline=None)
@given(message=worker_messages)
def test_worker_messages_are_handled_or_skipped(message: Any) -> None:
    async def main() -> None:
        core, worker_id = core_with_running_task()
        handler = WorkerHandler(core)
        reason = handler.handle_message(worker_id, message)
        assert reason in (None, "ConnectionLost", "TimeLimitReached", "IdleTimeout")
        # The model still answers, whatever the message did.
        assert core.model.job_info(1) is not None

    trio.run(main)


async def test_worker_reports_still_work_after_garbage() -> None:
    core, worker_id = core_with_running_task()
    handler = WorkerHandler(core)
    assert (
        handler.handle_message(worker_id, {"op": "updates", "items": [["finished", "1"]]}) is None
    )
    assert (
        handler.handle_message(worker_id, {"op": "updates", "items": [["exploded", 1, 0, 0]]})
        is None
    )
    assert core.model.task(1, 0).state == TaskState.WAITING  # type: ignore[union-attr]
    update = {"op": "updates", "items": [["finished", 1, 0, 0, 0.01, 0.0]]}
    assert handler.handle_message(worker_id, update) is None
    assert core.model.task(1, 0).state == TaskState.FINISHED  # type: ignore[union-attr]
    assert (
        handler.handle_message(worker_id, {"op": "goodbye", "reason": "IdleTimeout"})
        == "IdleTimeout"
    )


# --- worker side: what the server sends --------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    message=st.one_of(
        cbor_values,
        st.fixed_dictionaries(
            {"op": st.sampled_from(["compute", "compute-runs", "cancel", "stop", "x"])},
            optional={
                "descs": cbor_values,
                "tasks": cbor_values,
                "runs": cbor_values,
                "reason": cbor_values,
            },
        ),
    )
)
def test_server_messages_convert_or_name_the_field(message: Any) -> None:
    try:
        typed = schemas.convert_message(message, schemas.SERVER_MESSAGES)
    except SchemaError as error:
        assert error.message
    else:
        assert isinstance(
            typed, schemas.Compute | schemas.ComputeRuns | schemas.Cancel | schemas.Stop
        )


async def test_a_bug_in_a_handler_costs_one_reply(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    api = make_api()

    def broken() -> Any:
        raise RuntimeError("summary exploded")

    monkeypatch.setattr(api.model, "job_summary", broken)
    reply = await dispatch(api, {"op": "job-summary"})
    assert reply == {"error": "Internal error: RuntimeError: summary exploded"}
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors[0].getMessage() == "Error in job-summary request: RuntimeError: summary exploded"
    # The next request on the same API is answered as usual.
    assert (await dispatch(api, {"op": "job-list"}))["ok"]["total"] == 0


# --- the allocator's ops (alloc.md §2): typed too, registered by the server ------------

ALLOC_VALID: dict[str, dict[str, Any]] = {
    "alloc-list": {},
    "alloc-info": {"queue_id": 1},
    "alloc-log": {"allocation_id": "12.pbs", "stream": "stdout"},
    "alloc-pause": {"queue_id": 1},
    "alloc-resume": {"queue_id": 1},
    "alloc-remove": {"queue_id": 1, "force": True},
    "alloc-dry-run": {"params": {}},
    "alloc-add": {"params": {}, "no_dry_run": True},
}


def make_alloc_api(tmp_path: Any) -> ClientApi:
    from hyperq.alloc.service import Allocator, client_ops

    api = make_api()
    api.add_plain_ops(client_ops(Allocator(api.core, str(tmp_path))))
    return api


def test_every_alloc_op_has_a_type(tmp_path: Any) -> None:
    from hyperq.alloc.service import Allocator, client_ops

    ops = client_ops(Allocator(make_api().core, str(tmp_path)))
    assert set(ops) == set(schemas.ALLOC_REQUESTS) == set(ALLOC_VALID)


@pytest.mark.parametrize("op", sorted(ALLOC_VALID))
async def test_alloc_requests_of_wrong_shape_get_one_error(op: str, tmp_path: Any) -> None:
    api = make_alloc_api(tmp_path)
    # The honest shape converts; each field with a wrong type is named in the error.
    assert isinstance(parse_request(op, {**ALLOC_VALID[op], "op": op}), schemas.ALLOC_REQUESTS[op])
    for field in ALLOC_VALID[op]:
        reply = await dispatch(api, {**ALLOC_VALID[op], "op": op, field: [["x"]]})
        assert reply["error"].startswith(f"Invalid {op} request: {field}"), reply
    # The connection's next request is still served.
    assert "ok" in await dispatch(api, {"op": "alloc-list"})


# --- finished tasks as runs (schemas.FinishedIds) ----------------------------------------


def core_with_assigned(count: int) -> tuple[ServerCore, int, list[int]]:
    """A worker with `count` CPUs and an array of `count` tasks, all assigned to it."""
    core = ServerCore("uid1", time.time(), None)
    events = core.model.worker_connected(worker_config(cpus=count), now=core.now())
    core.commit(events)
    worker_id = events[0].id  # type: ignore[attr-defined]
    core.links[worker_id] = WorkerLink(worker_id)
    submit = valid_submit(array=IdRanges.parse(f"0-{count - 1}"))
    desc = schemas.to_wire(schemas.convert(submit["submit_desc"], schemas.SubmitDesc))
    core.commit(core.model.submit(core.resolve_submit(desc, 1), now=core.now()))
    while core.schedule_now():
        pass
    return core, worker_id, list(range(count))


def reported(order: list[int], as_runs: bool) -> tuple[list[tuple[Any, ...]], dict[int, Any]]:
    """Finish the tasks in `order` one report each, or as the worker sends them (runs);
    the events a journal stream shows (range events expanded, without their times) and
    each task's state."""
    from hyperq.server.model.events import expand
    from hyperq.worker.main import _as_ranges

    core, worker_id, ids = core_with_assigned(8)
    subscription = core.subscribe()
    items = [["finished", 1, task, 0, 0.0, 0.0] for task in order]
    handler = WorkerHandler(core)
    if as_runs:
        wire = _as_ranges(items)
        assert len(wire) < len(items) or len(items) < 2
        assert handler.handle_message(worker_id, {"op": "updates", "items": wire}) is None
    else:
        for item in items:
            assert handler.handle_message(worker_id, {"op": "updates", "items": [item]}) is None
    seen = []
    while True:
        try:
            _seq, event = subscription.receive.receive_nowait()
        except trio.WouldBlock:
            break
        for one in expand(event):
            fields = {k: v for k, v in vars(one).items() if k != "time"}
            seen.append((one.kind, tuple(sorted(fields.items()))))
    states = {task: core.model.task(1, task).state for task in ids}  # type: ignore[union-attr]
    return seen, states


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(8))).flatmap(lambda p: st.integers(0, 8).map(lambda n: p[:n])))
def test_finished_runs_give_the_same_events_as_one_by_one(order: list[int]) -> None:
    async def main() -> None:
        assert reported(order, as_runs=True) == reported(order, as_runs=False)

    trio.run(main)


async def test_a_run_of_more_tasks_than_the_worker_holds_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core, worker_id, ids = core_with_assigned(4)
    handler = WorkerHandler(core)
    before = [core.model.task(1, t) for t in ids]
    bogus = {"op": "updates", "items": [["finished-ids", 1, 0, [[0, 2**32, 1]], 0.0, 0.0]]}
    assert handler.handle_message(worker_id, bogus) is None
    assert "holds 4; skipped" in caplog.text
    assert [core.model.task(1, t) for t in ids] == before
    good = {"op": "updates", "items": [["finished-ids", 1, 0, [[0, 3, 1]], 0.0, 0.0]]}
    assert handler.handle_message(worker_id, good) is None
    assert {core.model.task(1, t).state for t in ids} == {TaskState.FINISHED}  # type: ignore[union-attr]


# --- the server's launch messages: runs mean exactly the rows they replace ---------------


class _LaunchModel:
    """What `launch_message` reads of the model: one submit, array entries by task."""

    def __init__(self, entries: dict[int, str]) -> None:
        self.entries = entries

    def launch_facts(self, job_id: int, task_id: int) -> tuple[int, int, Any] | None:
        return None if task_id == 99 else (0, 0, self.entries.get(task_id))

    def submit_desc(self, job_id: int, index: int) -> dict[str, Any]:
        return {"program": {"args": ["true"], "cwd": "/", "env": {}}, "submit_dir": "/"}


def _cpus(*units: tuple[str, int], policy: str = "compact") -> AllocatedResource:
    amount = sum(share for _, share in units)
    request = ResourceRequestEntry("cpus", amount, AllocationPolicy(policy))
    return AllocatedResource("cpus", request, amount, units)


def _launch(task: int, *resources: AllocatedResource, **fields: Any) -> LaunchTask:
    return LaunchTask(1, 1, task, fields.pop("instance", 0), Allocation(resources), **fields)


def _rows(launch: list[LaunchTask], entries: dict[int, str]) -> list[schemas.LaunchRow]:
    """The rows `compute-rows` carries for `launch` (the form before runs)."""
    return [
        schemas.LaunchRow(
            e.job_id,
            e.task_id,
            e.instance,
            "0",
            e.allocation.to_wire(),
            entries.get(e.task_id),
            list(e.hosts),
        )
        for e in launch
        if e.task_id != 99
    ]


@pytest.mark.parametrize(
    ("launch", "entries", "op", "runs"),
    [
        # Consecutive 1-CPU tasks in any CPU order, a gap, a dropped task, a new instance.
        (
            [_launch(t, _cpus((str(127 - t), 10000))) for t in (1, 2, 3, 5, 99)]
            + [_launch(6, _cpus(("0", 10000)), instance=2)],
            {},
            "compute-runs",
            3,
        ),
        # Two CPUs each, array entries (one of them missing), another policy.
        (
            [
                _launch(t, _cpus((f"{t}a", 10000), (f"{t}b", 10000), policy="scatter"))
                for t in range(4)
            ],
            {0: "x", 2: ""},
            "compute-runs",
            1,
        ),
        # Requests that differ split a run.
        (
            [_launch(1, _cpus(("0", 10000))), _launch(2, _cpus(("1", 10000), policy="tight"))],
            {},
            "compute-runs",
            2,
        ),
        # What a run cannot say: a fractional CPU, two resources, a multi-node task.
        (
            [_launch(1, _cpus(("0", 10000))), _launch(2, _cpus(("1", 10000), ("2", 5000)))],
            {},
            "compute-rows",
            0,
        ),
        (
            [
                _launch(
                    1,
                    _cpus(("0", 10000)),
                    AllocatedResource(
                        "gpus", ResourceRequestEntry("gpus", 10000), 10000, (("0", 10000),)
                    ),
                )
            ],
            {},
            "compute-rows",
            0,
        ),
        ([_launch(1, _cpus(("0", 10000)), hosts=("a", "b"))], {}, "compute-rows", 0),
    ],
)
def test_launch_messages_carry_the_rows_they_replace(
    launch: list[LaunchTask], entries: dict[int, str], op: str, runs: int
) -> None:
    message = launch_message(_LaunchModel(entries), launch)  # type: ignore[arg-type]
    assert message is not None and message["op"] == op
    # Through CBOR as on the wire, and typed as the worker types it.
    typed = schemas.convert_message(cbor2.loads(cbor2.dumps(message)), schemas.SERVER_MESSAGES)
    assert isinstance(typed, schemas.ComputeRuns | schemas.ComputeRows)
    if isinstance(typed, schemas.ComputeRuns):
        assert len(typed.runs) == runs
    assert typed.tasks == _rows(launch, entries)


def test_a_launch_of_dropped_tasks_sends_nothing() -> None:
    assert launch_message(_LaunchModel({}), [_launch(99, _cpus(("0", 10000)))]) is None  # type: ignore[arg-type]

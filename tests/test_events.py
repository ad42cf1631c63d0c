"""Events: wire round trip (also through CBOR), export JSON shapes, registry."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperq.common.resources import parse_task_request
from hyperq.server.model.events import (
    EVENT_TYPES,
    REGISTRY,
    AutoallocAllocationFinished,
    AutoallocAllocationQueued,
    AutoallocAllocationStarted,
    AutoallocQueueCreated,
    AutoallocQueueRemoved,
    Event,
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
    expand,
    from_wire,
    persisted,
    to_export_json,
    to_wire,
)
from tests.test_model import submit_desc, worker_config

T = 1_714_557_600.5  # 2024-05-01T10:00:00.5Z

SAMPLES: list[Event] = [
    ServerStart(T, "AbC123"),
    ServerStop(T),
    WorkerConnected(T, 1, worker_config(4, "worker1", 3600.0)),
    WorkerLost(T, 1, LostReason.HEARTBEAT_LOST.value),
    WorkerStopRequested(T, 2),
    JobOpen(T, 3, "open", None),
    JobOpen(T, 4, "limited", 2),
    JobCreated(T, 1, True, {"name": "sleep", "max_fails": None}, submit_desc([[0, 9, 2]])),
    JobCreated(
        T,
        3,
        False,
        {"name": "open", "max_fails": 1},
        {**submit_desc(entries=["a", "b"]), "stdin": b"\x00data"},
    ),
    JobClose(T, 3),
    JobCancel(T, 1, "because"),
    JobCompleted(T, 1),
    JobForgotten(T, (1, 2)),
    TaskAssigned(T, 1, 0, 1),
    TaskStarted(T, 1, 0, 0, (1,)),
    TaskStarted(T, 1, 1, 3, (1, 2), variant=2),
    TaskFinished(T, 1, 0),
    TaskFailed(T, 1, 1, "Program terminated with exit code 1."),
    TaskCanceled(T, ((1, ((2, 4, 1), (8, 8, 1))), (2, ((0, 6, 3),)))),
    TaskAborted(T, ((5, ((0, 1, 1),)),)),
    WorkerResumed(T, 2, ((1, 0), (3, 7))),
    WorkerOverview(
        T,
        1,
        {
            "timestamp": 1714557600,
            "cpu_usage": {"cpu_per_core_percent_usage": [0.0, 12.5]},
            "memory_usage": {"total": 1024, "free": 512},
            "network_usage": dict.fromkeys(
                ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors"), 0
            ),
            "nvidia_gpus": {"gpus": [{"id": "BUS1", "processor_usage": 10.0, "mem_usage": 50.0}]},
            "amd_gpus": None,
        },
    ),
    WorkerOverviewTemporary(T, 2, {"timestamp": 1714557600}),
]
# Automatic allocation (alloc.md §6).
SAMPLES += [
    AutoallocQueueCreated(T, 1, {"manager": "slurm", "backlog": 1, "additional_args": ["-A"]}),
    AutoallocQueueRemoved(T, 1),
    AutoallocAllocationQueued(T, 1, "12.pbs", 2),
    AutoallocAllocationStarted(T, 1, "12.pbs"),
    AutoallocAllocationFinished(T, 1, "12.pbs"),
]
# Range events (tasks that finished alike, as one event).
SAMPLES += [
    TasksFinished(T, 1, ((0, 4, 2), (1, 1, 1)), 0, (1,), 0, T - 1.5),
    TasksFinished(T, 1, ((7, 9, 1),), 2, (1, 2), 1, None),
    TasksAssigned(T, 1, ((0, 9, 3),), 2, 1),
    # Tasks queued behind others on a worker (scheduler `_successors`).
    TasksAssigned(T, 1, ((10, 11, 1),), 2, 0, (), (0, 10)),
    TaskReturned(T, 1, 11, 2, 0),
]
# Task graphs (graphs.md).
SAMPLES += [
    TaskNotified(T, 1, 2, 3, b"msg\x00"),
    JobCreated(
        T,
        6,
        True,
        {"name": "", "max_fails": None},
        {"submit_dir": "/s", "graph": [{**submit_desc(), "id": 0, "graph": 0}] * 2},
    ),
]


def test_samples_cover_every_kind() -> None:
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES)
    assert set(REGISTRY) == {cls.kind for cls in EVENT_TYPES}
    assert len(REGISTRY) == len(EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.kind)
def test_wire_round_trip(event: Event) -> None:
    wire = to_wire(event)
    assert wire["kind"] == event.kind and wire["time"] == T
    assert from_wire(wire) == event
    assert from_wire(cbor2.loads(cbor2.dumps(wire))) == event


def _only_cbor_types(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_cbor_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_cbor_types(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool | bytes)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.kind)
def test_wire_form_is_plain_data(event: Event) -> None:
    assert _only_cbor_types(to_wire(event))
    line = json.dumps(to_export_json(event))  # every export line is valid JSON
    if isinstance(event, TaskNotified):
        # The original's notification lines have no `type` (graphs.md §4.1).
        assert json.loads(line)["event"] == {
            "task_id": {"job_id": 1, "job_task_id": 2},
            "worker_id": 3,
            "message": [109, 115, 103, 0],
        }
    else:
        # A temporary overview is exported as what it is to a reader: a worker-overview.
        exported = "worker-overview" if isinstance(event, WorkerOverviewTemporary) else event.kind
        assert json.loads(line)["event"]["type"] == exported


def test_graph_submit_exports_its_size() -> None:
    created = to_export_json(SAMPLES[-1])["event"]
    assert created["submit_desc"]["task_desc"] == {"n_tasks": 2}


def test_export_shapes() -> None:
    exported = {id(e): to_export_json(e) for e in SAMPLES}

    def payload(event: Event) -> dict[str, Any]:
        out = exported[id(event)]
        assert out["time"] == "2024-05-01T10:00:00.500Z"
        return out["event"]

    assert payload(SAMPLES[0]) == {"type": "server-start", "server_uid": "AbC123"}
    assert payload(SAMPLES[1]) == {"type": "server-stop"}
    assert payload(SAMPLES[3]) == {"type": "worker-lost", "id": 1, "reason": "HeartbeatLost"}
    connected = payload(SAMPLES[2])
    assert connected["type"] == "worker-connected" and connected["id"] == 1
    assert connected["configuration"]["hostname"] == "worker1"
    assert payload(SAMPLES[6]) == {
        "type": "job-open",
        "job_id": 4,
        "name": "limited",
        "max_fails": 2,
    }
    created = payload(SAMPLES[7])
    assert created["type"] == "job-created" and created["job"] == 1
    assert created["closed_job"] is True
    assert created["job_desc"] == {"name": "sleep", "max_fails": None}
    task_desc = created["submit_desc"]["task_desc"]
    assert created["submit_desc"]["submit_dir"] == "/submit"
    assert task_desc["ids"] == {"ranges": [{"start": 0, "count": 5, "step": 2}]}
    assert task_desc["resources"] == [parse_task_request(None).to_json()]
    assert (task_desc["priority"], task_desc["crash_limit"], task_desc["time_limit"]) == (
        0,
        5,
        None,
    )
    assert payload(SAMPLES[9]) == {"type": "job-close", "job_id": 3}
    assert payload(SAMPLES[10]) == {"type": "job-cancel", "job_id": 1, "reason": "because"}
    assert payload(SAMPLES[11]) == {"type": "job-completed", "job": 1}
    # journal.md §5, the exact lines asserted by test_event_running_variant:
    assert payload(SAMPLES[14]) == {
        "type": "task-started",
        "job": 1,
        "task": 0,
        "instance": 0,
        "worker": 1,
    }
    assert payload(SAMPLES[15]) == {
        "type": "task-started",
        "job": 1,
        "task": 1,
        "instance": 3,
        "workers": [1, 2],
        "variant": 2,
    }
    assert payload(SAMPLES[16]) == {"type": "task-finished", "job": 1, "task": 0}
    assert payload(SAMPLES[17]) == {
        "type": "task-failed",
        "job": 1,
        "task": 1,
        "error": "Program terminated with exit code 1.",
    }
    assert payload(SAMPLES[18]) == {
        "type": "task-canceled",
        "tasks": [
            {"job_id": 1, "job_task_id": 2},
            {"job_id": 1, "job_task_id": 3},
            {"job_id": 1, "job_task_id": 4},
            {"job_id": 1, "job_task_id": 8},
            {"job_id": 2, "job_task_id": 0},
            {"job_id": 2, "job_task_id": 3},
            {"job_id": 2, "job_task_id": 6},
        ],
    }
    assert payload(SAMPLES[19])["tasks"] == [
        {"job_id": 5, "job_task_id": 0},
        {"job_id": 5, "job_task_id": 1},
    ]


def test_only_journal_kinds_are_persisted() -> None:
    transient = {e.kind for e in SAMPLES if not e.persisted}
    assert transient == {
        "task-assigned",
        "tasks-assigned",
        "task-returned",
        "job-forgotten",
        "worker-resumed",
        "worker-overview-temporary",
        "task-notify",
    }
    assert [e.kind for e in persisted(SAMPLES)] == [e.kind for e in SAMPLES if e.persisted]
    # Journaled, but HyperQueue has no such event: exports leave it out.
    assert {e.kind for e in SAMPLES if not e.exported} == {"worker-stop-requested"}


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "no-such-event", "time": 1.0},
        {"time": 1.0},
        {"kind": "job-close", "time": 1.0},
        {"kind": "job-close", "time": "soon", "job_id": 1},
        {"kind": "job-close", "time": 1.0, "job_id": True},
        {"kind": "task-canceled", "time": 1.0, "tasks": [[1, [[0, 1]]]]},
        {"kind": "task-started", "time": 1.0, "job": 1, "task": 0, "instance": 0, "workers": 1},
        {
            "kind": "job-created",
            "time": 1.0,
            "job": 1,
            "closed_job": 1,
            "job_desc": {},
            "submit_desc": {},
        },
        [1, 2, 3],
    ],
)
def test_malformed_wire_is_rejected(data: Any) -> None:
    with pytest.raises(ValueError):
        from_wire(data)


def test_optional_fields_default() -> None:
    wire = to_wire(TaskStarted(T, 1, 0, 0, (1,)))
    del wire["variant"]
    assert from_wire(wire) == TaskStarted(T, 1, 0, 0, (1,), 0)


ints = st.integers(0, 2**32 - 1)
times = st.floats(0, 4e9, allow_nan=False)
items = st.tuples(ints, ints, st.integers(1, 100)).map(lambda t: (t[0], t[0] + t[1] % 1000, t[2]))
groups = st.lists(st.tuples(ints, st.lists(items, max_size=4).map(tuple)), max_size=3).map(tuple)

EVENTS = st.one_of(
    st.builds(ServerStart, times, st.text()),
    st.builds(WorkerLost, times, ints, st.sampled_from([r.value for r in LostReason])),
    st.builds(JobOpen, times, ints, st.text(), st.none() | ints),
    st.builds(JobCancel, times, ints, st.text()),
    st.builds(JobForgotten, times, st.lists(ints, max_size=5).map(tuple)),
    st.builds(
        TaskStarted,
        times,
        ints,
        ints,
        ints,
        st.lists(ints, min_size=1, max_size=3).map(tuple),
        st.integers(0, 5),
    ),
    st.builds(TaskFailed, times, ints, ints, st.text()),
    st.builds(TaskCanceled, times, groups),
    st.builds(TaskAborted, times, groups),
    st.builds(
        JobCreated,
        times,
        ints,
        st.booleans(),
        st.fixed_dictionaries({"name": st.text(), "max_fails": st.none() | ints}),
        st.fixed_dictionaries(
            {"submit_dir": st.text(), "stdin": st.none() | st.binary(max_size=20)}
        ),
    ),
)


@given(EVENTS)
def test_generated_events_round_trip(event: Event) -> None:
    assert from_wire(cbor2.loads(cbor2.dumps(to_wire(event)))) == event
    json.dumps(to_export_json(event))


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.kind)
def test_record_round_trip(event: Event) -> None:
    from hyperq.server.model.events import from_record, to_record

    record = to_record(event)
    assert record[0] == event.kind
    assert from_record(cbor2.loads(cbor2.dumps(record))) == event


def test_bad_records_rejected() -> None:
    from hyperq.server.model.events import from_record

    for bad in (
        [],
        ["no-such-kind", 1.0],
        ["job-close", 1.0],
        ["job-close", "soon", 1],
        {"kind": "job-close"},
        ["job-close", 1.0, 1, 2, 3],
    ):
        with pytest.raises(ValueError):
            from_record(bad)


def test_worker_overview_export_shape() -> None:
    overview = next(e for e in SAMPLES if isinstance(e, WorkerOverview))
    line = json.dumps(to_export_json(overview))
    payload = json.loads(line)["event"]
    assert payload["type"] == "worker-overview" and payload["id"] == 1
    state = payload["hw-state"]["state"]
    assert state["cpu_usage"]["cpu_per_core_percent_usage"] == [0.0, 12.5]
    assert '"cpu_per_core_percent_usage": [0.0, 12.5]' in line  # floats stay floats
    assert state["amd_gpus"] is None and state["nvidia_gpus"]["gpus"][0]["id"] == "BUS1"
    # A dashboard's temporary overview looks the same to whoever reads the stream.
    temporary = next(e for e in SAMPLES if isinstance(e, WorkerOverviewTemporary))
    assert to_export_json(temporary)["event"] == {
        "type": "worker-overview",
        "id": 2,
        "hw-state": {"state": {"timestamp": 1714557600}},
    }


def test_range_event_expands_to_per_task_events() -> None:
    started = TasksFinished(T, 1, ((0, 4, 2), (1, 1, 1)), 0, (3,), 0, T - 1.5)
    assert expand(started) == [
        event
        for task in (0, 2, 4, 1)
        for event in (TaskStarted(T - 1.5, 1, task, 0, (3,)), TaskFinished(T, 1, task))
    ]
    known = TasksFinished(T, 2, ((7, 8, 1),), 2, (1, 2), 1, None)
    assert expand(known) == [TaskFinished(T, 2, 7), TaskFinished(T, 2, 8)]
    lines = [to_export_json(event)["event"] for event in expand(started)[:2]]
    assert lines == [
        {"type": "task-started", "job": 1, "task": 0, "instance": 0, "worker": 3},
        {"type": "task-finished", "job": 1, "task": 0},
    ]

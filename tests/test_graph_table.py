"""The table form of `submit-graph` (hyperq.client.graphwire → hyperq.server.graphapi):
the same tasks as the task-map form give the same model, and every bad field of the
table is refused with one error naming it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperq.client.graphwire import GraphTable, table_from_tasks
from hyperq.common.resources import parse_task_request
from hyperq.server.clientapi import ClientApi
from hyperq.server.model.jobs import TaskState
from tests.test_request_schemas import dispatch, make_api

CPU1 = parse_task_request("1", ()).to_wire()
CPU2 = parse_task_request("2", ()).to_wire()
GPU = parse_task_request(None, ("gpus=1",)).to_wire()


def task(task_id: int, deps: list[int] | None = None, **fields: Any) -> dict[str, Any]:
    program = {"args": fields.pop("args", ["true"])}
    for key in ("env", "cwd", "stdout", "stderr"):
        if key in fields:
            program[key] = fields.pop(key)
    out = {"id": task_id, "program": program, "resources": fields.pop("resources", CPU1)}
    if deps:
        out["deps"] = deps
    out.update(fields)
    return out


def request(tasks: list[dict[str, Any]], job: int | None = None, **desc: Any) -> dict[str, Any]:
    return {
        "op": "submit-graph",
        "job": job,
        "job_desc": {"name": "g", "max_fails": None},
        "submit_desc": {"submit_dir": "/submit", "stream_path": None, "tasks": tasks, **desc},
    }


def as_table(value: dict[str, Any]) -> dict[str, Any]:
    value = copy.deepcopy(value)
    value["submit_desc"] = table_from_tasks(value["submit_desc"])
    return value


def descriptions(api: ClientApi, job_id: int = 1) -> list[dict[str, Any]]:
    return sorted((dict(d) for d in api.model.job_submits(job_id)), key=lambda d: d["id"])


MIXED = [
    task(1, args=["a", "1"]),
    task(2, args=["a", "2"], env={"X": "1"}, cwd="rel/%{TASK_ID}"),
    task(3, [1, 2, 1], stdout={"path": "o", "rm_if_finished": True}, stderr=None),
    task(4, [3], resources=CPU2, variants=[CPU2, GPU], priority=-3, crash_limit=7),
    task(5, [], pin="omp", time_limit=1.5, task_dir=True, stdin=b"\0in"),
    task(6, [5, 4], crash_limit="never-restart", args=["a", "1"]),
    task(0, args=["first"]),
]


async def test_table_gives_the_descriptions_of_the_task_maps() -> None:
    maps, table = make_api(), make_api()
    assert await dispatch(maps, request(copy.deepcopy(MIXED))) == {"ok": {"job": 1}}
    wire = as_table(request(copy.deepcopy(MIXED)))
    assert "tasks" not in wire["submit_desc"]
    assert await dispatch(table, wire) == {"ok": {"job": 1}}
    assert descriptions(table) == descriptions(maps)
    for api in (maps, table):
        view = api.model.task(1, 3)
        assert view is not None and view.state == TaskState.WAITING
    # The task maps ask for the same things in the same order of their lanes.
    assert sorted(map(str, table.model.lanes)) == sorted(map(str, maps.model.lanes))


async def test_attach_below_and_above_existing_ids_with_deps_on_them() -> None:
    for form in (lambda r: r, as_table):
        api = make_api()
        reply = await dispatch(api, {"op": "job-open", "name": "o", "max_fails": None})
        assert reply == {"ok": {"job": 1}}
        first = request([task(10), task(20, [10])], job=1)
        assert await dispatch(api, form(first)) == {"ok": {"job": 1}}
        second = request([task(5, [20]), task(15), task(30, [10, 15])], job=1)
        assert await dispatch(api, form(second)) == {"ok": {"job": 1}}
        ready = [task_id for lane in api.model.lanes.values() for task_id in lane.walk()]
        assert sorted(ready) == [10, 15]
        items = api.model.job_task_items(1)
        assert [start for start, _last, _step in items] == [5, 10, 15, 20, 30]
        job = api.model.jobs[1]
        assert [s.node for s in job.dependants[10]] == [20, 30]
        assert [s.node for s in job.dependants[20]] == [5]
        located = job.locate(30)
        assert located is not None and located[0].waiting_deps == 2


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([task(1), task(1)], "Task 1 is defined more than once."),
        ([task(1, [2]), task(2)], "Invalid dependency on 2"),
        ([task(1, [1])], "Invalid dependency on 1"),
    ],
)
async def test_stage_d_errors_of_the_table(tasks: list[dict[str, Any]], message: str) -> None:
    api = make_api()
    assert await dispatch(api, as_table(request(tasks))) == {"error": message}
    assert api.model.job_ids() == []


def table_request(**changes: Any) -> dict[str, Any]:
    table = GraphTable("/submit")
    shape = table.shape({"resources": table.request(CPU1)})
    table.add(0, table.argv(["a"]), shape)
    table.add(1, table.argv(["b"]), shape, [0], b"in")
    desc = table.wire()
    desc.update(changes)
    return {"op": "submit-graph", "job_desc": {"name": "t"}, "submit_desc": desc}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ids": [0, -1]}, "submit_desc.ids[1]: expected an integer >= 0"),
        ({"ids": [0, 2**32]}, "submit_desc.ids[1]: expected an integer <= 4294967295"),
        ({"argv_of": [0]}, "submit_desc.argv_of: expected 2 items, one per task"),
        ({"argv_of": [0, 2]}, "submit_desc.argv_of: index 2 is not in argvs"),
        ({"shape_of": [0, 1]}, "submit_desc.shape_of: index 1 is not in shapes"),
        ({"shapes": []}, "submit_desc.shape_of: index 0 is not in shapes"),
        ({"argvs": [["a"], [1]]}, "submit_desc.argvs[1][0]: expected a string"),
        ({"dep_counts": [0, 2]}, "submit_desc.deps: expected as many IDs as dep_counts"),
        ({"stdins": [[2, b"x"]]}, "submit_desc.stdins[0]: no task 2 in this submit"),
        ({"requests": [[[["cpus", 1, "wild"]], 0, 0.0, 1]]}, "submit_desc.requests[0]:"),
        ({"shapes": [{"resources": 1}]}, "submit_desc.shapes[0].resources: no such index"),
        ({"shapes": [{"resources": 0, "pin": "x"}]}, "submit_desc.shapes[0].pin: expected"),
        ({"shapes": [{"resources": 0, "variants": []}]}, "shapes[0].variants: expected a non"),
        ({"shapes": [{"resources": 0, "priority": 2**31}]}, "shapes[0].priority: expected"),
        ({"shapes": [{"resources": 0, "crash_limit": 0}]}, "shapes[0].crash_limit: expected"),
        ({"shapes": [{"resources": 0, "time_limit": -1}]}, "shapes[0].time_limit: expected"),
        ({"shapes": [{"resources": 0, "env": {"A": 1}}]}, "shapes[0].env[...]: expected a string"),
        ({"shapes": [{"resources": 0, "stdout": {}}]}, "shapes[0].stdout.path: missing"),
    ],
)
async def test_bad_table_fields_are_named(changes: dict[str, Any], message: str) -> None:
    api = make_api()
    assert await dispatch(api, table_request()) == {"ok": {"job": 1}}
    reply = await dispatch(api, table_request(**changes))
    assert "error" in reply, reply
    assert reply["error"].startswith("Invalid submit-graph request: ")
    assert message in reply["error"]
    assert api.model.job_ids() == [1]


async def test_the_valid_table_runs_like_its_tasks() -> None:
    api = make_api()
    assert await dispatch(api, table_request()) == {"ok": {"job": 1}}
    first, second = descriptions(api)
    assert first["program"]["args"] == ["a"] and "deps" not in first
    assert second["program"]["args"] == ["b"] and second["deps"] == [0]
    assert second["stdin"] == b"in" and second["program"]["cwd"] == "/submit"


fields = st.fixed_dictionaries(
    {},
    optional={
        "args": st.sampled_from([["a"], ["b", "c"], ["a"]]),
        "env": st.sampled_from([{}, {"K": "v"}]),
        "cwd": st.sampled_from(["/w", "rel"]),
        "stdout": st.sampled_from([None, {"path": "o", "rm_if_finished": False}]),
        "priority": st.integers(-2, 2),
        "crash_limit": st.sampled_from([5, 1, "unlimited"]),
        "resources": st.sampled_from([CPU1, CPU2]),
        "stdin": st.sampled_from([None, b"x"]),
    },
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(fields, st.lists(st.integers(0, 30), max_size=3)), max_size=25))
async def test_random_graphs_give_equal_models(
    specs: list[tuple[dict[str, Any], list[int]]],
) -> None:
    tasks = []
    for number, (extra, deps) in enumerate(specs):
        earlier = [d for d in deps if d < number]
        tasks.append(task(number * 3 % 31 + 100 * (number // 31), [], **copy.deepcopy(extra)))
        if earlier:
            tasks[-1]["deps"] = [tasks[d]["id"] for d in earlier]
    maps, table = make_api(), make_api()
    plain = await dispatch(maps, request(copy.deepcopy(tasks)))
    tabled = await dispatch(table, as_table(request(copy.deepcopy(tasks))))
    assert plain == tabled
    if "ok" in plain:
        assert descriptions(table) == descriptions(maps)
        ready = {k: list(lane.walk()) for k, lane in table.model.lanes.items()}
        assert ready == {k: list(lane.walk()) for k, lane in maps.model.lanes.items()}


def test_journal_keeps_the_table_and_replays_it() -> None:
    import cbor2

    from hyperq.server.graphapi import check_table
    from hyperq.server.model.events import export_payload, from_record, to_record
    from hyperq.server.model.state import Model

    wire = as_table(request(copy.deepcopy(MIXED), stream_path="log"))["submit_desc"]
    submit_dir, stream_path, table = check_table(cbor2.loads(cbor2.dumps(wire)))
    live = Model()
    events = live.submit_graph_table(submit_dir, stream_path, table, now=1.0, name="g")
    for event in events:
        live.apply(event)
    record = cbor2.dumps(to_record(events[0]))
    # The record holds the table, not one description per task.
    assert b"templates" in record and len(record) < 1500
    replayed = Model()
    replayed.apply(from_record(cbor2.loads(record)))
    assert replayed.warnings == []
    assert list(replayed.job_submits(1)) == list(live.job_submits(1))
    assert all(d["stream_path"] == "log" for d in live.job_submits(1))
    assert export_payload(events[0])["submit_desc"]["task_desc"] == {"n_tasks": len(MIXED)}


def test_damaged_table_in_a_journal_is_a_warning() -> None:
    from hyperq.server.model.events import JobCreated
    from hyperq.server.model.state import Model

    model = Model()
    desc = {"submit_dir": "/s", "stream_path": None, "group": 0, "table": {"ids": [1]}}
    model.apply(JobCreated(1.0, 1, True, {"name": "x", "max_fails": None}, desc))
    assert model.warnings and "ignored" in model.warnings[0]


def test_graph_node_sets_every_slot_as_the_constructor_does() -> None:
    """`graph_node` is a fast twin of `Submit.__init__`: a slot it forgets is an
    AttributeError only when that task finishes (a new slot once was)."""
    from hyperq.common.resources import ResourceRequest
    from hyperq.server.model.jobs import Submit, graph_node, parse_crash_limit

    request = ResourceRequest.from_wire(CPU1)
    desc = {
        "id": 7,
        "graph": True,
        "resources": request.to_wire(),
        "priority": 3,
        "crash_limit": 2,
        "deps": [1, 2],
    }
    built = Submit(1, 4, desc, 10.0, request=request)
    fast = graph_node(1, 4, desc, 10.0, built.variants, parse_crash_limit(2), 7, 3, (1, 2))
    assert list(fast.ids) == list(built.ids) == [7]
    for slot in Submit.__slots__:
        if slot != "ids":
            assert getattr(fast, slot) == getattr(built, slot), slot

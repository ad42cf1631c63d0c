"""The worker fails a task, not itself: each way one task can go wrong, next to a task
that must still finish, through the worker's own message handling (no server)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperq.worker import main as worker_main
from hyperq.worker.config import WorkerConfig
from hyperq.worker.main import WorkerRuntime


class NoGuardian:
    def track(self, pid: int, alive: bool) -> None:
        pass


async def no_endpoint() -> Any:
    raise AssertionError("the worker must not reconnect here")


def make_runtime(tmp_path: Path, nursery: trio.Nursery) -> WorkerRuntime:
    work_dir = tmp_path / "work"
    work_dir.mkdir(exist_ok=True)
    config = WorkerConfig(
        hostname="w1",
        work_dir=str(work_dir),
        heartbeat=8.0,
        idle_timeout=None,
        time_limit=None,
        on_server_lost="stop",
        group="default",
        manager=None,
        manager_job_id=None,
        min_utilization=0.0,
        overview_interval=None,
        resources=None,  # type: ignore[arg-type]
    )
    reply = {"worker": {"id": 1}, "server_uid": "uid1"}
    return WorkerRuntime(config, nursery, None, reply, NoGuardian(), no_endpoint)  # type: ignore[arg-type]


def desc(tmp_path: Path, args: Any, **changes: Any) -> dict[str, Any]:
    program = {"args": args, "cwd": str(tmp_path), "env": {}, "stdout": None, "stderr": None}
    program.update(changes.pop("program", {}))
    value = {"program": program, "submit_dir": str(tmp_path)}
    value.update(changes)
    return value


def compute(descs: dict[str, Any], tasks: list[tuple[int, str]], **item: Any) -> dict[str, Any]:
    return {
        "op": "compute",
        "descs": descs,
        "tasks": [
            {"job": 1, "task": task, "instance": 0, "desc": key, "allocation": [], **item}
            for task, key in tasks
        ],
    }


@pytest.fixture(params=["runners", "reaper"])
def reaper(request: pytest.FixtureRequest) -> bool:
    """Tasks run by a runner task each (launcher.run_task), or spawned where they arrive
    and waited for by the reaper (launcher.launch, what `run` uses where it can)."""
    return bool(request.param == "reaper")


async def start_reaper(runtime: WorkerRuntime, tasks: trio.Nursery) -> None:
    assert runtime.reaper is not None
    tasks.start_soon(runtime.reaper.run)
    while not runtime.reaper.running:
        await trio.sleep(0)


async def run_message(
    tmp_path: Path, message: Any, expected: int, reaper: bool = False
) -> dict[int, list[Any]]:
    """Feed one message to a worker runtime; the final update of each task, by task ID."""
    results: dict[int, list[Any]] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            runtime = make_runtime(tmp_path, nursery)
            async with trio.open_nursery() as tasks:
                if reaper:
                    await start_reaper(runtime, tasks)
                assert runtime.handle_message(tasks, message) is False
                while len(results) < expected:
                    update = await runtime.updates_recv.receive()
                    if update[0] in ("finished", "failed"):
                        results[update[2]] = update
                if reaper:
                    assert runtime.reaper is not None
                    runtime.reaper.close_when_idle()
            assert not runtime.task_scopes
    return results


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (
            {"args": ["/nonexistent/program"]},
            "The program that you have tried to execute (`/nonexistent/program`) was not found.",
        ),
        ({"args": ["echo", "a\0b"]}, "Cannot execute"),
        ({"args": []}, "No command arguments"),
        (
            {"args": ["true"], "program": {"cwd": "/proc/self/hq-cannot-exist/x"}},
            "Could not create working directory",
        ),
        (
            {
                "args": ["true"],
                "program": {"stdout": {"path": "/proc/self/hq-no/out", "rm_if_finished": False}},
            },
            "Cannot create stdout directory",
        ),
        ({"args": ["true"], "program": {"env": {"A=B": "1"}}}, "Cannot execute"),
        ({"args": ["true"], "pin": "taskset"}, "Pinning failed"),
    ],
)
async def test_a_task_that_cannot_start_fails_and_the_other_finishes(
    tmp_path: Path, bad: dict[str, Any], error: str, reaper: bool
) -> None:
    bad = copy.deepcopy(bad)  # the parameters are shared by both launch modes
    args = bad.pop("args")
    message = compute(
        {"good": desc(tmp_path, ["true"]), "bad": desc(tmp_path, args, **bad)},
        [(0, "good"), (1, "bad")],
    )
    results = await run_message(tmp_path, message, 2, reaper)
    assert results[0][0] == "finished"
    assert results[1][0] == "failed"
    assert error in results[1][4]


def as_rows(message: dict[str, Any]) -> dict[str, Any]:
    """A `compute` message as the `compute-rows` the server sends (schemas.LaunchRow)."""
    rows = [
        [t["job"], t["task"], t["instance"], t["desc"], t["allocation"], t.get("entry")]
        for t in message["tasks"]
    ]
    return {"op": "compute-rows", "descs": message["descs"], "tasks": rows}


async def test_compute_rows_run_like_compute(tmp_path: Path, reaper: bool) -> None:
    message = compute({"good": desc(tmp_path, ["true"])}, [(0, "good"), (1, "missing")])
    results = await run_message(tmp_path, as_rows(message), 2, reaper)
    assert results[0][:4] == ["finished", 1, 0, 0]
    assert results[1][0] == "failed"
    assert "'missing'" in results[1][4]


def as_runs(descs: dict[str, Any], tasks: list[tuple[int, str]], cpus: int) -> dict[str, Any]:
    """Tasks of job 1 (consecutive IDs per run) with `cpus` CPUs each, as `compute-runs`
    (schemas.LaunchRun): task `t` gets the CPUs `t * cpus` … `t * cpus + cpus - 1`."""
    runs: list[list[Any]] = []
    for task, key in tasks:
        labels = [str(task * cpus + index) for index in range(cpus)]
        if runs and runs[-1][3] == key and runs[-1][1] + len(runs[-1][9]) // cpus == task:
            runs[-1][9].extend(labels)
            continue
        runs.append(
            [1, task, 0, key, "cpus", [cpus * 10000, "compact"], cpus * 10000, 10000, cpus, labels]
        )
    return {"op": "compute-runs", "descs": descs, "runs": runs}


async def test_compute_runs_run_like_compute_with_their_cpus(tmp_path: Path, reaper: bool) -> None:
    out = tmp_path / "cpus"
    out.mkdir()
    script = f'echo "$HQ_CPUS $HQ_RESOURCE_VALUES_cpus $OMP_NUM_THREADS" > {out}/$HQ_TASK_ID'
    program = desc(tmp_path, ["sh", "-c", script])
    message = as_runs({"d": program}, [(0, "d"), (1, "d"), (3, "d"), (4, "missing")], 2)
    assert len(message["runs"]) == 3
    results = await run_message(tmp_path, message, 4, reaper)
    assert [results[t][:4] for t in (0, 1, 3)] == [["finished", 1, t, 0] for t in (0, 1, 3)]
    assert results[4][0] == "failed"
    assert "'missing'" in results[4][4]
    for task in (0, 1, 3):
        cpus = f"{2 * task},{2 * task + 1}"
        assert (out / str(task)).read_text() == f"{cpus} {cpus} 2\n"


async def test_a_zero_worker_finishes_every_task_without_running_it(tmp_path: Path) -> None:
    program = desc(tmp_path, ["/nonexistent/program"])
    # More than the update queue holds: the rest is queued as room frees up.
    count = worker_main.UPDATE_QUEUE_SIZE + 100
    message = as_rows(compute({"d": program}, [(task, "d") for task in range(count)]))
    await finish_at_once(tmp_path, message, list(range(count)))


async def test_a_zero_worker_finishes_every_task_of_its_runs(tmp_path: Path) -> None:
    program = desc(tmp_path, ["/nonexistent/program"])
    count = worker_main.UPDATE_QUEUE_SIZE + 100
    task_ids = [task for task in range(count) if task != 7]
    message = as_runs({"d": program}, [(task, "d") for task in task_ids], 1)
    assert len(message["runs"]) == 2
    await finish_at_once(tmp_path, message, task_ids)


async def finish_at_once(tmp_path: Path, message: dict[str, Any], task_ids: list[int]) -> None:
    count = len(task_ids)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            runtime = make_runtime(tmp_path, nursery)
            runtime.zero = True
            async with trio.open_nursery() as tasks:
                assert runtime.handle_message(tasks, message) is False
                ends = [await runtime.updates_recv.receive() for _ in range(count)]
                assert not runtime.task_scopes
    assert sorted(u[2] for u in ends) == task_ids
    assert {u[0] for u in ends} == {"finished"}


async def test_a_task_without_its_description_fails_as_an_internal_error(tmp_path: Path) -> None:
    message = compute({"good": desc(tmp_path, ["true"])}, [(0, "good"), (1, "missing")])
    results = await run_message(tmp_path, message, 2)
    assert results[0][0] == "finished"
    assert results[1][0] == "failed"
    assert results[1][4].startswith("internal error: ValueError: ")
    assert "'missing'" in results[1][4]


async def test_a_slot_holds_its_description_for_later_messages(
    tmp_path: Path, reaper: bool
) -> None:
    """Slots filled by one message serve the next ones; a slot filled again runs its new
    description; a slot never filled fails its task (and only it) as an internal error."""
    out = tmp_path / "out"
    out.mkdir()

    def writes(word: str) -> dict[str, Any]:
        return desc(tmp_path, ["sh", "-c", f"echo {word} > {out}/$HQ_TASK_ID"])

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            runtime = make_runtime(tmp_path, nursery)
            async with trio.open_nursery() as tasks:
                if reaper:
                    await start_reaper(runtime, tasks)

                async def run(message: dict[str, Any], count: int) -> dict[int, list[Any]]:
                    assert runtime.handle_message(tasks, message) is False
                    ends: dict[int, list[Any]] = {}
                    while len(ends) < count:
                        update = await runtime.updates_recv.receive()
                        if update[0] in ("finished", "failed"):
                            ends[update[2]] = update
                    return ends

                first = as_rows(compute({}, [(0, "x"), (1, "x")]))
                first["tasks"][0][3] = 0
                first["tasks"][1][3] = 63
                first["slots"] = [[0, writes("a")], [63, writes("b")]]
                ends = await run(first, 2)
                assert {t: e[0] for t, e in ends.items()} == {0: "finished", 1: "finished"}
                # No descriptions along: the slots hold them. Slot 63 gets a new one.
                second = as_runs({}, [(2, "x"), (3, "x"), (4, "x"), (6, "x")], 1)
                second["runs"] = [
                    [1, 2, 0, 0, "cpus", [10000, "compact"], 10000, 10000, 1, ["0"]],
                    [1, 3, 0, 63, "cpus", [10000, "compact"], 10000, 10000, 1, ["1", "0"]],
                    [1, 6, 0, 5, "cpus", [10000, "compact"], 10000, 10000, 1, ["1"]],
                ]
                second["slots"] = [[63, writes("c")]]
                ends = await run(second, 4)
                assert [ends[t][0] for t in (2, 3, 4)] == ["finished"] * 3
                assert ends[6][0] == "failed"
                assert ends[6][4] == (
                    "internal error: ValueError: "
                    "the server named description slot 5, which is empty"
                )
                if reaper:
                    assert runtime.reaper is not None
                    runtime.reaper.close_when_idle()
    got = {int(path.name): path.read_text() for path in out.iterdir()}
    assert got == {0: "a\n", 1: "b\n", 2: "a\n", 3: "c\n", 4: "c\n"}


async def test_a_skipped_message_empties_the_slots(tmp_path: Path) -> None:
    """A message that does not fit may have filled slots that later messages name: its
    tasks fail rather than run what those slots held before it."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            runtime = make_runtime(tmp_path, nursery)
            async with trio.open_nursery() as tasks:
                fill = as_rows(compute({}, [(0, "x")]))
                fill["tasks"][0][3] = 0
                fill["slots"] = [[0, desc(tmp_path, ["true"])]]
                assert runtime.handle_message(tasks, fill) is False
                assert (await runtime.updates_recv.receive())[:3] == ["finished", 1, 0]
                bad = {**fill, "slots": [[64, desc(tmp_path, ["false"])]]}
                assert runtime.handle_message(tasks, bad) is False
                again = as_rows(compute({}, [(1, "x")]))
                again["tasks"][0][3] = 0
                assert runtime.handle_message(tasks, again) is False
                update = await runtime.updates_recv.receive()
    assert update[:3] == ["failed", 1, 1]
    assert "description slot 0, which is empty" in update[4]


async def test_a_bad_allocation_fails_only_its_task(tmp_path: Path, reaper: bool) -> None:
    message = compute({"good": desc(tmp_path, ["true"])}, [(0, "good")])
    message["tasks"].append(
        {"job": 1, "task": 1, "instance": 3, "desc": "good", "allocation": [["cpus", 7]]}
    )
    results = await run_message(tmp_path, message, 2, reaper)
    assert results[0][0] == "finished"
    assert results[1][0] == "failed"
    assert results[1][3] == 3  # the instance the server gave
    assert results[1][4].startswith("internal error: ValueError: Invalid allocation")


async def test_an_exception_in_the_task_runner_fails_that_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run_task = worker_main.run_task

    async def flaky_run_task(spec: Any) -> Any:
        if spec.task_id == 1:
            await trio.sleep(0)
            raise RuntimeError("injected")
        return await real_run_task(spec)

    monkeypatch.setattr(worker_main, "run_task", flaky_run_task)
    message = compute({"d": desc(tmp_path, ["true"])}, [(0, "d"), (1, "d"), (2, "d")])
    results = await run_message(tmp_path, message, 3)
    assert results[1][:2] == ["failed", 1]
    assert results[1][4] == "internal error: RuntimeError: injected"
    assert results[0][0] == "finished"
    assert results[2][0] == "finished"


@pytest.mark.parametrize(
    "message",
    [
        None,
        [],
        "compute",
        {"op": "compute"},
        {"op": "compute", "descs": {}, "tasks": [{"job": "1"}]},
        {"op": "compute", "descs": {"0": {"program": {"args": "true"}}}, "tasks": []},
        {
            "op": "compute",
            "descs": {"0": {"program": {"args": [["true"]], "cwd": "/"}}},
            "tasks": [],
        },
        {"op": "cancel", "tasks": [[1, 2]]},
        {"op": "stop", "reason": 5},
        {"op": "explode"},
    ],
)
async def test_a_message_that_does_not_fit_is_skipped(
    tmp_path: Path, message: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            runtime = make_runtime(tmp_path, nursery)
            async with trio.open_nursery() as tasks:
                assert runtime.handle_message(tasks, message) is False
                assert not runtime.task_scopes
                assert runtime.ending is None
                # The same runtime still runs tasks afterwards.
                good = compute({"d": desc(tmp_path, ["true"])}, [(5, "d")])
                assert runtime.handle_message(tasks, good) is False
                update = await runtime.updates_recv.receive()
                assert update[:3] == ["finished", 1, 5]
    assert "Skipping a message from the server" in caplog.text


async def test_cancel_and_stop_still_work(tmp_path: Path, reaper: bool) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            runtime = make_runtime(tmp_path, nursery)
            async with trio.open_nursery() as tasks:
                if reaper:
                    await start_reaper(runtime, tasks)
                long = compute({"d": desc(tmp_path, ["sleep", "30"])}, [(0, "d")])
                assert runtime.handle_message(tasks, long) is False
                assert (1, 0) in runtime.task_scopes
                cancel = {"op": "cancel", "tasks": [[1, 0, 0]]}
                assert runtime.handle_message(tasks, cancel) is False
                if reaper:
                    assert runtime.reaper is not None
                    runtime.reaper.close_when_idle()
            assert not runtime.task_scopes
            # A cancelled task ends unreported.
            with pytest.raises(trio.WouldBlock):
                runtime.updates_recv.receive_nowait()
            assert runtime.handle_message(tasks, {"op": "stop", "reason": "stopped"}) is True
            assert runtime.ending is not None and runtime.ending.reason == "stopped"


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


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values most of the time, anything now and then."""
    return st.one_of(valid, valid, valid, cbor_values)


program_like = st.fixed_dictionaries(
    {"args": st.lists(st.text(max_size=4), max_size=2), "cwd": st.text(max_size=4)},
    optional={
        "env": mostly(st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2)),
        "stdout": mostly(st.none() | st.fixed_dictionaries({"path": st.text(max_size=4)})),
    },
)
desc_values = st.fixed_dictionaries(
    {"program": program_like, "submit_dir": st.text(max_size=4)},
    optional={
        "pin": mostly(st.none() | st.sampled_from(["taskset", "omp"])),
        "time_limit": mostly(st.none() | st.floats(0, 10)),
    },
)
descs = st.dictionaries(st.sampled_from(["0", "1"]), desc_values, max_size=2)
# Slot numbers in and out of range (schemas.DESC_SLOTS is 64), and a bool.
slot_numbers = st.sampled_from([0, 1, 63, 64, -1, 2**40, True])
slot_lists = mostly(st.lists(st.tuples(slot_numbers, desc_values).map(list), max_size=2))
desc_refs = st.sampled_from(["0", "1", "2"]) | slot_numbers
launch_items = st.lists(
    st.fixed_dictionaries(
        {
            "job": st.integers(0, 3),
            "task": st.integers(0, 3),
            "instance": st.integers(0, 3),
            "desc": desc_refs,
            "allocation": mostly(st.just([])),
        },
        optional={"entry": mostly(st.none() | st.text(max_size=3))},
    ),
    max_size=3,
)
server_messages = st.one_of(
    cbor_values,
    st.fixed_dictionaries(
        {"op": st.sampled_from(["compute", "cancel", "stop", "x"])},
        optional={"descs": descs, "tasks": launch_items, "reason": cbor_values},
    ),
    st.fixed_dictionaries({"op": st.just("compute"), "descs": descs, "tasks": launch_items}),
    st.fixed_dictionaries(
        {
            "op": st.just("compute-rows"),
            "descs": descs,
            "slots": slot_lists,
            "tasks": launch_items.map(
                lambda items: [
                    [i["job"], i["task"], i["instance"], i["desc"], i["allocation"],
                     i.get("entry")]
                    for i in items
                ]
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("compute-runs"),
            "descs": descs,
            "slots": slot_lists,
            "runs": st.lists(
                st.tuples(
                    st.integers(0, 3),
                    st.integers(0, 3),
                    st.integers(0, 3),
                    desc_refs,
                    st.just("cpus"),
                    st.just([10000, "compact"]),
                    st.just(10000),
                    st.just(10000),
                    st.integers(0, 2),
                    st.lists(st.sampled_from(["0", "1"]), max_size=3),
                ).map(list),
                max_size=2,
            ),
        }
    ),
)


def _taken(message: Any) -> set[tuple[int, int]]:
    """The tasks of `message` if it is a compute message the worker accepts."""
    from hyperq.transport import schemas

    try:
        typed = schemas.convert_message(message, schemas.SERVER_MESSAGES)
    except schemas.SchemaError:
        return set()
    if not isinstance(typed, schemas.Compute | schemas.ComputeRows | schemas.ComputeRuns):
        return set()
    return {(item.job, item.task) for item in typed.tasks}


@settings(max_examples=200, deadline=None)
@given(message=server_messages)
def test_arbitrary_server_messages_never_end_the_worker(message: Any) -> None:
    """Whatever the server sends, the worker handles it or skips it; every task it took
    on reports an end. No process is spawned: the launcher is replaced."""

    async def fake_run_task(spec: Any) -> Any:
        await trio.sleep(0)
        return worker_main.FINISHED

    async def main() -> None:
        with tempfile.TemporaryDirectory() as scratch, trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                runtime = make_runtime(Path(scratch), nursery)
                async with trio.open_nursery() as tasks:
                    stopped = runtime.handle_message(tasks, message)
                    assert stopped == (runtime.ending is not None)
                ends = set()
                while True:
                    try:
                        update = runtime.updates_recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    if update[0] in ("finished", "failed"):
                        ends.add((update[1], update[2]))
                # Every task it took on has ended and said so.
                assert not runtime.task_scopes
                taken = _taken(message)
                assert taken <= ends

    original = worker_main.run_task
    worker_main.run_task = fake_run_task  # type: ignore[assignment]
    try:
        trio.run(main)
    finally:
        worker_main.run_task = original

"""Task graphs in the pure model: readiness, aborts, crashes, open jobs, replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperq.common.errors import HqError
from hyperq.common.resources import parse_task_request
from hyperq.server.journal.restore import restore
from hyperq.server.model.events import (
    JobCompleted,
    JobCreated,
    LostReason,
    TaskAborted,
    TaskFailed,
    TaskFinished,
    persisted,
)
from hyperq.server.model.jobs import JobState, TaskState
from hyperq.server.model.state import NotFound, WrongState, crash_limit_error
from tests.test_model import Driver, replayed, submit_desc


def node(
    task_id: int,
    deps: Sequence[int] = (),
    *,
    cpus: str = "1",
    priority: int = 0,
    crash_limit: int | str = 5,
) -> dict[str, Any]:
    return {
        "id": task_id,
        "deps": list(deps),
        "program": {
            "args": ["true"],
            "env": {},
            "cwd": "/submit",
            "stdout": None,
            "stderr": None,
        },
        "resources": parse_task_request(cpus, ()).to_wire(),
        "pin": None,
        "priority": priority,
        "time_limit": None,
        "crash_limit": crash_limit,
        "task_dir": False,
        "stdin": None,
    }


def graph(d: Driver, tasks: Sequence[dict[str, Any]], **kwargs: Any) -> int:
    events = d.do(d.model.submit_graph("/submit", None, tasks, now=d.now, **kwargs))
    return events[0].job  # type: ignore[attr-defined]


def assigned(d: Driver) -> list[int]:
    return sorted(a.task_id for a in d.run())


def states(d: Driver, job_id: int) -> dict[int, str]:
    return {view.task_id: str(view.state) for view in d.model.iter_tasks(job_id)}


def aborted_ids(event: Any) -> list[int]:
    return [
        t
        for _job, items in event.tasks
        for start, last, step in items
        for t in range(start, last + 1, step)
    ]


def test_diamond_runs_in_dependency_order() -> None:
    d = Driver()
    d.connect(cpus=8)
    job = graph(d, [node(1), node(2, [1]), node(3, [1]), node(4, [2, 3])])
    assert assigned(d) == [1]
    assert d.state(job) == JobState.RUNNING
    d.finish(job, 1)
    assert assigned(d) == [2, 3]
    d.finish(job, 2)
    assert assigned(d) == []
    d.finish(job, 3)
    assert assigned(d) == [4]
    events = d.finish(job, 4)
    assert isinstance(events[-1], JobCompleted)
    assert d.state(job) == JobState.FINISHED
    assert not d.model.lanes
    assert replayed(d.events).snapshot() == d.model.snapshot()


def test_forward_references_and_waiting_state() -> None:
    d = Driver()
    d.connect(cpus=8)
    # Stage D accepts only deps on earlier tasks of the submit: the client sorts.
    with pytest.raises(HqError, match="Invalid dependency on 5"):
        graph(d, [node(1, [5]), node(5)])
    job = graph(d, [node(5), node(1, [5])])
    assert d.stats(job) == {"waiting": 2}
    assert assigned(d) == [5]
    assert d.task_state(job, 1) == TaskState.WAITING


def test_failure_aborts_transitive_dependants_before_the_failure() -> None:
    d = Driver()
    d.connect(cpus=8)
    job = graph(d, [node(0), node(1, [0]), node(2, [1]), node(3), node(4, [3, 1])])
    assert assigned(d) == [0, 3]
    d.finish(job, 3)
    events = d.fail(job, 0)
    kinds = [type(e) for e in events]
    assert kinds == [TaskAborted, TaskFailed, JobCompleted]
    assert aborted_ids(events[0]) == [1, 2, 4]
    assert states(d, job) == {0: "failed", 1: "aborted", 2: "aborted", 3: "finished", 4: "aborted"}
    assert d.state(job) == JobState.FAILED
    assert d.model.job_info(job).completed_at is not None  # type: ignore[union-attr]
    assert replayed(d.events).snapshot() == d.model.snapshot()


def test_python_api_reference_dep_failed() -> None:
    """tests/pyapi/test_dependencies.py::test_dep_failed: 0 FAILED, 1-2 ABORTED, 3 FINISHED."""
    d = Driver()
    d.connect(cpus=1)
    job = graph(d, [node(0), node(1, [0]), node(2, [0, 1]), node(3)])
    assert assigned(d) == [0]
    d.fail(job, 0)
    assert assigned(d) == [3]
    d.finish(job, 3)
    assert states(d, job) == {0: "failed", 1: "aborted", 2: "aborted", 3: "finished"}
    assert d.state(job) == JobState.FAILED


def test_aborted_tasks_do_not_count_for_max_fails() -> None:
    d = Driver()
    d.connect(cpus=8)
    job = graph(d, [node(0), node(1, [0]), node(2, [0]), node(3), node(4)], max_fails=1)
    assert assigned(d) == [0, 3, 4]
    d.fail(job, 0)  # 1 failure, 2 aborted: not above max_fails
    assert d.stats(job) == {"failed": 1, "aborted": 2, "running": 2}
    events = d.fail(job, 3)  # 2 failures > 1: the rest is aborted, running 4 killed
    assert [type(e) for e in events] == [TaskFailed, TaskAborted, JobCompleted]
    assert aborted_ids(events[1]) == [4]
    assert d.stats(job) == {"failed": 2, "aborted": 3}
    assert d.state(job) == JobState.FAILED


def test_cancel_reaches_waiting_dependants() -> None:
    d = Driver()
    d.connect(cpus=8)
    job = graph(d, [node(0), node(1, [0]), node(2, [1]), node(7)])
    assert assigned(d) == [0, 7]
    d.finish(job, 7)
    d.do(d.model.cancel_job(job, now=d.now).events)
    assert states(d, job) == {0: "canceled", 1: "canceled", 2: "canceled", 7: "finished"}
    assert d.state(job) == JobState.CANCELED
    assert not d.model.lanes and not d.model.jobs[job].dependants
    assert replayed(d.events).snapshot() == d.model.snapshot()


def test_worker_loss_mid_graph_keeps_dependants_waiting() -> None:
    d = Driver()
    worker = d.connect(cpus=8)
    job = graph(d, [node(0, crash_limit=2), node(1, [0]), node(2, [1])])
    assert assigned(d) == [0]
    d.lose(worker, LostReason.CONNECTION_LOST)
    assert d.state(job) == JobState.WAITING
    assert states(d, job) == {0: "waiting", 1: "waiting", 2: "waiting"}
    worker = d.connect(cpus=8)
    assert assigned(d) == [0]
    # Second loss reaches the crash limit: the failure aborts the dependants first.
    events = d.lose(worker, LostReason.CONNECTION_LOST)
    failed = [e for e in events if isinstance(e, TaskFailed)]
    assert failed and failed[0].error == crash_limit_error(2)
    kinds = [type(e) for e in events]
    assert kinds.index(TaskAborted) < kinds.index(TaskFailed)
    assert states(d, job) == {0: "failed", 1: "aborted", 2: "aborted"}
    assert d.state(job) == JobState.FAILED
    assert replayed(d.events).snapshot() == d.model.snapshot()


def test_open_job_deps_on_earlier_submits() -> None:
    d = Driver()
    d.connect(cpus=8)
    job = d.open_job()
    graph(d, [node(1), node(2)], job_id=job)
    assert assigned(d) == [1, 2]
    d.finish(job, 1)
    # 1 finished: that dep is dropped; 2 still runs: registered.
    graph(d, [node(3, [1, 2]), node(4, [3])], job_id=job)
    assert assigned(d) == []
    assert d.model.jobs[job].locate(3)[0].waiting_deps == 1  # type: ignore[index]
    d.finish(job, 2)
    assert assigned(d) == [3]
    # An array submit into the same job shares the ID space and may be depended on.
    d.submit(submit_desc([[10, 11, 1]]), job_id=job)
    graph(d, [node(12, [10, 4])], job_id=job)
    assert assigned(d) == [10, 11]
    d.finish(job, 3)
    d.finish(job, 10)
    assert assigned(d) == [4]
    d.finish(job, 4)
    assert assigned(d) == [12]
    assert d.model.job_info(job).task_count == 7  # type: ignore[union-attr]
    assert replayed(d.events).snapshot() == d.model.snapshot()


def test_stage_d_errors_in_order() -> None:
    d = Driver()
    job = d.open_job()
    graph(d, [node(0)], job_id=job)
    with pytest.raises(HqError, match=r"^Task 0 already exists in job 1\.$"):
        graph(d, [node(3), node(0)], job_id=job)
    with pytest.raises(HqError, match=r"^Task 3 is defined more than once\.$"):
        graph(d, [node(3), node(3)], job_id=job)
    with pytest.raises(HqError, match=r"^Invalid dependency on 4$"):
        graph(d, [node(4, [4])], job_id=job)
    with pytest.raises(HqError, match=r"^Invalid dependency on 9$"):
        graph(d, [node(4, [0, 9])], job_id=job)
    with pytest.raises(NotFound, match=r"^Job 7 not found\.$"):
        graph(d, [node(1)], job_id=7)
    d.do(d.model.close_job(job, now=d.now))
    # The collision is reported before the closed job.
    with pytest.raises(HqError, match="already exists"):
        graph(d, [node(0)], job_id=job)
    with pytest.raises(WrongState, match=r"^Job 1 is not opened\.$"):
        graph(d, [node(1)], job_id=job)


def test_graph_job_name_and_journal_form() -> None:
    d = Driver()
    events = d.model.submit_graph("/submit", None, [node(0), node(1, [0])], now=d.now)
    created = events[0]
    assert isinstance(created, JobCreated) and created.closed_job
    assert created.job_desc == {"name": "", "max_fails": None}
    # Keys at their defaults are left out (deps [] included).
    assert [t.get("deps") for t in created.submit_desc["graph"]] == [None, [0]]
    assert "priority" not in created.submit_desc["graph"][0]


def test_restore_mid_graph() -> None:
    """test_restore_dependencies1: 1 finished, 2 running, 3 waits on both."""
    d = Driver()
    worker = d.connect(cpus=8)
    job = graph(d, [node(1), node(2), node(3, [1, 2])])
    assert assigned(d) == [1, 2]
    d.finish(job, 1)
    model = restore(persisted(d.events))
    assert worker not in model.workers
    submit3 = model.jobs[job].locate(3)[0]  # type: ignore[index]
    assert submit3.waiting_deps == 1
    d2 = Driver()
    d2.model = model
    d2.connect(cpus=8)
    assert assigned(d2) == [2]
    assert d2.record(job, 2).instance == 1
    d2.finish(job, 2)
    assert assigned(d2) == [3]
    d2.finish(job, 3)
    assert d2.state(job) == JobState.FINISHED


# ---------------------------------------------------------------------------------------
# property: random DAGs, random outcomes


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[list[int]], list[bool]]:
    n = draw(st.integers(1, 12))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]
    ok = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return deps, ok


@settings(max_examples=150, deadline=None)
@given(dags(), st.integers(1, 3), st.randoms(use_true_random=False))
def test_random_dags_end_as_the_rules_say(
    dag: tuple[list[list[int]], list[bool]], cpus: int, rnd: Any
) -> None:
    deps, ok = dag
    n = len(deps)
    # IDs are a permutation, so that task order and dependency order differ.
    ids = rnd.sample(range(100), n)
    d = Driver()
    d.connect(cpus=cpus)
    job = graph(d, [node(ids[i], [ids[j] for j in deps[i]]) for i in range(n)])
    index = {task_id: i for i, task_id in enumerate(ids)}
    for _ in range(4 * n + 4):
        d.run()
        running = [task_id for _j, task_id in d.placed(TaskState.RUNNING)]
        if not running:
            break
        for task_id in running:
            for dep in deps[index[task_id]]:
                assert d.task_state(job, ids[dep]) == TaskState.FINISHED
        task_id = rnd.choice(running)
        if ok[index[task_id]]:
            d.finish(job, task_id)
        else:
            d.fail(job, task_id)
    expected: list[str] = []
    for i in range(n):
        if any(expected[j] != "finished" for j in deps[i]):
            expected.append("aborted")
        else:
            expected.append("finished" if ok[i] else "failed")
    assert states(d, job) == {ids[i]: expected[i] for i in range(n)}
    assert d.model.jobs[job].is_completed
    assert not d.model.lanes
    assert replayed(d.events).snapshot() == d.model.snapshot()
    aborts = [e for e in d.events if isinstance(e, TaskAborted)]
    finished = {e.task for e in d.events if isinstance(e, TaskFinished)}
    assert all(set(aborted_ids(e)).isdisjoint(finished) for e in aborts)


def test_resource_variants_earliest_fitting_wins() -> None:
    """test_job_file_resource_variants3: 2 tasks get variant 0 (limited by x), 3 variant 1."""
    from hyperq.common.resources import ResourceDescriptor, ResourceDescriptorItem

    d = Driver()
    descriptor = ResourceDescriptor(
        (ResourceDescriptorItem.of_range("cpus", 0, 4), ResourceDescriptorItem.of_sum("x", 20_000))
    )
    config = {"hostname": "w", "time_limit": None, "resources": descriptor.to_json()}
    d.do(d.model.worker_connected(config, now=d.now))
    tasks = []
    for i in range(5):
        task = node(i)
        task["variants"] = [
            parse_task_request("1", ["x=1"]).to_wire(),
            parse_task_request("1", ()).to_wire(),
        ]
        task["resources"] = task["variants"][0]
        tasks.append(task)
    job = graph(d, tasks)
    assignments = d.run()
    assert sorted(a.variant for a in assignments) == [0, 0, 1, 1, 1]
    started = [e for e in d.events if type(e).__name__ == "TaskStarted"]
    assert sorted(e.variant for e in started) == [0, 0, 1, 1, 1]  # type: ignore[attr-defined]
    for task_id in range(5):
        d.finish(job, task_id)
    assert d.state(job) == JobState.FINISHED
    assert replayed(d.events).snapshot() == d.model.snapshot()


def test_explain_multi_node_and_groups() -> None:
    """test_explain_multi_node: `--nodes=3`, groups A,B,A → group size 2 < 3."""
    from hyperq.server.model.explain import explain_task

    d = Driver()
    for group in ("A", "B", "A"):
        config = worker_config_with_group(group)
        d.do(d.model.worker_connected(config, now=d.now))
    task = node(0)
    task["resources"] = parse_task_request(None, (), n_nodes=3).to_wire()
    job = graph(d, [task, node(1, [0])])
    data = explain_task(d.model, job, 0, d.now)
    workers = data["explanation"]["workers"]
    assert [w["variants"] for w in workers] == [
        [[{"WorkerGroup": {"n_nodes": 3, "group_size": size}}]] for size in (2, 1, 2)
    ]
    assert [w["enabled"] for w in workers] == [[False]] * 3
    deps = explain_task(d.model, job, 1, d.now)["explanation"]
    assert (deps["n_task_deps"], deps["n_waiting_deps"]) == (1, 1)
    with pytest.raises(HqError, match=r"^Task not found$"):
        explain_task(d.model, job, 5, d.now)
    with pytest.raises(HqError, match=r"^Job not found$"):
        explain_task(d.model, 9, 0, d.now)


def worker_config_with_group(group: str) -> dict[str, Any]:
    from tests.test_model import worker_config

    return {**worker_config(4), "group": group}


def test_new_submit_while_tasks_wait_on_finished_deps() -> None:
    """test_new_submit_with_while_unfinished_deps2: chain 1→2→10, resubmitted as job 2."""
    d = Driver()
    d.connect(cpus=1)
    chain = [node(1), node(2, [1]), node(10, [2])]
    first = graph(d, chain)
    assert assigned(d) == [1]
    d.finish(first, 1)
    second = graph(d, [node(1), node(2, [1]), node(10, [2])])
    order = []
    for _ in range(6):
        for a in d.run():
            order.append((a.job_id, a.task_id))
            d.finish(a.job_id, a.task_id)
    assert order == [(1, 2), (1, 10), (2, 1), (2, 2), (2, 10)]
    assert d.state(first) == d.state(second) == JobState.FINISHED

"""Multi-node tasks in the pure model and scheduler (cluster.md §1): groups, reservation,
time requests, the root-only launch, release on end/cancel/loss, priorities, blockers."""

from __future__ import annotations

from typing import Any

import pytest

from hyperq.common.errors import HqError
from hyperq.common.resources import ResourceRequest, check_request_variants, parse_task_request
from hyperq.server.model.events import LostReason, TaskStarted
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.scheduler import (
    group_can_ever_host,
    pick_nodes,
    schedule,
    worker_group_size,
    worker_is_idle,
)
from hyperq.server.model.state import Assignment, LaunchTask
from hyperq.server.replies import worker_wire
from hyperq.worker.launcher import short_hostname
from tests.test_model import Driver, submit_desc, worker_config


def connect(d: Driver, group: str = "default", **kwargs: Any) -> int:
    config = worker_config(kwargs.pop("cpus", 4), **kwargs)
    config["group"] = group
    config.setdefault("hostname", "worker")
    (event,) = d.do(d.model.worker_connected(config, now=d.now))
    return event.id  # type: ignore[attr-defined]


def mn_desc(
    n_nodes: int, ids: list[list[int]] | None = None, priority: int = 0, time_request: float = 0.0
) -> dict[str, Any]:
    desc = submit_desc(ids, priority=priority)
    desc["resources"] = parse_task_request(None, n_nodes=n_nodes, min_time=time_request).to_wire()
    desc["task_dir"] = True
    return desc


def test_waits_until_one_group_has_enough_free_workers() -> None:
    # test_submit_mn: 2 workers → waiting; 2 more → runs on the 3 lowest IDs.
    d = Driver()
    for _ in range(2):
        connect(d)
    job = d.submit(mn_desc(3))
    assert d.run() == []
    assert d.task_state(job, 0) == TaskState.WAITING
    connect(d)
    connect(d)
    (assignment,) = d.run()
    assert assignment.workers == (1, 2, 3)
    assert assignment.worker_id == 1
    assert d.task_state(job, 0) == TaskState.RUNNING
    # Only the root gets the task, with every node's hostname in placement order.
    launches = [e for e in d.effects if isinstance(e, LaunchTask)]
    assert [(e.worker_id, len(e.hosts)) for e in launches] == [(1, 3)]
    # task-started lists every node, root first; each node records the start.
    started = [e for e in d.events if isinstance(e, TaskStarted)]
    assert started[-1].workers == (1, 2, 3)
    for worker_id in (1, 2, 3):
        assert d.model.workers[worker_id].last_task_started[:2] == (job, 0)  # type: ignore[index]
    assert d.model.job_info(job).workers == (1, 2, 3)  # type: ignore[union-attr]


def test_nodes_come_from_one_group() -> None:
    # test_submit_mn_different_groups: g1×2 + g2×2 cannot host 3 nodes; a third g2 can.
    d = Driver()
    for group in ("g1", "g1", "g2", "g2"):
        connect(d, group)
    job = d.submit(mn_desc(3))
    assert d.run() == []
    connect(d, "g2")
    (assignment,) = d.run()
    assert assignment.workers == (3, 4, 5)
    assert d.task_state(job, 0) == TaskState.RUNNING


def test_every_node_must_outlive_the_time_request() -> None:
    # test_submit_mn_time_request: 2 unlimited + one 1 s worker do not satisfy 2 s.
    d = Driver()
    connect(d)
    connect(d)
    connect(d, time_limit=1.0)
    job = d.submit(mn_desc(3, time_request=2.0))
    assert d.run() == []
    connect(d, time_limit=3.0)
    (assignment,) = d.run()
    assert assignment.workers == (1, 2, 4)
    assert d.task_state(job, 0) == TaskState.RUNNING


def test_reserved_workers_take_no_other_task_and_are_not_idle() -> None:
    d = Driver()
    for _ in range(3):
        connect(d)
    mn = d.submit(mn_desc(2))
    sn = d.submit(submit_desc([[0, 9, 1]]))
    d.run()
    assert d.record(mn, 0).workers == (1, 2)
    # Every single-node task went to worker 3, the only one not held.
    assert {d.record(sn, t).worker for t in range(4)} == {3}
    assert d.stats(sn) == {"running": 4, "waiting": 6}
    for worker_id in (1, 2):
        assert not worker_is_idle(d.model, worker_id, d.now)
    assert worker_wire(d.model.worker_info(1))["runtime_info"] == {  # type: ignore[arg-type]
        "MultiNodeTask": {"main_node": True}
    }
    assert worker_wire(d.model.worker_info(2))["runtime_info"] == {  # type: ignore[arg-type]
        "MultiNodeTask": {"main_node": False}
    }
    # Finishing releases both nodes together; single-node tasks then use them.
    d.finish(mn, 0)
    assert d.model.workers[2].mn_task is None
    d.run()
    assert d.stats(sn) == {"running": 10}


def test_failure_and_cancel_release_every_node() -> None:
    d = Driver()
    for _ in range(2):
        connect(d)
    job = d.submit(mn_desc(2, [[0, 1, 1]]))
    d.run()
    d.fail(job, 0)
    assert d.task_state(job, 0) == TaskState.FAILED
    # The failed task keeps its worker list; the nodes run the next task.
    assert d.record(job, 0).workers == (1, 2)
    d.run()
    assert d.task_state(job, 1) == TaskState.RUNNING
    before = len(d.effects)
    d.do(d.model.cancel_job(job, now=d.now).events)
    kills = [e for e in d.effects[before:] if type(e).__name__ == "KillTask"]
    assert [(k.worker_id, k.task_id) for k in kills] == [(1, 1)]  # type: ignore[attr-defined]
    assert all(w.mn_task is None for w in d.model.workers.values())
    assert all(w.accepts_tasks for w in d.model.workers.values())


def test_root_loss_requeues_and_releases_secondary_loss_keeps_running() -> None:
    d = Driver()
    for _ in range(3):
        connect(d)
    job = d.submit(mn_desc(2, [[0, 1, 1]]))
    d.run()
    assert d.record(job, 0).workers == (1, 2)
    # Root lost: back to waiting, instance + 1, the secondary is free again.
    d.lose(1, LostReason.CONNECTION_LOST)
    record = d.record(job, 0)
    assert (record.state, record.instance, record.crash_count) == (TaskState.WAITING, 1, 1)
    assert d.model.workers[2].mn_task is None
    (assignment,) = d.run()
    assert assignment.workers == (2, 3)
    # Secondary lost: the task runs on; its recorded workers stay as they were.
    d.lose(3, LostReason.CONNECTION_LOST)
    assert d.task_state(job, 0) == TaskState.RUNNING
    assert d.record(job, 0).workers == (2, 3)
    d.finish(job, 0)
    assert d.task_state(job, 0) == TaskState.FINISHED


def test_unhostable_task_blocks_nothing() -> None:
    # test_scheduler_unschedulable_mn_blocker: groups A, B of one worker each.
    d = Driver()
    connect(d, "A")
    connect(d, "B")
    mn = d.submit(mn_desc(2, priority=10, time_request=3600.0))
    sn = d.submit(submit_desc([[1, 5, 1]]))
    assert not group_can_ever_host(d.model, d.now, d.model.jobs[mn].submits[0].request)
    d.run()
    assert d.stats(sn) == {"running": 5}
    assert d.task_state(mn, 0) == TaskState.WAITING


def test_hostable_waiting_task_keeps_its_group_free_from_lower_priorities() -> None:
    d = Driver()
    connect(d, "A")
    connect(d, "A")
    connect(d, "B")
    busy = d.submit(submit_desc(cpus="1", priority=20))
    d.run()
    assert d.record(busy, 0).worker == 1
    mn = d.submit(mn_desc(2, priority=10))
    low = d.submit(submit_desc([[0, 9, 1]], priority=0))
    higher = d.submit(submit_desc(priority=30))
    d.run()
    # Group A is drained for the MN task: low-priority work goes only to B; a task of
    # higher priority than the MN task may still use A.
    assert {d.record(low, t).worker for t in range(4)} == {3}
    assert d.stats(low) == {"running": 4, "waiting": 6}
    assert d.record(higher, 0).worker == 1
    d.finish(busy, 0)
    d.finish(higher, 0)
    (assignment,) = d.run()
    assert (assignment.job_id, assignment.workers) == (mn, (1, 2))


def test_priority_order_between_single_and_multi_node_tasks() -> None:
    d = Driver()
    connect(d, cpus=1)
    connect(d, cpus=1)
    high = d.submit(submit_desc(priority=5))
    mn = d.submit(mn_desc(2, priority=1))
    assert [a.job_id for a in schedule(d.model, d.now)] == [high]
    # A multi-node task of higher priority goes first and takes both workers.
    d2 = Driver()
    connect(d2, cpus=1)
    connect(d2, cpus=1)
    low = d2.submit(submit_desc(priority=0))
    mn2 = d2.submit(mn_desc(2, priority=1))
    assert [(a.job_id, a.workers) for a in schedule(d2.model, d2.now)] == [(mn2, (1, 2))]
    assert low != mn2 and mn != high


def test_many_tasks_of_one_submit_split_the_group() -> None:
    d = Driver()
    for _ in range(5):
        connect(d)
    job = d.submit(mn_desc(2, [[0, 2, 1]]))
    assignments = d.run()
    assert [a.workers for a in assignments] == [(1, 2), (3, 4)]
    assert d.stats(job) == {"running": 2, "waiting": 1}


def test_assignment_of_a_node_that_became_busy_is_ignored() -> None:
    d = Driver()
    connect(d)
    connect(d)
    job = d.submit(mn_desc(2))
    sn = d.submit(submit_desc())
    (mn_assignment,) = schedule(d.model, d.now)
    assert mn_assignment.job_id == job
    # Worker 2 got a single-node task in between: the reservation cannot be made.
    d.do(d.model.assign([Assignment(sn, 0, 2, mn_assignment.allocation)], now=d.now))
    assert d.record(sn, 0).worker == 2
    d.do(d.model.assign([mn_assignment], now=d.now))
    assert d.task_state(job, 0) == TaskState.WAITING
    assert job not in {key[0] for key in d.model.workers[1].tasks}
    assert d.model.workers[1].mn_task is None


def test_pick_nodes_prefers_the_lowest_ids() -> None:
    assert pick_nodes({"a": [5, 6, 7], "b": [1, 9]}, 2) == (1, 9)
    assert pick_nodes({"a": [5, 6, 7], "b": [1, 9]}, 3) == (5, 6, 7)
    assert pick_nodes({"a": [5]}, 2) is None


def test_group_size_for_explain() -> None:
    d = Driver()
    for group in ("a", "a", "b"):
        connect(d, group)
    assert [worker_group_size(d.model, w) for w in (1, 2, 3, 99)] == [2, 2, 1, 0]
    d.lose(2, LostReason.CONNECTION_LOST)
    assert worker_group_size(d.model, 1) == 1


def test_request_variants() -> None:
    multi = parse_task_request(None, n_nodes=2)
    single = parse_task_request("1")
    check_request_variants([multi])
    check_request_variants([single, parse_task_request("2")])
    with pytest.raises(HqError, match="Resources mixes multi-node and non-multi-node requests"):
        check_request_variants([multi, single])
    with pytest.raises(HqError, match="Resource request is empty"):
        check_request_variants([ResourceRequest(())])


def test_node_file_names() -> None:
    # test_submit_mn_complex_hostname: short names, but IPv4 addresses stay whole.
    assert short_hostname("cn690.karolina.it4i.cz") == "cn690"
    assert short_hostname("worker1") == "worker1"
    assert short_hostname("10.0.0.7") == "10.0.0.7"


def test_stopping_a_node() -> None:
    d = Driver()
    for _ in range(3):
        connect(d)
    job = d.submit(mn_desc(2, [[0, 1, 1]]))
    d.run()
    # A stopped secondary: the task runs on; a stopping worker is not a free node.
    d.do(d.model.stop_worker(2, now=d.now))
    d.lose(2, LostReason.STOPPED)
    assert d.task_state(job, 0) == TaskState.RUNNING
    assert d.run() == []  # worker 3 alone is not enough for task 1
    # A stopped root: back to waiting without counting as a crash.
    d.do(d.model.stop_worker(1, now=d.now))
    d.lose(1, LostReason.STOPPED)
    record = d.record(job, 0)
    assert (record.state, record.crash_count, record.instance) == (TaskState.WAITING, 0, 1)
    assert d.model.workers[3].mn_task is None
    connect(d)
    assert [a.workers for a in d.run()] == [(3, 4)]

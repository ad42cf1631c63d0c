"""Scheduling decisions: placement, priorities, time requests, resources, cost."""

from __future__ import annotations

import time

import pytest

from hyperq.common.errors import HqError
from hyperq.common.resources import (
    ResourceDescriptor,
    ResourceDescriptorItem,
    parse_task_request,
)
from hyperq.server.model.events import LostReason
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.scheduler import schedule, worker_is_idle
from tests.test_model import Driver, submit_desc, worker_config


def test_compact_placement_with_workers_joining_one_by_one() -> None:
    # server.md §9: 8 one-CPU jobs while 4-CPU workers join one by one → 2 workers.
    d = Driver()
    for _ in range(8):
        d.connect(cpus=4)
        d.submit()
        d.run()
        d.tick(0.1)
    used = {d.model.job_info(job).workers for job in range(1, 9)}  # type: ignore[union-attr]
    assert used == {(1,), (2,)}
    assert [d.model.job_info(j).workers for j in (1, 4, 5, 8)] == [  # type: ignore[union-attr]
        (1,),
        (1,),
        (2,),
        (2,),
    ]


def test_busy_workers_are_filled_before_idle_ones() -> None:
    d = Driver()
    for _ in range(3):
        d.connect(cpus=2)
    wide = d.submit(submit_desc(cpus="2"))
    narrow = d.submit()
    d.run()
    assert (d.record(wide, 0).worker, d.record(narrow, 0).worker) == (1, 2)
    d.finish(wide, 0)
    # Worker 1 is idle now, worker 2 busy with a free CPU: the next task goes to 2.
    later = d.submit()
    d.run()
    assert d.record(later, 0).worker == 2
    # Once 2 is full, the lowest idle worker comes next.
    last = d.submit()
    d.run()
    assert d.record(last, 0).worker == 1


def test_priorities_then_job_id() -> None:
    # server.md §9: priorities 1,3,3,0 run in order job2, job3, job1, job4.
    d = Driver()
    for priority in (1, 3, 3, 0):
        d.submit(submit_desc(priority=priority))
    d.connect(cpus=1)
    order = []
    for _ in range(4):
        (assignment,) = d.run()
        order.append(assignment.job_id)
        d.finish(assignment.job_id, assignment.task_id)
    assert order == [2, 3, 1, 4]


def test_one_batch_follows_priority_job_and_task_order() -> None:
    d = Driver()
    low = d.submit(submit_desc([[0, 2, 1]]))
    high = d.submit(submit_desc([[5, 7, 1]], priority=2))
    d.connect(cpus=5)
    assignments = d.schedule()
    assert [(a.job_id, a.task_id) for a in assignments] == [
        (high, 5),
        (high, 6),
        (high, 7),
        (low, 0),
        (low, 1),
    ]


def test_time_request_against_worker_lifetime() -> None:
    # tests/test_time.py::test_job_time_request1: only workers 3 and 4 qualify.
    d = Driver()
    for limit in (2.0, 4.0, 10.0, None):
        d.connect(cpus=1, time_limit=limit)
    job = d.submit(submit_desc([[1, 20, 1]], time_request=5.0))
    for _ in range(10):
        for assignment in d.run():
            d.finish(assignment.job_id, assignment.task_id)
    info = d.model.job_info(job)
    assert info is not None and info.workers == (3, 4)
    assert info.task_stats["finished"] == 20


def test_time_request_as_the_worker_ages() -> None:
    # tests/test_time.py::test_job_time_request2: 4 s worker, 2 s requests.
    d = Driver()
    d.connect(cpus=1, time_limit=4.0)
    first = d.submit(submit_desc(time_request=2.0))
    d.run()
    d.finish(first, 0)
    d.tick(2.2)
    second = d.submit(submit_desc(time_request=2.0))
    assert d.run() == []
    assert d.task_state(second, 0) == TaskState.WAITING
    # Zero time request still runs on an ageing worker, never on an expired one.
    third = d.submit()
    assert [a.job_id for a in d.run()] == [third]
    d.tick(10)
    fourth = d.submit()
    assert d.run() == []
    assert d.task_state(fourth, 0) == TaskState.WAITING


def test_resources_must_fit() -> None:
    d = Driver()
    d.connect(cpus=2)
    big = d.submit(submit_desc(cpus="4"))
    gpu = d.submit(submit_desc(resources=["gpus/nvidia=1"]))
    small = d.submit(submit_desc(cpus="2"))
    tiny = d.submit()
    # A request nobody can serve blocks neither the queue nor lower-priority work.
    assert [(a.job_id, a.task_id) for a in d.run()] == [(small, 0)]
    d.finish(small, 0)
    assert [a.job_id for a in d.run()] == [tiny]
    assert d.task_state(big, 0) == TaskState.WAITING
    assert d.task_state(gpu, 0) == TaskState.WAITING
    gpus = ResourceDescriptor(
        (
            ResourceDescriptorItem.of_range("cpus", 0, 0),
            ResourceDescriptorItem.of_list("gpus/nvidia", ["a", "b"]),
        )
    )
    d.do(
        d.model.worker_connected(
            {"hostname": "g", "time_limit": None, "resources": gpus.to_json()}, now=d.now
        )
    )
    assert [(a.job_id, a.worker_id) for a in d.run()] == [(gpu, 2)]


def test_schedule_leaves_the_model_unchanged_and_respects_the_limit() -> None:
    d = Driver()
    d.connect(cpus=3)
    d.connect(cpus=3)
    d.submit(submit_desc([[0, 9, 1]]))
    before = d.model.snapshot()
    assignments = schedule(d.model, d.now, limit=4)
    assert len(assignments) == 4
    assert d.model.snapshot() == before
    assert schedule(d.model, d.now, limit=0) == []
    d.do(d.model.assign(assignments, now=d.now))
    launched = [e.allocation for e in d.effects]  # type: ignore[union-attr]
    assert launched == [a.allocation for a in assignments]
    # Different tasks never share a CPU.
    labels = [(*a.allocation.cpu_labels(), a.worker_id) for a in assignments]
    assert len(set(labels)) == 4


def test_requeued_tasks_go_first_in_task_order() -> None:
    d = Driver()
    lost = d.connect(cpus=2)
    job = d.submit(submit_desc([[0, 9, 1]]))
    d.run()  # tasks 0 and 1
    d.lose(lost, LostReason.CONNECTION_LOST)
    d.connect(cpus=3)
    assert [a.task_id for a in d.run()] == [0, 1, 2]
    assert [d.record(job, t).instance for t in (0, 1, 2)] == [1, 1, 0]


def test_workers_that_stop_or_left_get_nothing() -> None:
    d = Driver()
    stopping = d.connect(cpus=4)
    gone = d.connect(cpus=4)
    d.do(d.model.stop_worker(stopping, now=d.now))
    d.lose(gone, LostReason.IDLE_TIMEOUT)
    d.submit()
    assert d.run() == []
    assert d.connect(cpus=1) == 3
    assert [a.worker_id for a in d.run()] == [3]


def test_connected_workers_follow_comings_goings_and_restores() -> None:
    # The scheduler's list of connected workers is cached; it must follow every way the
    # set changes, and departed workers must not stay in it.
    d = Driver()
    ids = [d.connect(cpus=1) for _ in range(50)]
    for worker_id in ids[:-2]:
        d.lose(worker_id, LostReason.IDLE_TIMEOUT)
    assert [w.id for w in d.model.connected_workers()] == ids[-2:]
    newcomer = d.connect(cpus=1)
    assert [w.id for w in d.model.connected_workers()] == [*ids[-2:], newcomer]
    d.lose(ids[-1], LostReason.CONNECTION_LOST)
    assert [w.id for w in d.model.connected_workers()] == [ids[-2], newcomer]
    del d.model.workers[ids[-2]]  # as a restore drops a worker it will not wait for
    assert [w.id for w in d.model.connected_workers()] == [newcomer]
    d.submit()
    assert {a.worker_id for a in d.run()} == {newcomer}


def test_multi_node_requests_are_left_alone() -> None:
    d = Driver()
    d.connect(cpus=4)
    desc = submit_desc()
    desc["resources"] = parse_task_request(None, n_nodes=2).to_wire()
    job = d.submit(desc)
    assert d.run() == []
    assert d.task_state(job, 0) == TaskState.WAITING


def test_idle_notion_respects_time_requests() -> None:
    d = Driver()
    short = d.connect(cpus=2, time_limit=5.0)
    assert worker_is_idle(d.model, short, d.now)
    d.submit(submit_desc(time_request=60.0))
    # The only waiting task needs more time than the worker has left: idle all the same.
    assert d.run() == []
    assert worker_is_idle(d.model, short, d.now)
    # A task it could run makes it not idle until it is done.
    job = d.submit()
    assert not worker_is_idle(d.model, short, d.now)
    d.run()
    assert not worker_is_idle(d.model, short, d.now)
    d.finish(job, 0)
    assert worker_is_idle(d.model, short, d.now)
    # Waiting work that needs resources the worker lacks does not keep it either.
    d.submit(submit_desc(cpus="3"))
    assert worker_is_idle(d.model, short, d.now)
    assert not worker_is_idle(d.model, 99, d.now)


def test_pass_cost_does_not_grow_with_waiting_tasks() -> None:
    d = Driver()
    for _ in range(4):
        d.connect(cpus=16)
    d.submit(submit_desc([[0, 999_999, 1]]))
    d.submit(submit_desc([[0, 999_999, 1]], cpus="2"))
    started = time.perf_counter()
    assignments = d.run(limit=64)
    first_pass = time.perf_counter() - started
    assert len(assignments) == 64
    assert d.model.record_count() == 64
    # Everything is full: a pass over two million waiting tasks finds nothing, quickly.
    started = time.perf_counter()
    for _ in range(100):
        assert schedule(d.model, d.now) == []
    assert time.perf_counter() - started < 0.5
    assert first_pass < 0.5


def test_worker_config_helper_round_trips() -> None:
    config = worker_config(cpus=3, hostname="h", time_limit=1.5)
    descriptor = ResourceDescriptor.from_json(config["resources"])
    assert descriptor.get("cpus").unit_count() == 3  # type: ignore[union-attr]


def test_open_job_with_many_submits_stays_cheap() -> None:
    d = Driver()
    d.connect(cpus=8)
    job = d.open_job()
    started = time.perf_counter()
    for _ in range(3_000):
        d.submit(job_id=job)
    assert d.model.job_task_items(job) == [(0, 2_999, 1)]
    assert [a.task_id for a in d.run()] == list(range(8))
    # The worker is full: passes over 2 992 waiting submits must not cost much each.
    for _ in range(100):
        assert schedule(d.model, d.now) == []
    assert time.perf_counter() - started < 5.0
    with pytest.raises(HqError, match=r"^Task 5 already exists in job 1\.$"):
        d.model.submit(submit_desc([[5, 5, 1]]), now=d.now, job_id=job)

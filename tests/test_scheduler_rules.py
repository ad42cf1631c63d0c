"""Scheduler rules of cluster.md §3 in the pure model: minimal utilization, weights among
equal priorities and the priority gap, each case as the spec works it through."""

from __future__ import annotations

from typing import Any

from hyperq.common.resources import (
    DEFAULT_WEIGHT,
    ResourceDescriptor,
    ResourceDescriptorItem,
    parse_task_request,
)
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.scheduler import priority_gap, utilization_need
from tests.test_model import Driver, submit_desc


def connect(d: Driver, *items: ResourceDescriptorItem, min_utilization: float = 0.0) -> int:
    config: dict[str, Any] = {
        "hostname": "w",
        "time_limit": None,
        "resources": ResourceDescriptor(items).to_json(),
        "min_utilization": min_utilization,
    }
    (event,) = d.do(d.model.worker_connected(config, now=d.now))
    return event.id  # type: ignore[attr-defined]


def cpus(n: int) -> ResourceDescriptorItem:
    return ResourceDescriptorItem.of_range("cpus", 0, n - 1)


def desc(
    cpus: str | None = "1",
    resources: tuple[str, ...] = (),
    *,
    count: int = 1,
    priority: int = 0,
    weight: float = 1.0,
) -> dict[str, Any]:
    out = submit_desc([[0, count - 1, 1]], priority=priority)
    request = parse_task_request(cpus, resources, weight=int(weight * DEFAULT_WEIGHT))
    out["resources"] = request.to_wire()
    return out


def running(d: Driver, job: int) -> int:
    return d.stats(job).get("running", 0)


# --- §3.1 minimal utilization ------------------------------------------------------------


def test_mu_case1_all_beats_an_underfilled_set() -> None:
    d = Driver()
    connect(d, cpus(12), min_utilization=1.0)
    job1 = d.submit(desc("3", count=3, weight=2))
    job2 = d.submit(desc("all"))
    d.run()
    assert d.stats(job1) == {"waiting": 3}
    assert d.stats(job2) == {"running": 1}


def test_mu_case2_weight_prefers_job1_when_both_fill() -> None:
    d = Driver()
    connect(d, cpus(12), min_utilization=1.0)
    job1 = d.submit(desc("3", count=4, weight=2))
    job2 = d.submit(desc("all"))
    d.run()
    assert d.stats(job1) == {"running": 4}
    assert d.stats(job2) == {"waiting": 1}


def test_mu_case3_mixed_set() -> None:
    d = Driver()
    connect(d, cpus(12), min_utilization=1.0)
    job1 = d.submit(desc("3", count=3, weight=2))
    job2 = d.submit(desc("6", count=3))
    d.run()
    assert running(d, job1) == 2
    assert running(d, job2) == 1


def test_mu_gives_nothing_rather_than_too_little_and_counts_used_cpus() -> None:
    d = Driver()
    worker = connect(d, cpus(4), min_utilization=0.75)
    small = d.submit(desc("1", count=2))
    assert d.run() == []
    assert utilization_need(d.model.workers[worker]) == 30_000
    more = d.submit(desc("1"))
    d.run()
    assert running(d, small) + running(d, more) == 3
    # 3 of 4 CPUs busy: the need is met, one more task may come alone.
    assert utilization_need(d.model.workers[worker]) == 0
    last = d.submit(desc("1"))
    d.run()
    assert running(d, last) == 1


def test_mu_off_below_a_thousandth() -> None:
    d = Driver()
    connect(d, cpus(4), min_utilization=0.0005)
    job = d.submit(desc("1"))
    d.run()
    assert running(d, job) == 1


# --- §3.2 weights -------------------------------------------------------------------------


def test_weight_wins_among_equal_priorities() -> None:
    # test_resource_weight, with the weighted job submitted second.
    d = Driver()
    connect(d, cpus(2), ResourceDescriptorItem.of_sum("gpus", 2 * DEFAULT_WEIGHT))
    plain = d.submit(desc("2", ("gpus=2",)))
    weighted = d.submit(desc("2", ("gpus=1",), weight=2.5))
    d.run()
    assert d.stats(weighted) == {"running": 1}
    assert d.stats(plain) == {"waiting": 1}


def test_same_request_goes_by_job_then_task() -> None:
    d = Driver()
    connect(d, cpus(2))
    first = d.submit(desc("1", count=2))
    second = d.submit(desc("1", count=2))
    d.run()
    assert d.stats(first) == {"running": 2}
    assert d.stats(second) == {"waiting": 2}


# --- §3.3 priority gap --------------------------------------------------------------------


def test_unschedulable_sn_blocker_keeps_lower_priorities_waiting() -> None:
    # test_scheduler_unschedulable_sn_blocker (4 CPUs).
    d = Driver()
    connect(d, cpus(4))
    top = d.submit(desc("1", priority=1000))
    d.run()
    blocker = d.submit(desc("4", priority=100))
    mid = d.submit(desc("2", count=5, priority=50))
    low = d.submit(desc("4", count=5, priority=1))
    d.run()
    assert running(d, top) == 1
    assert d.stats(blocker) == {"waiting": 1}
    assert d.stats(mid) == {"waiting": 5}
    assert d.stats(low) == {"waiting": 5}
    d.finish(top, 0)
    d.run()
    assert d.stats(blocker) == {"running": 1}


def foo(n: int) -> ResourceDescriptorItem:
    return ResourceDescriptorItem.of_list("foo", [str(i) for i in range(1, n + 1)])


def test_low_priority_job_runs_in_the_gap() -> None:
    # test_resources_and_priorities_*: foo=[1,2,3,4], 8 CPUs; a prio -1 cpus=2 job runs.
    for before in (True, False):
        d = Driver()
        if before:
            connect(d, cpus(8), foo(4))
        jobs = [d.submit(desc("1", ("foo=2",))) for _ in range(4)]
        low = d.submit(desc("2", priority=-1))
        if not before:
            connect(d, cpus(8), foo(4))
        d.run()
        assert sum(running(d, job) for job in jobs) == 2
        assert running(d, low) == 1


def test_resources_and_many_priorities() -> None:
    # foo ×6, 12 CPUs: of 9 foo=2 jobs the 3 highest run; of 12 cpus=1 jobs the 9 highest.
    d = Driver()
    connect(d, cpus(12), foo(6))
    foo_jobs = [d.submit(desc("1", ("foo=2",), priority=100 + i)) for i in range(9)]
    cpu_jobs = [d.submit(desc("1", priority=i)) for i in range(12)]
    d.run()
    assert [running(d, job) for job in foo_jobs] == [0] * 6 + [1] * 3
    assert [running(d, job) for job in cpu_jobs] == [0] * 3 + [1] * 9
    # A later pass changes nothing: the gap is used up.
    assert d.run() == []


def test_gap_arithmetic() -> None:
    d = Driver()
    worker_id = connect(d, cpus(8), foo(4))
    worker = d.model.workers[worker_id]
    blocker = parse_task_request("1", ["foo=2"])
    assert priority_gap(worker, blocker, {}) == {"cpus": 60_000, "foo": 0}
    assert priority_gap(worker, blocker, {"cpus": 10_000}) == {"cpus": 50_000, "foo": 0}
    assert priority_gap(worker, parse_task_request("all"), {}) == {"cpus": 0, "foo": 0}


def test_equal_priority_is_not_blocked() -> None:
    d = Driver()
    connect(d, cpus(4))
    busy = d.submit(desc("1"))
    d.run()
    big = d.submit(desc("4"))
    small = d.submit(desc("1", count=3))
    d.run()
    assert running(d, busy) == 1
    assert d.stats(big) == {"waiting": 1}
    assert running(d, small) == 3
    assert d.task_state(big, 0) == TaskState.WAITING

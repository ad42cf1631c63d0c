"""The allocator's pure decisions (alloc.md §4, §5): demand, permit, limiter, states.

No processes, no trio: a model fed with submits, queues built by hand.
"""

from __future__ import annotations

from typing import Any

from hyperq.alloc import decisions
from hyperq.alloc.decisions import Demand, Status
from hyperq.alloc.queue import (
    DELAYS,
    ENDED,
    FINISHED,
    QUEUED,
    RUNNING,
    Allocation,
    ParamError,
    Queue,
    QueueParams,
    RateLimiter,
)
from hyperq.common.resources import ResourceDescriptor, ResourceDescriptorItem
from hyperq.server.model.state import Model
from tests.test_model import submit_desc


def cpus_json(n: int) -> dict[str, Any]:
    return ResourceDescriptor((ResourceDescriptorItem.of_range("cpus", 0, n - 1),)).to_json()


def make_queue(
    queue_id: int = 1,
    *,
    backlog: int = 1,
    per_alloc: int = 1,
    timelimit: float = 3600.0,
    max_count: int | None = None,
    cpus: int | None = None,
    known_cpus: int | None = None,
    min_utilization: float = 0.0,
) -> Queue:
    params = QueueParams(
        manager="slurm",
        backlog=backlog,
        max_workers_per_alloc=per_alloc,
        timelimit=timelimit,
        max_worker_count=max_count,
        min_utilization=min_utilization,
        cli_resource_descriptor=cpus_json(cpus) if cpus is not None else None,
    )
    queue = Queue(queue_id, params)
    if known_cpus is not None:
        queue.known_resources = cpus_json(known_cpus)
    return queue


def submitted(*submits: tuple[int, str, float]) -> Model:
    model = Model()
    for count, cpus, time_request in submits:
        desc = submit_desc([[0, count - 1, 1]], cpus=cpus, time_request=time_request)
        for event in model.submit(desc, now=1.0):
            model.apply(event)
    return model


def add_queued(queue: Queue, allocation_id: str, workers: int) -> Allocation:
    allocation = Allocation(allocation_id, queue.id, workers, 0.0, "/dir")
    queue.allocations[allocation_id] = allocation
    return allocation


# --- demand (§5.3) ------------------------------------------------------------------------


def test_unknown_resources_probe_with_one_worker() -> None:
    model = submitted((100, "1", 0.0))
    first, second = make_queue(1, backlog=4), make_queue(2, backlog=4)
    got = decisions.demand(model, [first, second])
    # One unlimited imagined worker takes every task: one probe allocation, first queue.
    assert got[1] == Demand(sn_workers=1)
    assert got[2] == Demand(sn_workers=0)


def test_known_resources_spread_tasks_over_workers() -> None:
    model = submitted((5, "1", 0.0))
    queue = make_queue(backlog=5, per_alloc=2, known_cpus=1)
    assert decisions.demand(model, [queue])[1].sn_workers == 5
    # 5 one-CPU tasks, 1-CPU workers, backlog 5, -m 2: allocations of 2, 2, 1.
    assert decisions.permit(queue, Demand(5)) == [2, 2, 1]


def test_demand_is_capped_by_backlog_times_workers_per_alloc() -> None:
    model = submitted((1000, "1", 0.0))
    queue = make_queue(backlog=2, per_alloc=3, cpus=4)
    assert decisions.demand(model, [queue])[1].sn_workers == 6


def test_tasks_pack_onto_a_worker() -> None:
    model = submitted((8, "1", 0.0))
    queue = make_queue(backlog=10, cpus=4)
    assert decisions.demand(model, [queue])[1].sn_workers == 2


def test_partial_worker_resources_cannot_run_bigger_tasks() -> None:
    model = submitted((3, "4", 0.0))
    queue = make_queue(backlog=3, cpus=2)
    assert decisions.demand(model, [queue])[1].sn_workers == 0


def test_cli_descriptor_leaves_other_resources_unlimited() -> None:
    model = Model()
    desc = submit_desc([[0, 1, 1]], cpus="1", resources=["gpus=1"])
    for event in model.submit(desc, now=1.0):
        model.apply(event)
    queue = make_queue(backlog=4, cpus=1)
    assert decisions.demand(model, [queue])[1].sn_workers == 2
    # Known resources without gpus: the tasks cannot run there.
    queue.known_resources = cpus_json(8)
    assert decisions.demand(model, [queue])[1].sn_workers == 0


def test_time_request_equal_to_time_limit_fits_longer_does_not() -> None:
    equal = submitted((1, "1", 600.0))
    assert decisions.demand(equal, [make_queue(timelimit=600.0)])[1].sn_workers == 1
    longer = submitted((1, "1", 3600.0))
    assert decisions.demand(longer, [make_queue(timelimit=1800.0)])[1].sn_workers == 0


def test_earlier_queue_takes_tasks_first() -> None:
    model = submitted((3, "1", 0.0))
    first = make_queue(1, backlog=2, known_cpus=1)
    second = make_queue(2, backlog=5, known_cpus=1)
    got = decisions.demand(model, [first, second])
    assert (got[1].sn_workers, got[2].sn_workers) == (2, 1)


def test_min_utilization_drops_underused_workers() -> None:
    model = submitted((1, "1", 0.0))
    assert decisions.demand(model, [make_queue(cpus=4, min_utilization=0.5)])[1].sn_workers == 0
    assert decisions.demand(model, [make_queue(cpus=4, min_utilization=0.25)])[1].sn_workers == 1


def test_no_waiting_tasks_no_demand() -> None:
    assert decisions.demand(Model(), [make_queue(cpus=1)])[1] == Demand()


def test_multi_node_demand_goes_to_a_big_enough_queue() -> None:
    from hyperq.common.resources import ResourceRequest

    request = ResourceRequest((), n_nodes=2)
    small, big = make_queue(1, per_alloc=1), make_queue(2, per_alloc=2)
    assert decisions.multi_node_demand({request: 3}, [small, big]) == {2: (3, 2)}


# --- permit (§5.4) ------------------------------------------------------------------------


def test_permit_fills_backlog_minus_queued() -> None:
    queue = make_queue(backlog=3, per_alloc=2)
    add_queued(queue, "a", 2)
    # 5 workers wanted, 2 already queued: 3 more, in allocations of 2 and 1.
    assert decisions.permit(queue, Demand(5)) == [2, 1]


def test_permit_nothing_when_backlog_full() -> None:
    queue = make_queue(backlog=1)
    add_queued(queue, "a", 1)
    assert decisions.permit(queue, Demand(10)) == []


def test_permit_respects_max_worker_count() -> None:
    queue = make_queue(backlog=5, per_alloc=4, max_count=6)
    # -m 4 with a cap of 6: allocations of 4 and 2.
    assert decisions.permit(queue, Demand(100)) == [4, 2]
    running = add_queued(queue, "r", 4)
    running.state = RUNNING
    assert decisions.permit(queue, Demand(100)) == [2]
    add_queued(queue, "q", 2)
    assert decisions.permit(queue, Demand(100)) == []


def test_permit_multi_node_first() -> None:
    queue = make_queue(backlog=4, per_alloc=4)
    assert decisions.permit(queue, Demand(0, mn_allocs=2, mn_per_alloc=3)) == [3, 3]


def test_has_space() -> None:
    queue = make_queue(backlog=1, max_count=2)
    assert queue.has_space()
    add_queued(queue, "a", 1)
    assert not queue.has_space()


# --- rate limiter, back-off, auto-pause (§5.5) ---------------------------------------------


def test_back_off_after_submit_failures() -> None:
    limiter = RateLimiter()
    assert limiter.may_submit(0.0)
    limiter.attempt(0.0)
    limiter.submit_failed()
    assert not limiter.may_submit(DELAYS[1] - 1)
    assert limiter.may_submit(DELAYS[1])
    for _ in range(10):
        limiter.submit_failed()
    assert limiter.index == len(DELAYS) - 1
    limiter.submit_succeeded()
    assert limiter.index == 0 and limiter.submit_fails == 0


def test_submit_success_keeps_back_off_while_allocations_fail() -> None:
    limiter = RateLimiter()
    limiter.allocation_failed()
    limiter.submit_succeeded()
    assert limiter.index == 1
    limiter.allocation_succeeded()
    assert limiter.index == 0 and limiter.alloc_fails == 0


def test_auto_pause_reasons() -> None:
    limiter = RateLimiter()
    assert limiter.pause_reason(1, 3) is None
    for _ in range(3):
        limiter.allocation_failed()
    assert limiter.pause_reason(1, 3) == (
        "The queue 1 had too many failed allocations, it will be paused."
    )
    limiter = RateLimiter()
    for _ in range(10):
        limiter.submit_failed()
    assert limiter.pause_reason(7, 3) == (
        "The queue 7 had too many failed submissions, it will be paused."
    )


# --- allocation states (§4) ----------------------------------------------------------------


def test_worker_connect_then_lose_finishes_allocation() -> None:
    allocation = Allocation("1.job", 1, 2, 0.0, "/d")
    change = decisions.worker_connected(allocation, 5, now=10.0)
    assert change.started and allocation.state == RUNNING and allocation.started_at == 10.0
    assert not decisions.worker_connected(allocation, 6, now=11.0).started
    assert decisions.worker_lost(allocation, "IdleTimeout", 100.0, now=200.0) == decisions.Change()
    change = decisions.worker_lost(allocation, "IdleTimeout", 100.0, now=201.0)
    assert change.finished and change.outcome == "success"
    assert allocation.state == FINISHED and allocation.status() == "finished"


def test_quickly_crashed_workers_fail_the_allocation() -> None:
    allocation = Allocation("1.job", 1, 1, 0.0, "/d")
    decisions.worker_connected(allocation, 1, now=0.0)
    change = decisions.worker_lost(allocation, "ConnectionLost", 5.0, now=5.0)
    assert change.outcome == "fail" and allocation.status() == "failed"
    # A long-lived worker that lost its connection did not crash.
    assert not decisions.crashed("ConnectionLost", 61.0)
    assert not decisions.crashed("IdleTimeout", 1.0)


def test_status_transitions() -> None:
    allocation = Allocation("1.job", 1, 1, 0.0, "/d")
    assert decisions.status_changed(allocation, Status("queued"), 1.0) == decisions.Change()
    # The batch system says running before any worker connected: journaled as started
    # (a restored server must know it), once.
    assert decisions.status_changed(allocation, Status("running", 2.0), 3.0).started
    assert allocation.state == RUNNING and allocation.started_at == 2.0
    assert not decisions.status_changed(allocation, Status("running", 2.0), 4.0).started
    assert not decisions.worker_connected(allocation, 7, 5.0).started
    change = decisions.status_changed(allocation, Status("failed", 2.0, 9.0), 10.0)
    assert change.finished and change.outcome == "fail"
    assert allocation.state == ENDED and allocation.ended_at == 9.0
    assert allocation.status() == "failed"


def test_repeated_status_errors_give_up() -> None:
    queued = Allocation("1.job", 1, 1, 0.0, "/d")
    for _ in range(decisions.MAX_STATUS_ERRORS):
        assert not decisions.status_failed(queued, 1.0).finished
    assert decisions.status_failed(queued, 1.0).finished
    assert queued.status() == "failed"
    running = Allocation("2.job", 1, 1, 0.0, "/d", state=RUNNING)
    for _ in range(decisions.MAX_STATUS_ERRORS + 1):
        decisions.status_failed(running, 1.0)
    assert running.status() == "finished"
    assert QUEUED != running.state


# --- parameters ----------------------------------------------------------------------------


def test_params_round_trip_and_validation() -> None:
    params = make_queue(cpus=2, max_count=4).params
    assert QueueParams.from_wire(params.to_wire()) == params
    bad = params.to_wire() | {"backlog": 0}
    try:
        QueueParams.from_wire(bad)
    except ParamError as error:
        assert "backlog" in str(error)
    else:
        raise AssertionError("backlog 0 accepted")
    for field, value in [("manager", "lsf"), ("timelimit", "1h"), ("worker_args", [1])]:
        try:
            QueueParams.from_wire(params.to_wire() | {field: value})
        except ParamError as error:
            assert field in str(error)
        else:
            raise AssertionError(f"{field}={value!r} accepted")

"""Property test of the scheduler (hypothesis): for random workers, groups, requests,
priorities and multi-node tasks, through connects, submits, passes, finishes and losses,
no worker is ever over-allocated, no reserved worker runs another task, and a
higher-priority task that fits is never passed over for a lower one."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hyperq.common.errors import HqError
from hyperq.common.resources import (
    AMOUNT_SCALE,
    ResourceDescriptor,
    ResourceDescriptorItem,
    ResourceRequest,
    fits_ever,
    parse_task_request,
)
from hyperq.server.model import scheduler
from hyperq.server.model.events import LostReason
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.scheduler import free_nodes_by_group
from hyperq.server.model.state import Assignment
from tests.test_model import Driver, submit_desc

workers_st = st.fixed_dictionaries(
    {
        "cpus": st.integers(1, 6),
        "foo": st.integers(0, 3),
        "group": st.sampled_from(["a", "b"]),
        "time_limit": st.sampled_from([None, None, 30.0, 3600.0]),
    }
)
submits_st = st.fixed_dictionaries(
    {
        "count": st.integers(1, 4),
        "cpus": st.sampled_from(["1", "2", "3", "all", "1.5"]),
        "foo": st.integers(0, 2),
        "priority": st.integers(0, 3),
        "nodes": st.sampled_from([0, 0, 0, 0, 1, 2, 3]),
        "time_request": st.sampled_from([0.0, 0.0, 60.0]),
    }
)
steps_st = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), workers_st),
        st.tuples(st.just("submit"), submits_st),
        st.tuples(st.just("run"), st.none()),
        st.tuples(st.just("finish"), st.integers(0, 50)),
        st.tuples(st.just("lose"), st.integers(0, 10)),
    ),
    min_size=1,
    max_size=25,
)


def connect(d: Driver, spec: dict[str, Any]) -> None:
    items = [ResourceDescriptorItem.of_range("cpus", 0, spec["cpus"] - 1)]
    if spec["foo"]:
        items.append(ResourceDescriptorItem.of_list("foo", [str(i) for i in range(spec["foo"])]))
    config = {
        "hostname": f"h{len(d.model.workers) + 1}",
        "group": spec["group"],
        "time_limit": spec["time_limit"],
        "min_utilization": spec.get("min_utilization", 0.0),
        "resources": ResourceDescriptor(tuple(items)).to_json(),
    }
    d.do(d.model.worker_connected(config, now=d.now))


def submit(d: Driver, spec: dict[str, Any]) -> None:
    desc = submit_desc([[0, spec["count"] - 1, 1]], priority=spec["priority"])
    resources = [f"foo={spec['foo']}"] if spec["foo"] else []
    request = parse_task_request(
        spec["cpus"], resources, n_nodes=spec["nodes"], min_time=spec["time_request"]
    )
    desc["resources"] = request.to_wire()
    d.submit(desc)


def check_no_over_allocation(d: Driver) -> None:
    for worker in d.model.workers.values():
        if not worker.is_connected or worker.descriptor is None:
            continue
        shares: dict[tuple[str, str], int] = defaultdict(int)
        for job_id, task_id in worker.tasks:
            record = d.model.jobs[job_id].records[task_id]
            if record.allocation is None:
                continue
            for res in record.allocation.resources:
                item = worker.descriptor.get(res.name)
                assert item is not None
                for label, share in res.units:
                    shares[(res.name, label)] += share
        assert all(total <= AMOUNT_SCALE for total in shares.values())
        per_resource: dict[str, int] = defaultdict(int)
        for (name, _), share in shares.items():
            per_resource[name] += share
        for name, total in per_resource.items():
            item = worker.descriptor.get(name)
            assert item is not None and total <= item.capacity()


def check_reservations(d: Driver) -> None:
    holders: dict[tuple[int, int], list[int]] = defaultdict(list)
    for worker in d.model.workers.values():
        if worker.mn_task is not None:
            assert worker.is_connected
            # The root holds only its multi-node task; a secondary holds nothing.
            assert worker.tasks <= {worker.mn_task}
            holders[worker.mn_task].append(worker.id)
    for (job_id, task_id), ids in holders.items():
        record = d.model.jobs[job_id].records[task_id]
        assert record.placed
        assert set(ids) <= set(record.workers)
        groups = {d.model.workers[w].group for w in record.workers}
        assert len(groups) == 1


def blocked_by_higher(d: Driver, request: ResourceRequest, priority: int, worker_id: int) -> bool:
    """Some waiting task above `priority` could ever run on this worker: the gap rule
    (cluster.md §3.3) may then legitimately keep `request` off it."""
    worker = d.model.workers[worker_id]
    for submit in d.model.ready.values():
        if submit.priority <= priority:
            continue
        if submit.request.n_nodes > 0:
            return True
        if worker.descriptor is not None and fits_ever(worker.descriptor, submit.request):
            return True
    return False


def check_priorities(d: Driver, assignments: list[Assignment]) -> None:
    for assignment in assignments:
        if assignment.workers:
            continue
        low = d.model.jobs[assignment.job_id].submits[0]
        worker = d.model.workers[assignment.worker_id]
        assert worker.allocator is not None
        life = worker.remaining_lifetime(d.now)
        for high in d.model.ready.values():
            request = high.request
            if high.priority <= low.priority or request.n_nodes > 0:
                continue
            if life is not None and life < request.min_time:
                continue
            # Would the higher one have fit where the lower one went, without it?
            record = d.model.jobs[assignment.job_id].records[assignment.task_id]
            assert record.allocation is not None
            worker.allocator.release(record.allocation)
            try:
                fits = worker.allocator.fits_now(request)
            finally:
                again = worker.allocator.try_allocate(low.request)
                assert again is not None
                record.allocation = again
            if fits:
                assert blocked_by_higher(d, request, high.priority, worker.id)
    # A waiting multi-node task never finds enough free nodes in one group after a pass.
    for submit in d.model.ready.values():
        request = submit.request
        if request.n_nodes == 0:
            continue
        free = free_nodes_by_group(d.model.workers.values(), d.now, request.min_time)
        assert all(len(ids) < request.n_nodes for ids in free.values())


def finish_one(d: Driver, arg: int) -> None:
    """Finishes the running task that `arg` picks, if any runs."""
    running = [
        (job.id, t)
        for job in d.model.jobs.values()
        for t, r in sorted(job.active.items())
        if r.state == TaskState.RUNNING
    ]
    if running:
        d.finish(*running[arg % len(running)])


def lose_one(d: Driver, arg: int) -> None:
    """Loses the connected worker that `arg` picks, if any is connected."""
    connected = [w for w in sorted(d.model.workers) if d.model.workers[w].is_connected]
    if connected:
        d.lose(connected[arg % len(connected)], LostReason.CONNECTION_LOST)


def play(
    d: Driver,
    steps: list[tuple[str, Any]],
    run: Callable[[Driver, Any], None],
    *,
    submit_step: Callable[[Driver, Any], None] = submit,
    after: Callable[[Driver], None] | None = None,
) -> None:
    """Carries out `steps`: the property's own `run` for a run step, the common
    connect, submit, finish and lose for the others; then `after` each step."""
    for kind, arg in steps:
        if kind == "connect":
            connect(d, arg)
        elif kind == "submit":
            submit_step(d, arg)
        elif kind == "run":
            run(d, arg)
        elif kind == "finish":
            finish_one(d, arg)
        elif kind == "lose":
            lose_one(d, arg)
        if after is not None:
            after(d)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_st)
def test_scheduler_invariants(steps: list[tuple[str, Any]]) -> None:
    def run(d: Driver, _arg: Any) -> None:
        while assignments := d.schedule():
            for job_id, task_id in d.placed():
                d.start(job_id, task_id)
            check_no_over_allocation(d)
            check_reservations(d)
            check_priorities(d, assignments)

    def after(d: Driver) -> None:
        check_no_over_allocation(d)
        check_reservations(d)
        d.tick(1.0)

    play(Driver(), steps, run, after=after)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_st)
def test_passing_over_full_workers_by_their_bounds_decides_the_same(
    steps: list[tuple[str, Any]],
) -> None:
    """The pass skips a worker whose free bounds a request exceeds without trying it:
    every pass decides exactly what it decides when every worker is tried."""
    def run(d: Driver, _arg: Any) -> None:
        while True:
            with mock.patch.object(scheduler, "_beyond", lambda request, bounds: False):
                tried = scheduler.schedule(d.model, d.now, 1_000)
            assert scheduler.schedule(d.model, d.now, 1_000) == tried
            if not d.schedule():
                break
            for job_id, task_id in d.placed():
                d.start(job_id, task_id)

    play(Driver(), steps, run)


def free_state(d: Driver) -> dict[int, Any]:
    """What is free on each worker's allocator, exactly as it keeps it."""
    state = {}
    for worker in d.model.workers.values():
        allocator = worker.allocator
        if allocator is not None:
            state[worker.id] = (
                {n: (p.free, p.whole_units, p.whole_free) for n, p in allocator._indexed.items()},
                {n: p.free for n, p in allocator._sums.items()},
            )
    return copy.deepcopy(state)


# Some workers with a minimal utilization: the one rule under which a pass may leave
# work that the next pass places (a worker's minimum set lifts the gaps it waited on).
settle_steps_st = st.lists(
    st.one_of(
        st.tuples(
            st.just("connect"),
            st.builds(
                lambda spec, mu: {**spec, "min_utilization": mu},
                workers_st,
                st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0]),
            ),
        ),
        st.tuples(st.just("submit"), submits_st),
        st.tuples(st.just("run"), st.sampled_from([1, 2, 1_000])),
        st.tuples(st.just("finish"), st.integers(0, 50)),
        st.tuples(st.just("lose"), st.integers(0, 10)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settle_steps_st)
def test_a_pass_that_settles_leaves_nothing_for_the_next(steps: list[tuple[str, Any]]) -> None:
    """The server skips the pass after one that says it settles the model: applied, its
    assignments leave nothing that another pass (same time, same limit) would place.
    Passes that the limit cut short never claim to settle."""
    def run(d: Driver, limit: int) -> None:
        while True:
            before = free_state(d)
            assignments, settles = scheduler.schedule_pass(d.model, d.now, limit)
            # The pass tried its allocations for real and gave all of them back.
            assert free_state(d) == before
            assert assignments == scheduler.schedule(d.model, d.now, limit)
            d.do(d.model.assign(assignments, now=d.now))
            if len(assignments) == limit:
                assert not settles
            if settles:
                assert scheduler.schedule(d.model, d.now, limit) == []
                break
            for job_id, task_id in d.placed():
                d.start(job_id, task_id)

    play(Driver(), steps, run, after=lambda d: d.tick(1.0))


# Submits that may share an open job, their IDs interleaved (step 2, either phase): the
# queues of one job then take turns by task ID within one priority and weight.
job_submits_st = st.fixed_dictionaries(
    {
        "count": st.integers(1, 6),
        "cpus": st.sampled_from(["1", "1", "1", "2", "0.5"]),
        "foo": st.sampled_from([0, 0, 0, 1]),
        "priority": st.sampled_from([0, 0, 1]),
        "open_job": st.sampled_from([True, True, False]),
        "phase": st.integers(0, 1),
        "base": st.sampled_from([0, 0, 4]),
    }
)
run_steps_st = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), workers_st),
        st.tuples(st.just("submit"), job_submits_st),
        st.tuples(st.just("run"), st.sampled_from([1, 3, 1_000])),
        st.tuples(st.just("finish"), st.integers(0, 50)),
        st.tuples(st.just("lose"), st.integers(0, 10)),
    ),
    min_size=1,
    max_size=25,
)


def _interleaved(phase: int) -> dict[str, Any]:
    return {"count": 3, "cpus": "1", "foo": 0, "priority": 0, "open_job": True, "phase": phase,
            "base": 0}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run_steps_st)
@example([("submit", _interleaved(0)), ("submit", _interleaved(1)), ("run", 1_000)])
def test_a_queue_placed_in_runs_decides_as_task_by_task(steps: list[tuple[str, Any]]) -> None:
    """Once a task lands on a worker, the pass places the following tasks of its queue
    there directly, while that queue stays first in line: the same decisions as
    taking every task through the heap and the walk over the workers."""
    d = Driver()
    # One roomy worker from the start, so that queues meet on it.
    connect(d, {"cpus": 4, "foo": 1, "group": "a", "time_limit": None})
    open_job: int | None = None

    def submit_step(d: Driver, arg: dict[str, Any]) -> None:
        nonlocal open_job
        start = arg["base"] + arg["phase"]
        ids = [[start, start + 2 * (arg["count"] - 1), 2]]
        desc = submit_desc(ids, priority=arg["priority"])
        resources = [f"foo={arg['foo']}"] if arg["foo"] else []
        desc["resources"] = parse_task_request(arg["cpus"], resources).to_wire()
        if arg["open_job"]:
            if open_job is None:
                open_job = d.open_job()
            try:
                d.do(d.model.submit(desc, now=d.now, job_id=open_job))
            except HqError:
                pass  # its IDs clash with the job's: not submitted
        else:
            d.submit(desc)

    def run(d: Driver, limit: int) -> None:
        while True:
            with mock.patch.object(scheduler, "_more_here", lambda *args: None):
                one_by_one = scheduler.schedule(d.model, d.now, limit)
            assert scheduler.schedule(d.model, d.now, limit) == one_by_one
            if not d.schedule(limit):
                break
            for job_id, task_id in d.placed():
                d.start(job_id, task_id)

    play(d, steps, run, submit_step=submit_step, after=lambda d: d.tick(1.0))

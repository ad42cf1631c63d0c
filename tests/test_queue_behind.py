"""Tasks queued behind a running task of their job, on its allocation (the scheduler's
`_successors`, the model's behind/successor links): the pure model, no sockets."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperq.server.journal.restore import apply_restore_rules
from hyperq.server.journal.snapshot import decode_model, encode_model
from hyperq.server.model.events import LostReason, persisted
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.scheduler import QUEUE_BEHIND_BELOW, schedule
from hyperq.server.model.state import QUEUE_DEPTH, Assignment, KillTask, LaunchTask, Model
from tests.test_model import Driver, submit_desc, worker_config


class Queueing(Driver):
    """A `Driver` whose passes queue tasks behind running ones, and whose worker starts
    a queued task the moment the task it waits for ends (as hyperq/worker does). Its
    queues hold two tasks, the size the layouts below are written for; the default
    size is checked on its own (`test_the_depth_bounds_each_queue`)."""

    def __init__(self) -> None:
        super().__init__()
        self.model.queue_depth = 2
        self.model.deeper_on_small = False  # the layouts are written for two

    def schedule(self, limit: int = 1_000) -> list[Assignment]:
        assignments = schedule(self.model, self.now, limit)
        self.do(self.model.assign(assignments, now=self.now))
        return assignments

    def start_holders(self) -> None:
        """Report every placed task that holds its own allocation started."""
        for job_id, task_id in self.placed():
            if self.record(job_id, task_id).behind is None:
                self.start(job_id, task_id)

    def end(self, job_id: int, task_id: int) -> None:
        """The task finishes; the one queued behind it (if any) starts."""
        successor = self.record(job_id, task_id).successor
        self.finish(job_id, task_id)
        if successor is not None:
            self.start(job_id, successor)

    def returned(self, job_id: int, task_id: int) -> None:
        record = self.record(job_id, task_id)
        self.do(
            self.model.task_returned(
                job_id, task_id, worker_id=record.worker, instance=record.instance, now=self.now
            )
        )

    def launches(self) -> list[LaunchTask]:
        out = [e for e in self.effects if isinstance(e, LaunchTask)]
        self.effects.clear()
        return out

    def free_cpus(self, worker_id: int) -> list[str]:
        allocator = self.model.workers[worker_id].allocator
        assert allocator is not None
        return allocator.free_labels("cpus")


def _short_job(d: Queueing, tasks: int, **kwargs: Any) -> int:
    """An array whose first task ran (and finished) in no time: its job runs short."""
    job = d.submit(submit_desc([[0, tasks - 1, 1]], **kwargs))
    d.schedule(limit=1)
    d.start_holders()
    d.end(job, 0)
    d.launches()
    return job


def _running(cpus: int, tasks: int) -> tuple[Queueing, int, int]:
    """A worker of `cpus` CPUs running a short job of `tasks` tasks (task 0 done): the
    first pass placed and queued what it could, and the placed tasks started."""
    d = Queueing()
    worker = d.connect(cpus=cpus)
    job = _short_job(d, tasks)
    d.schedule()
    d.start_holders()
    d.launches()
    return d, worker, job


def check_links(d: Driver) -> None:
    """What the links promise: a worker's used units are exactly the allocations of the
    tasks holding their own; a queued task shares the allocation of the task it waits
    for, which names it; no queue is longer than the depth; the worker's candidates are
    exactly the ends of its queues with room for one more."""
    for worker in d.model.workers.values():
        if not worker.is_connected:
            assert not worker.tails
            continue
        assert worker.allocator is not None
        used: list[str] = []
        candidates: dict[int, set[int]] = {}
        for job_id, task_id in worker.tasks:
            job = d.model.jobs[job_id]
            record = job.records[task_id]
            assert record.placed and record.worker == worker.id
            room = d.model.queue_room(job, record, d.model.depth_of(worker))
            assert room >= 0
            if record.successor is None and room > 0 and record.submit.request.n_nodes == 0:
                candidates.setdefault(job_id, set()).add(task_id)
            if record.successor is not None:
                assert job.records[record.successor].behind == task_id
            if record.behind is not None:
                ahead = job.records[record.behind]
                assert ahead.successor == task_id and ahead.placed
                assert ahead.worker == worker.id
                assert record.allocation is ahead.allocation
                continue
            assert record.allocation is not None
            used.extend(label for r in record.allocation.resources for label, _ in r.units)
        free = worker.allocator.free_labels("cpus")
        assert sorted(used + free) == sorted(str(i) for i in range(len(used) + len(free)))
        assert len(used) == len(set(used))
        assert {job: set(mine) for job, mine in worker.tails.items()} == candidates


def test_a_short_job_gets_tasks_queued_behind_each_running_one() -> None:
    d = Queueing()
    worker = d.connect(cpus=2)
    job = _short_job(d, 10)
    d.schedule()
    launches = d.launches()
    # Tasks 1 and 2 take both CPUs; 3 and 5 wait behind 1 in turn, 4 and 6 behind 2,
    # on their allocations (one per queue and round: few tasks spread over the CPUs).
    assert [(e.task_id, e.after) for e in launches] == [
        (1, -1),
        (2, -1),
        (3, 1),
        (4, 2),
        (5, 3),
        (6, 4),
    ]
    assert launches[2].allocation is launches[0].allocation is launches[4].allocation
    assert launches[3].allocation is launches[1].allocation is launches[5].allocation
    assert d.free_cpus(worker) == []
    assert d.record(job, 3).state == TaskState.WAITING  # not running before it starts
    check_links(d)
    # A second pass finds nothing more to queue: the queues are full.
    assert d.schedule() == []
    check_links(d)


@pytest.mark.parametrize("depth", [1, 2, QUEUE_DEPTH])
def test_the_depth_bounds_each_queue(depth: int) -> None:
    d = Queueing()
    d.model.queue_depth = depth
    d.connect(cpus=2)
    _short_job(d, 2 * depth + 6)
    # Passes until nothing more fits: each adds at most one task per queue.
    while d.schedule():
        pass
    # 1 and 2 run; each queued task waits behind the one two IDs before it (1 ← 3 ← 5…).
    queued = [(task, task - 2) for task in range(3, 3 + 2 * depth)]
    assert [(e.task_id, e.after) for e in d.launches()] == [(1, -1), (2, -1), *queued]
    check_links(d)


def test_the_queued_task_takes_over_the_allocation_and_gets_one_behind_it() -> None:
    d, worker, job = _running(2, 10)
    d.end(job, 1)  # task 3 starts on task 1's CPU, 5 still waits behind it
    assert d.record(job, 3).state == TaskState.RUNNING
    assert d.record(job, 3).behind is None
    assert d.record(job, 5).behind == 3
    assert d.free_cpus(worker) == []
    check_links(d)
    d.schedule()
    assert [(e.task_id, e.after) for e in d.launches()] == [(7, 5)]
    check_links(d)


def test_a_queued_task_ending_first_leaves_the_allocation_to_the_holder() -> None:
    d, worker, job = _running(2, 6)
    # 1 ← 3 ← 5 and 2 ← 4. Reports can arrive in any order: 3 ends first, and 5
    # closes up behind 1.
    d.finish(job, 3)
    assert (d.record(job, 1).successor, d.record(job, 5).behind) == (5, 1)
    assert d.free_cpus(worker) == []
    check_links(d)
    d.finish(job, 1)
    d.finish(job, 2)
    d.finish(job, 4)
    assert d.free_cpus(worker) == ["1"]  # task 5 holds CPU 0 now
    d.finish(job, 5)
    assert d.free_cpus(worker) == ["0", "1"]
    assert d.model.job_info(job).task_stats["finished"] == 6  # type: ignore[union-attr]
    check_links(d)


def test_canceling_a_job_kills_its_queued_tasks_too() -> None:
    d, worker, job = _running(1, 3)
    d.effects.clear()
    d.do(d.model.cancel_job(job, now=d.now).events)
    kills = sorted((e.task_id, e.instance) for e in d.effects if isinstance(e, KillTask))
    assert kills == [(1, 0), (2, 0)]
    assert d.free_cpus(worker) == ["0"]
    assert d.model.workers[worker].tasks == set()
    check_links(d)


def test_a_lost_worker_gives_its_queued_tasks_back_without_a_crash() -> None:
    d, worker, job = _running(1, 3)
    d.lose(worker, LostReason.CONNECTION_LOST)
    assert (d.record(job, 1).state, d.record(job, 1).crash_count) == (TaskState.WAITING, 1)
    assert (d.record(job, 2).state, d.record(job, 2).crash_count) == (TaskState.WAITING, 0)
    assert d.record(job, 2).behind is None and d.record(job, 1).successor is None
    other = d.connect(cpus=2)
    d.schedule()
    assert sorted(e.task_id for e in d.launches() if e.worker_id == other)[:2] == [1, 2]
    check_links(d)


def test_a_restored_server_losing_a_held_worker_counts_no_crash_for_its_queued_tasks() -> None:
    """Queue links are never journaled (assignments are transient), so a restored model
    has none, and the snapshot of one (`encode_model`) none to keep: a held `reconnect`
    worker keeps only its running tasks; the queued ones wait again, crash-free, also
    when that worker is then lost."""
    d = Queueing()
    config = {**worker_config(1), "on_server_lost": "reconnect"}
    (connected,) = d.do(d.model.worker_connected(config, now=d.now))
    worker = connected.id  # type: ignore[attr-defined]
    job = _short_job(d, 4)
    d.schedule()
    d.start_holders()
    assert d.record(job, 2).behind == 1 and d.record(job, 1).state == TaskState.RUNNING
    replayed = Model()
    for event in persisted(d.events):
        replayed.apply(event)
    snapshot = decode_model(cbor2.loads(cbor2.dumps(encode_model(replayed))))
    for model in (apply_restore_rules(replayed), apply_restore_rules(snapshot)):
        held = model.workers[worker]
        assert held.held and held.tasks == {(job, 1)}
        restored = model.jobs[job]
        assert all(r.behind is None and r.successor is None for r in restored.records.values())
        assert not any(r.placed for t, r in restored.records.items() if t != 1)
        for event in model.worker_lost(worker, now=d.now, reason=LostReason.CONNECTION_LOST):
            model.apply(event)
        states = [restored.state_of(t) for t in (1, 2, 3)]
        crashes = [getattr(restored.record_for(t), "crash_count", 0) for t in (1, 2, 3)]
        assert (states, crashes) == ([TaskState.WAITING] * 3, [1, 0, 0])


def test_a_returned_task_waits_again_and_the_job_stops_queueing() -> None:
    d, worker, job = _running(1, 4)
    d.returned(job, 2)  # 1 ← 2 ← 3: 3 closes up behind 1
    record = d.record(job, 2)
    assert (record.state, record.placed, record.behind) == (TaskState.WAITING, False, None)
    assert (d.record(job, 1).successor, d.record(job, 3).behind) == (3, 1)
    check_links(d)
    # Its job's tasks no longer count as short: nothing is queued behind task 1 again,
    # and a second worker takes the returned task.
    assert d.schedule() == []
    other = d.connect(cpus=1)
    d.schedule()
    assert [(e.worker_id, e.task_id, e.after) for e in d.launches()] == [(other, 2, -1)]
    assert worker != other
    check_links(d)


def test_a_returned_report_for_a_running_task_is_ignored() -> None:
    d, _worker, job = _running(1, 3)
    d.returned(job, 1)  # task 1 runs on its own allocation: not a queued task
    assert d.record(job, 1).placed and d.record(job, 1).state == TaskState.RUNNING
    check_links(d)


def test_no_queueing_for_long_or_unmeasured_jobs_or_when_switched_off() -> None:
    d = Queueing()
    d.connect(cpus=1)
    job = d.submit(submit_desc([[0, 9, 1]]))
    d.schedule()
    d.start_holders()
    # Nothing finished yet: how long its tasks run is unknown.
    assert [(e.task_id, e.after) for e in d.launches()] == [(0, -1)]
    d.tick(QUEUE_BEHIND_BELOW * 2)
    d.end(job, 0)
    d.schedule()
    d.start_holders()
    assert [(e.task_id, e.after) for e in d.launches()] == [(1, -1)]  # it ran long
    d.end(job, 1)  # in no time: short again
    assert d.model.jobs[job].last_run == 0.0
    assert [a.after for a in schedule(d.model, d.now, queue_behind=0.0)] == [-1]
    assert [(a.task_id, a.after) for a in schedule(d.model, d.now)] == [
        (2, -1),
        (3, 2),
        (4, 3),
    ]


def test_nothing_is_queued_while_higher_priority_work_waits() -> None:
    d, _worker, low = _running(1, 5)
    d.end(low, 1)  # task 2 starts, 3 waits behind it: room for one more
    d.submit(submit_desc([[0, 2, 1]], priority=5))  # fits nowhere now
    assert d.schedule() == []
    assert d.record(low, 3).successor is None


def test_nothing_is_queued_behind_another_request() -> None:
    d = Queueing()
    d.connect(cpus=2)
    job = d.open_job()
    d.do(d.model.submit(submit_desc([[0, 2, 1]], cpus="2"), now=d.now, job_id=job))
    d.schedule()
    d.start_holders()
    d.end(job, 0)  # the job runs short now
    d.schedule()
    d.start_holders()
    assert [(e.task_id, e.after) for e in d.launches()] == [(0, -1), (1, -1), (2, 1)]
    d.do(d.model.submit(submit_desc([[5, 9, 1]], cpus="1"), now=d.now, job_id=job))
    d.end(job, 1)  # task 2 holds both CPUs now, nothing behind it
    assert d.model.workers[1].tails == {job: {2: d.record(job, 2)}}
    # First in line is the 1-CPU submit: its tasks may not wait on a 2-CPU allocation.
    assert d.schedule() == []
    check_links(d)


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["schedule", "end", "finish-queued", "cancel", "lose", "return", "connect"]
        ),
        st.integers(0, 50),
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(ops=OPS, cpus=st.integers(1, 3), tasks=st.integers(2, 12), depth=st.integers(1, QUEUE_DEPTH))
def test_links_stay_consistent_and_every_task_finishes_once(
    ops: list[tuple[str, int]], cpus: int, tasks: int, depth: int
) -> None:
    d = Queueing()
    d.model.queue_depth = depth
    workers = [d.connect(cpus=cpus)]
    # Their first ends make them short (the clock stands still): queueing starts then.
    jobs = [d.submit(submit_desc([[0, tasks - 1, 1]])) for _ in range(2)]
    for op, n in ops:
        running = d.placed(TaskState.RUNNING)
        queued = [key for key in d.placed() if d.record(*key).behind is not None]
        connected = [w for w in workers if d.model.workers[w].is_connected]
        if op == "schedule":
            d.schedule()
            d.start_holders()
        elif op == "end" and running:
            d.end(*running[n % len(running)])
        elif op == "cancel" and n % 4 == 0 and d.model.jobs[jobs[n % 2]].active_count:
            d.do(d.model.cancel_job(jobs[n % 2], now=d.now).events)
        elif op == "lose" and connected:
            d.lose(connected[n % len(connected)], LostReason.CONNECTION_LOST)
        elif op == "finish-queued" and queued:
            # Reports out of order: a queued task's end before that of the one ahead.
            d.finish(*queued[n % len(queued)])
        elif op == "return" and queued:
            d.returned(*queued[n % len(queued)])
        elif op == "connect" and len(workers) < 4:
            workers.append(d.connect(cpus=cpus))
        check_links(d)
        if n % 2:  # as the server does after most changes
            d.schedule()
            d.start_holders()
            check_links(d)
    # Drain: a fresh worker, then run everything to the end.
    d.connect(cpus=cpus)
    for _ in range(10 * tasks * 4):
        d.schedule()
        d.start_holders()
        running = d.placed(TaskState.RUNNING)
        if not running:
            break
        d.end(*running[0])
        check_links(d)
    for job in jobs:
        info = d.model.job_info(job)
        assert info is not None
        stats = info.task_stats
        assert stats["waiting"] == stats["running"] == 0
        assert stats["finished"] + stats["canceled"] == tasks


@pytest.mark.parametrize(("cpus", "behind_each"), [(1, 8), (2, 8), (3, 4), (4, 4)])
def test_a_worker_with_few_cpus_queues_twice_as_deep(cpus: int, behind_each: int) -> None:
    """By default (`deeper_on_small`), a worker of at most two CPUs takes twice the
    depth behind each running task (its messages are short); bigger ones the depth."""
    d = Queueing()
    d.model.queue_depth = 4
    d.model.deeper_on_small = True
    worker = d.model.workers[d.connect(cpus=cpus)]
    assert d.model.depth_of(worker) == behind_each
    _short_job(d, 100)
    d.schedule()
    launches = d.launches()
    assert sum(e.after == -1 for e in launches) == cpus
    assert sum(e.after != -1 for e in launches) == cpus * behind_each
    check_links(d)
    assert d.schedule() == []  # the queues are full
    d.model.deeper_on_small = False
    assert d.model.depth_of(worker) == 4

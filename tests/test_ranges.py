"""Tasks assigned and finished in batches (`tasks-assigned` from `Model.assign`,
`Model.tasks_finished` with one `tasks-finished` event per run) must do exactly what
assigning and finishing them one by one does: the same model, the same
`hq journal stream`/`export` lines (range events expanded), the same restore."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperq.server.journal import snapshot as snap
from hyperq.server.journal.restore import restore
from hyperq.server.model.events import (
    Event,
    TaskAssigned,
    TasksAssigned,
    TasksFinished,
    expand_all,
    persisted,
    to_export_json,
)
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.scheduler import schedule
from hyperq.server.model.state import Model
from tests.test_model import Driver, submit_desc


def lines(events: list[Event]) -> list[dict[str, Any]]:
    """What `hq journal export` prints for these events."""
    return [to_export_json(e) for e in expand_all(persisted(events)) if e.exported]


def replayed(events: list[Event]) -> Model:
    return restore(persisted(events))


class Twins:
    """Two drivers fed the same decisions: one finishes task by task, one in batches."""

    def __init__(self, workers: int, cpus: int, tasks: int, open_job: bool) -> None:
        self.one = Driver()
        self.batch = Driver()
        self.job = 0
        for d in self.both:
            for _ in range(workers):
                d.connect(cpus=cpus)
            if open_job:
                self.job = d.open_job()
                d.submit(submit_desc([[0, tasks - 1, 1]]), job_id=self.job)
            else:
                self.job = d.submit(submit_desc([[0, tasks - 1, 1]]))

    @property
    def both(self) -> tuple[Driver, Driver]:
        return (self.one, self.batch)

    def schedule(self) -> None:
        """One pass each: `batch` applies `Model.assign`'s range events, `one` a
        `task-assigned` per decision."""
        for d in self.both:
            assignments = schedule(d.model, d.now, 1_000)
            if d is self.batch:
                d.do(d.model.assign(assignments, now=d.now))
            else:
                d.do(
                    [
                        TaskAssigned(
                            d.now,
                            a.job_id,
                            a.task_id,
                            a.worker_id,
                            variant=a.variant,
                            behind=a.after,
                        )
                        for a in assignments
                    ]
                )

    def placed_on(self, worker: int) -> list[tuple[int, int, TaskState]]:
        """(task, instance, state) of the tasks placed on `worker`, ascending."""
        job = self.one.model.jobs[self.job]
        return [
            (r.task_id, r.instance, r.state)
            for r in sorted(job.active.values(), key=lambda r: r.task_id)
            if r.placed and r.worker == worker
        ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workers=st.integers(1, 3),
    cpus=st.integers(1, 5),
    tasks=st.integers(1, 40),
    open_job=st.booleans(),
    data=st.data(),
)
def test_batched_finishing_equals_one_by_one(
    workers: int, cpus: int, tasks: int, open_job: bool, data: st.DataObject
) -> None:
    twins = Twins(workers, cpus, tasks, open_job)
    for _round in range(data.draw(st.integers(1, 12))):
        twins.schedule()
        for worker in range(1, workers + 1):
            placed = twins.placed_on(worker)
            if not placed:
                continue
            # Some starts are reported before the end, some only with it.
            for task, instance, state in placed:
                if state == TaskState.WAITING and data.draw(st.booleans()):
                    for d in twins.both:
                        d.do(
                            d.model.task_started(
                                twins.job, task, worker_id=worker, instance=instance, now=d.now
                            )
                        )
            instance = data.draw(st.sampled_from(sorted({i for _t, i, _s in placed})))
            chosen = data.draw(st.permutations([t for t, _i, _s in placed]))
            chosen = chosen[: data.draw(st.integers(0, len(chosen)))]
            # Stale or repeated IDs, as a confused worker could send: both ignore them.
            chosen += data.draw(st.lists(st.integers(0, tasks + 2), max_size=2))
            ran_for = data.draw(st.none() | st.floats(0.0, 3.0))
            ago = data.draw(st.none() | st.floats(0.0, 2.0))
            for d in twins.both:
                ended_at = None if ago is None else d.now - ago
                if d is twins.one:
                    for task in chosen:
                        d.do(
                            d.model.task_finished(
                                twins.job,
                                task,
                                worker_id=worker,
                                instance=instance,
                                now=d.now,
                                ran_for=ran_for,
                                ended_at=ended_at,
                            )
                        )
                else:
                    d.do(
                        d.model.tasks_finished(
                            twins.job,
                            chosen,
                            worker_id=worker,
                            instance=instance,
                            now=d.now,
                            ran_for=ran_for,
                            ended_at=ended_at,
                        )
                    )
        if data.draw(st.integers(0, 5)) == 0:
            # A lost worker: its tasks come back with a new instance and a crash.
            lost = data.draw(st.integers(1, workers))
            for d in twins.both:
                d.do(d.model.worker_lost(lost, now=d.now, reason="ConnectionLost"))
        for d in twins.both:
            d.tick(data.draw(st.sampled_from([0.0, 0.5, 1.0])))
            twins.batch.now = twins.one.now
    one, batch = twins.one, twins.batch
    assert batch.model.snapshot() == one.model.snapshot()
    assert lines(batch.events) == lines(one.events)
    # Replaying every event, transient ones included, rebuilds the live model.
    again = Model()
    for event in batch.events:
        again.apply(event)
    assert again.snapshot() == batch.model.snapshot()
    # Restoring from the journal written in batches gives the same as from the other.
    assert replayed(batch.events).snapshot() == replayed(one.events).snapshot()
    # A snapshot of the restored model keeps the finished tasks' facts.
    restored = replayed(batch.events)
    assert snap.decode_model(snap.encode_model(restored)).snapshot() == restored.snapshot()


def test_a_batch_is_one_event_per_run_and_no_records() -> None:
    d = Driver()
    worker = d.connect(cpus=64)
    job = d.submit(submit_desc([[0, 99, 1]]))
    assigned = d.model.assign(schedule(d.model, d.now, 1_000), now=d.now)
    (event,) = assigned
    assert isinstance(event, TasksAssigned)
    assert (event.job, event.ids, event.worker, event.variant) == (job, ((0, 63, 1),), worker, 0)
    # The scheduler's own allocations, taken as they are: one CPU each, all distinct.
    assert len({a.labels("cpus")[0] for a in event.allocations}) == 64
    d.do(assigned)
    events = d.do(
        d.model.tasks_finished(job, range(64), worker_id=worker, instance=0, now=d.now, ran_for=0.5)
    )
    (finished,) = [e for e in events if isinstance(e, TasksFinished)]
    assert finished.ids == ((0, 63, 1),)
    assert finished.started == d.now - 0.5
    assert d.model.record_count() == 0  # finished tasks keep no record
    assert d.model.task(job, 10).state == TaskState.FINISHED  # type: ignore[union-attr]
    done = d.model.jobs[job].submits[0].done
    assert [(first, end) for first, end, _facts in done] == [(0, 64)]
    finished_views = list(d.model.iter_tasks(job, states=[TaskState.FINISHED]))
    assert [v.task_id for v in finished_views] == list(range(64))
    assert {v.worker for v in finished_views} == {worker}


def test_allocator_takes_exactly_what_it_allocated_before() -> None:
    from hyperq.common.resources import WorkerAllocator
    from tests.test_resources import cpu_request, workers

    alloc = WorkerAllocator(workers("2x4", "mem=sum(100)"))
    trial = [alloc.try_allocate(cpu_request(text)) for text in ("3", "1", "2 scatter")]
    assert all(a is not None for a in trial)
    for allocation in reversed(trial):
        assert allocation is not None
        alloc.release(allocation)
    for allocation in trial:
        assert allocation is not None
        assert alloc.take(allocation)
    # Held now: taking any of them again fails and changes nothing.
    assert trial[0] is not None and not alloc.take(trial[0])
    last = alloc.try_allocate(cpu_request("2"))
    assert last is not None and alloc.try_allocate(cpu_request("1")) is None

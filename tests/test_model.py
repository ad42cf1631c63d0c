"""The pure server model, driven directly the way the server edge drives it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperq.common.errors import HqError
from hyperq.common.resources import (
    ResourceDescriptor,
    ResourceDescriptorItem,
    parse_task_request,
)
from hyperq.server.journal.restore import restore
from hyperq.server.model.events import (
    Event,
    JobCancel,
    JobClose,
    JobCompleted,
    JobCreated,
    JobForgotten,
    JobOpen,
    LostReason,
    ServerStart,
    TaskAborted,
    TaskCanceled,
    TaskFailed,
    TaskFinished,
    TaskStarted,
    WorkerLost,
    persisted,
)
from hyperq.server.model.jobs import JobState, TaskState
from hyperq.server.model.scheduler import schedule
from hyperq.server.model.state import (
    NEVER_RESTART_ERROR,
    Assignment,
    Effect,
    KillTask,
    LaunchTask,
    Model,
    NotFound,
    WrongState,
    crash_limit_error,
)

# ---------------------------------------------------------------------------------------
# helpers (also used by test_scheduler.py)


def worker_config(
    cpus: int = 4, hostname: str = "worker", time_limit: float | None = None
) -> dict[str, Any]:
    descriptor = ResourceDescriptor((ResourceDescriptorItem.of_range("cpus", 0, cpus - 1),))
    return {"hostname": hostname, "time_limit": time_limit, "resources": descriptor.to_json()}


def submit_desc(
    ids: Sequence[Sequence[int]] | None = None,
    *,
    entries: list[str] | None = None,
    cpus: str = "1",
    resources: Sequence[str] = (),
    priority: int = 0,
    time_request: float = 0.0,
    crash_limit: int | str = 5,
) -> dict[str, Any]:
    request = parse_task_request(cpus, resources, min_time=time_request)
    return {
        "submit_dir": "/submit",
        "stream_path": None,
        "tasks": {"ids": [list(i) for i in ids] if ids is not None else None, "entries": entries},
        "program": {
            "args": ["sleep", "1"],
            "env": {"A": "1"},
            "cwd": "/submit",
            "stdout": {"path": "/submit/job-%{JOB_ID}/%{TASK_ID}.stdout", "rm_if_finished": False},
            "stderr": None,
        },
        "resources": request.to_wire(),
        "pin": None,
        "priority": priority,
        "time_limit": None,
        "crash_limit": crash_limit,
        "task_dir": False,
        "stdin": None,
    }


class Driver:
    """Runs a model the way the server edge does, keeping every event and effect."""

    def __init__(self) -> None:
        self.model = Model()
        self.events: list[Event] = []
        self.effects: list[Effect] = []
        self.now = 1_000.0

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds

    def do(self, events: Sequence[Event]) -> Sequence[Event]:
        for event in events:
            self.events.append(event)
            self.effects.extend(self.model.apply(event))
        return events

    def connect(self, cpus: int = 4, **kwargs: Any) -> int:
        (event,) = self.do(self.model.worker_connected(worker_config(cpus, **kwargs), now=self.now))
        return event.id  # type: ignore[attr-defined]

    def submit(self, desc: dict[str, Any] | None = None, **kwargs: Any) -> int:
        events = self.do(self.model.submit(desc or submit_desc(), now=self.now, **kwargs))
        return events[0].job  # type: ignore[attr-defined]

    def open_job(self, **kwargs: Any) -> int:
        (event,) = self.do(self.model.open_job(now=self.now, **kwargs))
        return event.job_id  # type: ignore[attr-defined]

    def schedule(self, limit: int = 1_000) -> list[Assignment]:
        # One task per allocation: these tests predate queueing tasks behind running
        # ones (tests/test_queue_behind.py).
        assignments = schedule(self.model, self.now, limit, queue_behind=0.0)
        self.do(self.model.assign(assignments, now=self.now))
        return assignments

    def record(self, job_id: int, task_id: int) -> Any:
        return self.model.jobs[job_id].records[task_id]

    def start(self, job_id: int, task_id: int) -> None:
        record = self.record(job_id, task_id)
        self.do(
            self.model.task_started(
                job_id, task_id, worker_id=record.worker, instance=record.instance, now=self.now
            )
        )

    def placed(self, state: TaskState = TaskState.WAITING) -> list[tuple[int, int]]:
        return [
            (job.id, record.task_id)
            for job in self.model.jobs.values()
            for record in sorted(job.active.values(), key=lambda r: r.task_id)
            if record.placed and record.state == state
        ]

    def run(self, limit: int = 1_000) -> list[Assignment]:
        """Schedule, then report every assigned task started."""
        assignments = self.schedule(limit)
        for job_id, task_id in self.placed():
            self.start(job_id, task_id)
        return assignments

    def finish(self, job_id: int, task_id: int) -> Sequence[Event]:
        record = self.record(job_id, task_id)
        return self.do(
            self.model.task_finished(
                job_id, task_id, worker_id=record.worker, instance=record.instance, now=self.now
            )
        )

    def fail(self, job_id: int, task_id: int, error: str = "boom") -> Sequence[Event]:
        record = self.record(job_id, task_id)
        return self.do(
            self.model.task_failed(
                job_id,
                task_id,
                worker_id=record.worker,
                instance=record.instance,
                now=self.now,
                error=error,
            )
        )

    def lose(self, worker_id: int, reason: LostReason) -> Sequence[Event]:
        return self.do(self.model.worker_lost(worker_id, now=self.now, reason=reason))

    def stats(self, job_id: int) -> dict[str, int]:
        info = self.model.job_info(job_id)
        assert info is not None
        return {k: v for k, v in info.task_stats.items() if v}

    def state(self, job_id: int) -> JobState:
        info = self.model.job_info(job_id)
        assert info is not None
        return info.state

    def task_state(self, job_id: int, task_id: int) -> TaskState:
        view = self.model.task(job_id, task_id)
        assert view is not None
        return view.state


def replayed(events: Sequence[Event]) -> Model:
    model = Model()
    for event in events:
        model.apply(event)
    return model


# ---------------------------------------------------------------------------------------
# submit and state derivation


def test_submit_single_task_waits() -> None:
    d = Driver()
    events = d.model.submit(submit_desc(), now=d.now, name="sleep")
    assert [type(e) for e in events] == [JobCreated]
    created = events[0]
    assert isinstance(created, JobCreated)
    assert created.job == 1 and created.closed_job
    assert created.job_desc == {"name": "sleep", "max_fails": None}
    assert created.submit_desc["tasks"] == {"ids": [[0, 0, 1]], "entries": None, "entry_offset": 0}
    d.do(events)
    info = d.model.job_info(1)
    assert info is not None
    assert (info.name, info.state, info.task_count, info.is_open) == (
        "sleep",
        JobState.WAITING,
        1,
        False,
    )
    assert info.task_stats == {
        "running": 0,
        "finished": 0,
        "failed": 0,
        "canceled": 0,
        "aborted": 0,
        "waiting": 1,
    }
    assert d.model.record_count() == 0
    assert d.model.next_job_id == 2


def test_job_ids_only_grow() -> None:
    d = Driver()
    assert [d.submit() for _ in range(3)] == [1, 2, 3]
    assert d.open_job() == 4


def test_submit_errors() -> None:
    d = Driver()
    with pytest.raises(HqError, match=r"^Task 3 is defined more than once\.$"):
        d.model.submit(submit_desc([[0, 5, 1], [3, 3, 1]]), now=d.now)
    with pytest.raises(HqError, match="name cannot have a newline or a tab"):
        d.model.submit(submit_desc(), now=d.now, name="a\tb")
    with pytest.raises(NotFound, match=r"^Job 7 not found\.$"):
        d.model.submit(submit_desc(), now=d.now, job_id=7)
    job = d.submit()
    with pytest.raises(WrongState, match=rf"^Job {job} is not opened\.$"):
        d.model.submit(submit_desc(), now=d.now, job_id=job)
    open_job = d.open_job()
    with pytest.raises(HqError, match=r"^Parameter --name is not allowed"):
        d.model.submit(submit_desc(), now=d.now, job_id=open_job, name="x")
    with pytest.raises(HqError, match=r"^Parameter --max-fails is not allowed"):
        d.model.submit(submit_desc(), now=d.now, job_id=open_job, max_fails=1)


def test_job_state_rules() -> None:
    d = Driver()
    d.connect(cpus=4)
    job = d.submit(submit_desc([[0, 4, 1]]))
    assert d.state(job) == JobState.WAITING
    d.schedule()
    # Assigned but not reported started still counts as waiting.
    assert d.state(job) == JobState.WAITING
    d.start(job, 0)
    assert d.state(job) == JobState.RUNNING
    d.finish(job, 0)
    d.fail(job, 1)
    assert d.state(job) == JobState.WAITING  # 2 and 3 are only assigned
    d.start(job, 2)
    d.start(job, 3)
    d.finish(job, 2)
    d.finish(job, 3)
    assert d.state(job) == JobState.WAITING  # task 4 waits
    d.run()
    d.finish(job, 4)
    assert d.state(job) == JobState.FAILED
    assert d.stats(job) == {"finished": 4, "failed": 1}
    # An empty closed job is FINISHED (and completes at once); an empty open one OPENED.
    empty = d.do(d.model.submit(submit_desc([]), now=d.now))
    assert isinstance(empty[-1], JobCompleted)
    assert d.state(empty[0].job) == JobState.FINISHED  # type: ignore[attr-defined]
    assert d.state(d.open_job()) == JobState.OPENED


def test_lifecycle_and_completion() -> None:
    d = Driver()
    worker = d.connect(cpus=2, hostname="w1")
    job = d.submit(submit_desc([[0, 1, 1]]))
    assignments = d.schedule()
    assert [(a.job_id, a.task_id, a.worker_id) for a in assignments] == [(1, 0, 1), (1, 1, 1)]
    launches = [e for e in d.effects if isinstance(e, LaunchTask)]
    assert [(e.task_id, e.instance) for e in launches] == [(0, 0), (1, 0)]
    assert [e.allocation for e in launches] == [a.allocation for a in assignments]
    d.tick()
    d.start(job, 0)
    info = d.model.worker_info(worker)
    assert info is not None
    assert (info.assigned_tasks, info.running_tasks) == (2, 1)
    assert info.last_task_started == (job, 0, d.now)
    d.tick()
    assert not any(isinstance(e, JobCompleted) for e in d.finish(job, 0))
    # A task reported finished before its start is reported gets both events.
    events = d.finish(job, 1)
    assert [type(e) for e in events] == [TaskStarted, type(events[1]), JobCompleted]
    view = d.model.task(job, 0)
    assert view is not None
    assert (view.state, view.worker, view.started_at, view.finished_at) == (
        TaskState.FINISHED,
        worker,
        1_001.0,
        1_002.0,
    )
    job_info = d.model.job_info(job)
    assert job_info is not None
    assert job_info.completed_at == d.now and job_info.workers == (worker,)
    info = d.model.worker_info(worker)
    assert info is not None and (info.assigned_tasks, info.running_tasks) == (0, 0)
    assert d.model.workers[worker].allocator.is_idle()


def test_stale_worker_reports_are_ignored() -> None:
    d = Driver()
    d.connect()
    d.connect()
    job = d.submit()
    d.run()
    record = d.record(job, 0)
    assert d.model.task_finished(job, 0, worker_id=2, instance=0, now=d.now) == []
    assert d.model.task_finished(job, 0, worker_id=record.worker, instance=5, now=d.now) == []
    assert d.model.task_started(job, 0, worker_id=record.worker, instance=0, now=d.now) == []
    assert d.model.task_failed(99, 0, worker_id=1, instance=0, now=d.now, error="x") == []


# ---------------------------------------------------------------------------------------
# failures


def test_failed_task_keeps_error() -> None:
    d = Driver()
    d.connect()
    job = d.submit(submit_desc([[0, 2, 1]]))
    d.run()
    for task in range(3):
        d.fail(job, task, f"Program terminated with exit code {task + 1}.")
    assert d.state(job) == JobState.FAILED
    shown, total = d.model.failed_tasks(job, 2)
    assert total == 3
    assert [(v.task_id, v.error) for v in shown] == [
        (0, "Program terminated with exit code 1."),
        (1, "Program terminated with exit code 2."),
    ]


def test_max_fails_zero_aborts_the_rest() -> None:
    d = Driver()
    d.connect(cpus=2)
    job = d.submit(submit_desc([[0, 9, 1]]), max_fails=0)
    d.run()
    events = d.fail(job, 0)
    assert [type(e) for e in events] == [TaskFailed, TaskAborted, JobCompleted]
    assert d.stats(job) == {"failed": 1, "aborted": 9}
    assert d.state(job) == JobState.FAILED
    # The other running task was killed on its worker.
    assert [(k.job_id, k.task_id) for k in d.effects if isinstance(k, KillTask)] == [(job, 1)]
    assert d.model.workers[1].allocator.is_idle()


def test_max_fails_three_on_one_cpu() -> None:
    d = Driver()
    d.connect(cpus=1)
    job = d.submit(submit_desc([[0, 9, 1]]), max_fails=3)
    for task in range(4):
        d.run()
        d.fail(job, task)
    assert d.stats(job) == {"failed": 4, "aborted": 6}
    assert d.model.record_count() == 4  # aborted waiting tasks cost no records


def test_worker_lost_requeues_with_new_instance() -> None:
    d = Driver()
    worker = d.connect(cpus=2)
    job = d.submit(submit_desc([[0, 2, 1]]))
    d.schedule()
    d.start(job, 0)  # task 1 stays assigned (its start not reported yet), task 2 waits
    events = d.lose(worker, LostReason.CONNECTION_LOST)
    assert d.stats(job) == {"waiting": 3}
    running, assigned = d.record(job, 0), d.record(job, 1)
    assert (running.instance, running.crash_count) == (1, 1)
    # Starts are reported late, so an assigned task is presumed to have started: it
    # counts the crash too, and the journal says so explicitly.
    assert (assigned.instance, assigned.crash_count) == (1, 1)
    assert [type(e) for e in events[:2]] == [TaskStarted, WorkerLost]
    assert 2 not in d.model.jobs[job].records  # never placed: still pristine
    assert d.model.worker_info(worker).lost_reason == "ConnectionLost"  # type: ignore[union-attr]
    # Another worker picks them up again, lowest task ID first.
    d.connect(cpus=1)
    assignments = d.run()
    assert [(a.task_id, a.worker_id) for a in assignments] == [(0, 2)]
    assert d.record(job, 0).instance == 1


def test_never_restart_task_assigned_on_a_lost_worker_fails() -> None:
    """It may have started (its start is reported late): never run it twice."""
    d = Driver()
    worker = d.connect(cpus=1)
    job = d.submit(submit_desc(crash_limit="never-restart"))
    d.schedule()
    d.lose(worker, LostReason.STOPPED)
    assert d.task_state(job, 0) == TaskState.FAILED
    assert d.record(job, 0).error == NEVER_RESTART_ERROR


def test_crash_limit_reached() -> None:
    d = Driver()
    job = d.submit(submit_desc(crash_limit=2))
    for round_ in range(2):
        worker = d.connect(cpus=1)
        d.run()
        events = d.lose(worker, LostReason.HEARTBEAT_LOST)
        if round_ == 0:
            assert d.task_state(job, 0) == TaskState.WAITING
    failed = [e for e in events if isinstance(e, TaskFailed)]
    assert [e.error for e in failed] == [crash_limit_error(2)]
    assert crash_limit_error(2) == (
        "Task was running on a worker that was lost; the task has occurred 2 times in this "
        "situation and limit was reached."
    )
    assert isinstance(events[-1], JobCompleted)
    assert d.state(job) == JobState.FAILED


def test_graceful_losses_do_not_count_as_crashes() -> None:
    d = Driver()
    job = d.submit(submit_desc(crash_limit=1))
    for reason in (LostReason.STOPPED, LostReason.IDLE_TIMEOUT, LostReason.TIME_LIMIT_REACHED):
        worker = d.connect(cpus=1)
        d.run()
        d.lose(worker, reason)
    assert d.task_state(job, 0) == TaskState.WAITING
    assert d.record(job, 0).crash_count == 0
    assert d.record(job, 0).instance == 3


def test_unlimited_crashes_never_fail() -> None:
    d = Driver()
    job = d.submit(submit_desc(crash_limit="unlimited"))
    for _ in range(10):
        worker = d.connect(cpus=1)
        d.run()
        d.lose(worker, LostReason.CONNECTION_LOST)
    assert d.task_state(job, 0) == TaskState.WAITING
    assert d.record(job, 0).crash_count == 10


def test_never_restart_fails_on_worker_stop() -> None:
    d = Driver()
    worker = d.connect(cpus=2)
    job = d.submit(submit_desc([[0, 2, 1]], crash_limit="never-restart"))
    d.schedule()
    d.start(job, 0)
    d.do(d.model.stop_worker(worker, now=d.now))
    # Stop requested: nothing new goes there, and the loss is "Stopped" whatever the edge saw.
    assert schedule(d.model, d.now) == []
    events = d.lose(worker, LostReason.CONNECTION_LOST)
    (lost,) = [e for e in events if isinstance(e, WorkerLost)]
    assert lost.reason == "Stopped"
    # Task 1 was assigned, its start maybe not reported yet: presumed started, so it
    # fails as well rather than risk running twice.
    assert [(e.task, e.error) for e in events if isinstance(e, TaskFailed)] == [
        (0, NEVER_RESTART_ERROR),
        (1, NEVER_RESTART_ERROR),
    ]
    assert NEVER_RESTART_ERROR == (
        "Task was running on a lost worker while never restart flag was set."
    )
    assert d.stats(job) == {"failed": 2, "waiting": 1}


def test_stop_worker_outcomes() -> None:
    d = Driver()
    worker = d.connect()
    with pytest.raises(NotFound, match=r"^Stopping worker 9 failed; worker not found$"):
        d.model.stop_worker(9, now=d.now)
    d.do(d.model.stop_worker(worker, now=d.now))
    assert d.model.stop_worker(worker, now=d.now) == []
    d.lose(worker, LostReason.STOPPED)
    with pytest.raises(WrongState, match=r"^Stopping worker 1 failed; worker is already stopped$"):
        d.model.stop_worker(worker, now=d.now)
    assert d.model.worker_lost(worker, now=d.now, reason=LostReason.CONNECTION_LOST) == []


# ---------------------------------------------------------------------------------------
# cancel, close, open jobs, forget


def test_cancel_job() -> None:
    d = Driver()
    d.connect(cpus=2)
    job = d.submit(submit_desc([[0, 9, 1]]))
    d.run()
    d.finish(job, 0)
    result = d.model.cancel_job(job, now=d.now, reason="enough")
    assert (result.canceled, result.already_finished) == (9, 1)
    assert [type(e) for e in result.events] == [type(result.events[0]), TaskCanceled, JobCompleted]
    d.do(result.events)
    assert d.stats(job) == {"finished": 1, "canceled": 9}
    assert [(k.worker_id, k.task_id) for k in d.effects if isinstance(k, KillTask)] == [(1, 1)]
    info = d.model.job_info(job)
    assert info is not None and info.cancel_reason == "enough"
    assert info.state == JobState.CANCELED
    with pytest.raises(
        WrongState, match=r"^Canceling job 1 failed; all tasks are already finished$"
    ):
        d.model.cancel_job(job, now=d.now)
    with pytest.raises(NotFound, match=r"^Canceling job 5 failed; job not found$"):
        d.model.cancel_job(5, now=d.now)


def test_cancel_reason_replaced_only_when_something_was_canceled() -> None:
    d = Driver()
    job = d.open_job()
    d.submit(job_id=job)
    d.do(d.model.cancel_job(job, now=d.now, reason="first").events)
    assert d.model.job_info(job).cancel_reason == "first"  # type: ignore[union-attr]
    with pytest.raises(WrongState):
        d.model.cancel_job(job, now=d.now, reason="second")
    d.submit(job_id=job)
    d.do(d.model.cancel_job(job, now=d.now).events)
    assert d.model.job_info(job).cancel_reason is None  # type: ignore[union-attr]
    # An open job stays open (and is not completed) after a cancel.
    assert d.model.job_info(job).is_open  # type: ignore[union-attr]
    assert not d.model.jobs[job].is_completed


def test_open_job_ids_and_close() -> None:
    d = Driver()
    d.connect(cpus=8)
    job = d.open_job(name="collect", max_fails=2)
    assert d.state(job) == JobState.OPENED
    d.submit(job_id=job)  # task 0
    d.submit(job_id=job)  # task 1
    d.submit(submit_desc(entries=["a", "b", "c"]), job_id=job)  # tasks 2-4
    d.submit(submit_desc([[10, 11, 1]]), job_id=job)
    with pytest.raises(HqError, match=r"^Task 11 already exists in job 1\.$"):
        d.model.submit(submit_desc([[11, 20, 1]]), now=d.now, job_id=job)
    assert d.model.job_task_items(job) == [(0, 4, 1), (10, 11, 1)]
    assert d.model.task(job, 3).entry == "b"  # type: ignore[union-attr]
    assert d.model.task(job, 0).entry is None  # type: ignore[union-attr]
    created = [e for e in d.events if isinstance(e, JobCreated)]
    assert [e.closed_job for e in created] == [False] * 4
    assert created[0].job_desc == {"name": "collect", "max_fails": 2}
    d.run()
    for task in (0, 1, 2, 3, 4, 10, 11):
        d.finish(job, task)
    assert d.state(job) == JobState.OPENED
    assert not any(isinstance(e, JobCompleted) for e in d.events)
    events = d.do(d.model.close_job(job, now=d.now))
    assert isinstance(events[-1], JobCompleted)
    assert d.state(job) == JobState.FINISHED
    with pytest.raises(WrongState, match=r"^Closing job 1 failed; job is already closed$"):
        d.model.close_job(job, now=d.now)
    with pytest.raises(NotFound, match=r"^Closing job 3 failed; job not found$"):
        d.model.close_job(3, now=d.now)


def test_close_job_with_active_tasks_completes_later() -> None:
    d = Driver()
    d.connect()
    job = d.open_job()
    d.submit(job_id=job)
    d.run()
    events = d.do(d.model.close_job(job, now=d.now))
    assert not any(isinstance(e, JobCompleted) for e in events)
    assert d.state(job) == JobState.RUNNING
    assert isinstance(d.finish(job, 0)[-1], JobCompleted)


def test_forget() -> None:
    d = Driver()
    d.connect()
    done = d.submit()
    d.run()
    d.finish(done, 0)
    canceled = d.submit()
    d.do(d.model.cancel_job(canceled, now=d.now).events)
    waiting = d.submit(submit_desc(cpus="8"))
    result = d.model.forget_jobs([done, canceled, waiting, 42], now=d.now)
    assert (result.forgotten, result.ignored) == (2, 2)
    d.do(result.events)
    assert d.model.job_ids() == [waiting]
    assert d.submit() == 4
    d.do(d.model.cancel_job(waiting, now=d.now).events)
    only_finished = d.model.forget_jobs([waiting], now=d.now, states=[JobState.FINISHED])
    assert (only_finished.forgotten, only_finished.ignored, only_finished.events) == (0, 1, [])


# ---------------------------------------------------------------------------------------
# queries


def test_iter_tasks_filters_and_order() -> None:
    d = Driver()
    d.connect(cpus=2)
    job = d.open_job()
    d.submit(submit_desc([[5, 9, 2]]), job_id=job)  # 5, 7, 9
    d.submit(submit_desc([[0, 1, 1], [6, 6, 1]]), job_id=job)  # 0, 1, 6
    assert [v.task_id for v in d.model.iter_tasks(job)] == [0, 1, 5, 6, 7, 9]
    d.run()  # submits of equal priority: lowest task IDs first
    assert d.placed(TaskState.RUNNING) == [(job, 0), (job, 1)]
    d.finish(job, 0)
    d.fail(job, 1)
    assert [v.task_id for v in d.model.iter_tasks(job, states=[TaskState.FAILED])] == [1]
    waiting = d.model.iter_tasks(job, states=[TaskState.WAITING, TaskState.FINISHED])
    assert [(v.task_id, v.state) for v in waiting] == [
        (0, TaskState.FINISHED),
        (5, TaskState.WAITING),
        (6, TaskState.WAITING),
        (7, TaskState.WAITING),
        (9, TaskState.WAITING),
    ]
    picked = d.model.iter_tasks(job, task_ids=[9, 1, 3, 1])
    assert [(v.task_id, v.submit_index) for v in picked] == [(1, 1), (9, 0)]
    assert d.model.task(job, 3) is None
    assert list(d.model.iter_tasks(77)) == []


def test_job_summary() -> None:
    d = Driver()
    d.connect(cpus=1)
    first = d.submit()
    d.submit()
    d.open_job()
    d.run()
    d.finish(first, 0)
    summary = d.model.job_summary()
    assert summary[JobState.FINISHED] == 1
    assert summary[JobState.WAITING] == 1  # the second job waits for the one CPU
    assert summary[JobState.OPENED] == 1
    assert sum(summary.values()) == 3


def test_million_task_array_stays_compact() -> None:
    d = Driver()
    d.connect(cpus=64)
    d.connect(cpus=64)
    job = d.submit(submit_desc([[0, 999_999, 1]]))
    assert d.model.record_count() == 0
    touched = 0
    for _ in range(3):
        assigned = d.run(limit=100)
        touched += len(assigned)
        for job_id, task_id in d.placed(TaskState.RUNNING)[:50]:
            d.finish(job_id, task_id)
    # 100 (the batch limit), then the 78 free CPUs, then the 50 that finished.
    assert touched == 100 + 78 + 50
    # Finished tasks give their records up (they live on as done runs of the submit).
    assert d.model.record_count() == touched - 150
    assert d.stats(job) == {"running": 78, "finished": 150, "waiting": 1_000_000 - 228}
    assert d.task_state(job, 999_999) == TaskState.WAITING
    result = d.model.cancel_job(job, now=d.now)
    assert result.canceled == 1_000_000 - 150
    d.do(result.events)
    assert d.model.record_count() == touched - 150
    assert d.stats(job) == {"finished": 150, "canceled": 1_000_000 - 150}
    assert d.task_state(job, 500_000) == TaskState.CANCELED
    # The events name the million tasks as a handful of ranges.
    canceled = [e for e in result.events if isinstance(e, TaskCanceled)]
    assert sum(len(items) for e in canceled for _, items in e.tasks) <= 3


# ---------------------------------------------------------------------------------------
# replay and restore


def test_replay_rebuilds_the_same_model() -> None:
    d = Driver()
    d.do([])
    worker = d.connect(cpus=2)
    job = d.submit(submit_desc([[0, 5, 1]]), max_fails=10)
    d.run()
    d.finish(job, 0)
    d.fail(job, 1)
    d.lose(worker, LostReason.CONNECTION_LOST)
    d.connect(cpus=1)
    d.run()
    d.do(d.model.cancel_job(job, now=d.now, reason="r").events)
    assert replayed(d.events).snapshot() == d.model.snapshot()


def test_restore_rules() -> None:
    d = Driver()
    d.do([ServerStart(d.now, "AbC123")])
    worker = d.connect(cpus=2, hostname="w1")
    finished = d.submit(name="finished")
    canceled = d.submit(submit_desc(cpus="64"), name="canceled")
    array = d.submit(submit_desc([[0, 5, 1]]), name="array")
    opened = d.open_job(name="open")
    d.submit(submit_desc([[0, 2, 1]], cpus="64"), job_id=opened)
    d.run()  # finished/0 and array/0 run on the 2 cpus
    d.finish(finished, 0)
    d.run()  # array/1
    d.fail(array, 0, "Program terminated with exit code 1.")
    d.do(d.model.cancel_job(canceled, now=d.now).events)
    d.finish(array, 1)
    d.run()  # array/2, array/3
    d.lose(worker, LostReason.CONNECTION_LOST)  # array/2, array/3 back to waiting, crash 1
    d.connect(cpus=1)
    d.run()  # array/2 again, instance 1
    assert d.record(array, 2).instance == 1

    model = restore(persisted(d.events))
    assert model.server_uid == "AbC123"
    assert model.job_ids() == [array, opened]  # completed jobs are dropped
    assert model.next_job_id == 5
    assert model.workers == {}
    assert model.next_worker_id == 2 + 2
    info = model.job_info(array)
    assert info is not None
    assert {k: v for k, v in info.task_stats.items() if v} == {
        "failed": 1,
        "finished": 1,
        "waiting": 4,
    }
    assert model.task(array, 0).error == "Program terminated with exit code 1."  # type: ignore[union-attr]
    restarted = model.jobs[array].records[2]
    assert (restarted.state, restarted.instance, restarted.crash_count) == (TaskState.WAITING, 2, 1)
    lost_once = model.jobs[array].records[3]
    assert (lost_once.instance, lost_once.crash_count) == (1, 1)
    opened_info = model.job_info(opened)
    assert opened_info is not None and opened_info.is_open and opened_info.task_count == 3
    # The restored model schedules: lowest task IDs first, new worker IDs after the gap.
    again = Driver()
    again.model = model
    assert again.connect(cpus=4) == 4
    assigned = again.schedule()
    assert [(a.job_id, a.task_id) for a in assigned] == [(array, t) for t in (2, 3, 4, 5)]


def test_restore_ignores_submit_to_unknown_open_job() -> None:
    event = JobCreated(1.0, 7, False, {"name": "x", "max_fails": None}, submit_desc([[0, 0, 1]]))
    model = restore([event])
    assert model.job_ids() == []
    assert model.warnings == ["Tasks submitted to job 7 were ignored: the job is unknown"]
    assert model.next_job_id == 8
    assert model.next_worker_id == 2


@pytest.mark.parametrize(
    "survivor",
    [
        TaskStarted(2.0, 4, 0, 0, (6,)),
        TaskFinished(3.0, 4, 0),
        TaskFailed(3.0, 4, 0, "Program terminated with exit code 1."),
        TaskCanceled(3.0, ((4, ((0, 0, 1),)),)),
        TaskAborted(3.0, ((4, ((0, 0, 1),)),)),
        JobCancel(3.0, 4, ""),
        JobClose(3.0, 4),
        JobCompleted(3.0, 4),
    ],
)
def test_ids_of_jobs_a_damaged_journal_lost_are_not_given_again(survivor: Event) -> None:
    """A damaged journal may lose a job's `job-created` (or a worker's `worker-connected`)
    while later events of it survive: its ID was given out, so the restored server must
    not give it to a new job (journal.md §2: the highest job ID *seen* + 1)."""
    model = restore([ServerStart(1.0, "uid"), survivor])
    assert model.next_job_id == 5
    assert model.job_ids() == []


def test_ids_of_workers_a_damaged_journal_lost_are_not_given_again() -> None:
    model = restore([TaskStarted(2.0, 4, 0, 0, (6,))])
    assert model.next_worker_id == 6 + 2
    model = restore([WorkerLost(2.0, 9, LostReason.CONNECTION_LOST)])
    assert model.next_worker_id == 9 + 2


# ---------------------------------------------------------------------------------------
# hypothesis: any sequence of valid commands replays and restores faithfully

ACTIONS = st.sampled_from(
    [
        "connect",
        "submit",
        "submit_open",
        "open",
        "close",
        "cancel",
        "run",
        "schedule",
        "finish",
        "fail",
        "lose",
        "stop",
        "forget",
        "tick",
    ]
)


def _drive(d: Driver, steps: list[tuple[str, int]]) -> None:
    for action, n in steps:
        jobs = d.model.job_ids()
        job = jobs[n % len(jobs)] if jobs else None
        live = [w for w in d.model.worker_ids() if d.model.workers[w].is_connected]
        running = d.placed(TaskState.RUNNING) + d.placed(TaskState.WAITING)
        try:
            if action == "connect":
                d.connect(cpus=1 + n % 3, time_limit=None if n % 2 else 50.0)
            elif action == "submit":
                count = 1 + n % 4
                d.submit(
                    submit_desc(
                        [[0, count * 2 - 1, 2]] if n % 3 == 0 else [[0, count - 1, 1]],
                        priority=n % 3,
                        time_request=float(n % 5) * 10,
                        crash_limit=[3, "unlimited", 2, "never-restart", 1][n // 7 % 5],
                    ),
                    max_fails=None if n % 2 else n % 3,
                )
            elif action == "submit_open" and job is not None:
                d.submit(submit_desc(entries=["x"] * (1 + n % 3)), job_id=job)
            elif action == "open":
                d.open_job(max_fails=None if n % 2 else 1)
            elif action == "close" and job is not None:
                d.do(d.model.close_job(job, now=d.now))
            elif action == "cancel" and job is not None:
                d.do(d.model.cancel_job(job, now=d.now, reason=str(n)).events)
            elif action == "run":
                d.run(limit=1 + n % 4)
            elif action == "schedule":
                d.schedule(limit=1 + n % 4)
            elif action == "finish" and running:
                d.finish(*running[n % len(running)])
            elif action == "fail" and running:
                d.fail(*running[n % len(running)], error=f"e{n}")
            elif action == "lose" and live:
                d.lose(live[n % len(live)], list(LostReason)[n % len(LostReason)])
            elif action == "stop" and live:
                d.do(d.model.stop_worker(live[n % len(live)], now=d.now))
            elif action == "forget" and jobs:
                d.do(d.model.forget_jobs(jobs[: 1 + n % 3], now=d.now).events)
            elif action == "tick":
                d.tick(float(n))
        except HqError:
            pass
        _check_invariants(d.model)


def _check_invariants(model: Model) -> None:
    for job in model.jobs.values():
        states = [view.state for view in model.iter_tasks(job.id)]
        assert len(states) == job.total
        for state in TaskState:
            assert states.count(state) == job.count(state)
        for submit in job.submits:
            assert ((job.id, submit.index) in model.ready) == submit.has_waiting
        if job.is_completed:
            assert job.active_count == 0 and not job.is_open
    for worker in model.workers.values():
        if worker.allocator is not None:
            assert worker.allocator.is_idle() == (not worker.tasks)


STEPS = st.lists(st.tuples(ACTIONS, st.integers(0, 200)), min_size=5, max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_replay_property(steps: list[tuple[str, int]]) -> None:
    d = Driver()
    _drive(d, steps)
    assert replayed(d.events).snapshot() == d.model.snapshot()


def _restore_oracle(events: Sequence[Event]) -> dict[int, dict[int, tuple[str, int, int]]]:
    """What journal.md §3 says a restore yields, computed straight from the events."""
    tasks: dict[int, dict[int, list[Any]]] = {}  # job -> task -> [state, instance, crashes]
    running_on: dict[int, set[tuple[int, int]]] = {}
    completed: set[int] = set()
    for event in events:
        if isinstance(event, JobOpen):
            tasks.setdefault(event.job_id, {})
        elif isinstance(event, JobCreated):
            if not event.closed_job and event.job not in tasks:
                continue
            job_tasks = tasks.setdefault(event.job, {})
            for s, last, step in event.submit_desc["tasks"]["ids"]:
                for t in range(s, last + 1, step):
                    job_tasks[t] = ["waiting", 0, 0]
        elif isinstance(event, TaskStarted):
            entry = tasks[event.job][event.task]
            entry[0], entry[1] = "running", event.instance
            running_on.setdefault(event.workers[0], set()).add((event.job, event.task))
        elif isinstance(event, TaskFailed | TaskFinished):
            tasks[event.job][event.task][0] = (
                "failed" if isinstance(event, TaskFailed) else "finished"
            )
        elif isinstance(event, TaskCanceled | TaskAborted):
            for job_id, items in event.tasks:
                for s, last, step in items:
                    for t in range(s, last + 1, step):
                        if tasks[job_id][t][0] in ("waiting", "running"):
                            tasks[job_id][t][0] = (
                                "canceled" if isinstance(event, TaskCanceled) else "aborted"
                            )
        elif isinstance(event, WorkerLost):
            for job_id, t in running_on.pop(event.id, set()):
                entry = tasks[job_id][t]
                if entry[0] == "running":
                    entry[0] = "waiting"
                    entry[1] += 1
                    if LostReason(event.reason).is_failure:
                        entry[2] += 1
        elif isinstance(event, JobCompleted):
            completed.add(event.job)
        elif isinstance(event, JobForgotten):
            completed.update(event.jobs)
    out: dict[int, dict[int, tuple[str, int, int]]] = {}
    for job_id, job_tasks in tasks.items():
        if job_id in completed:
            continue
        out[job_id] = {}
        for t, (state, instance, crashes) in job_tasks.items():
            if state == "running":
                state, instance = "waiting", instance + 1
            out[job_id][t] = (state, instance, crashes)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_restore_property(steps: list[tuple[str, int]]) -> None:
    d = Driver()
    _drive(d, steps)
    journal = persisted(d.events)
    model = restore(journal)
    got = {
        job_id: {
            v.task_id: (str(v.state), v.instance, v.crash_count) for v in model.iter_tasks(job_id)
        }
        for job_id in model.job_ids()
    }
    assert got == _restore_oracle(journal)
    assert model.workers == {}
    assert model.next_worker_id == d.model.max_worker_id + 2
    assert model.next_job_id == d.model.next_job_id
    _check_invariants(model)
    # A restored model is itself a valid starting point: it schedules and runs.
    again = Driver()
    again.model = model
    again.connect(cpus=4)
    again.run()
    _check_invariants(again.model)


def test_entries_with_explicit_ids_use_the_entry_index() -> None:
    d = Driver()
    job = d.submit(submit_desc([[1, 1, 1], [3, 3, 1]], entries=["a", "b", "c", "d"]))
    assert [(v.task_id, v.entry) for v in d.model.iter_tasks(job)] == [(1, "b"), (3, "d")]
    with pytest.raises(HqError, match="task 4 has no entry"):
        d.model.submit(submit_desc([[4, 4, 1]], entries=["a"]), now=d.now)


def test_restore_skips_a_damaged_submit() -> None:
    desc = submit_desc()
    desc["resources"] = "garbage"
    model = restore([JobCreated(1.0, 1, True, {"name": "x", "max_fails": None}, desc)])
    assert model.job_ids() == []
    assert len(model.warnings) == 1 and model.warnings[0].startswith("Tasks submitted to job 1")
    assert model.next_job_id == 2


# ---------------------------------------------------------------------------------------
# starts reported late or only with the end (short tasks)


def test_end_without_reported_start_records_the_start_it_carries() -> None:
    d = Driver()
    d.connect(cpus=2)
    job = d.submit(submit_desc([[0, 1, 1]]))
    d.schedule()
    record = d.record(job, 0)
    events = d.do(
        d.model.task_finished(
            job, 0, worker_id=record.worker, instance=record.instance, now=d.now, ran_for=2.5
        )
    )
    assert isinstance(events[0], TaskStarted) and events[0].time == d.now - 2.5
    assert isinstance(events[1], TaskFinished) and events[1].time == d.now
    view = d.model.task(job, 0)
    assert view is not None and (view.started_at, view.finished_at) == (d.now - 2.5, d.now)

    record = d.record(job, 1)
    events = d.do(
        d.model.task_failed(
            job, 1, worker_id=record.worker, instance=record.instance, now=d.now,
            error="Program terminated with exit code 1.", ran_for=0.5,
        )
    )  # fmt: skip
    assert [type(e) for e in events[:2]] == [TaskStarted, TaskFailed]
    assert events[0].time == d.now - 0.5
    assert d.task_state(job, 1) == TaskState.FAILED


def test_failure_before_start_records_no_start() -> None:
    """A task that never ran (its worker could not spawn it) has no start."""
    d = Driver()
    d.connect(cpus=1)
    job = d.submit()
    d.schedule()
    record = d.record(job, 0)
    events = d.do(
        d.model.task_failed(
            job, 0, worker_id=record.worker, instance=record.instance, now=d.now, error="e"
        )
    )
    assert [type(e) for e in events] == [TaskFailed, JobCompleted]
    view = d.model.task(job, 0)
    assert view is not None and view.started_at is None


def test_late_start_report_is_stamped_when_the_task_began() -> None:
    d = Driver()
    d.connect(cpus=1)
    job = d.submit()
    d.schedule()
    record = d.record(job, 0)
    (event,) = d.do(
        d.model.task_started(
            job, 0, worker_id=record.worker, instance=record.instance, now=d.now - 0.02
        )
    )
    assert event.time == d.now - 0.02 and d.task_state(job, 0) == TaskState.RUNNING


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.25, 0.25), (3, 3.0), (0, 0.0), (None, None), (-1.0, None), (True, None), ("1", None),
     (float("inf"), None), (float("nan"), None), (10**400, None)],
)  # fmt: skip
def test_reported_durations_are_checked(value: Any, expected: float | None) -> None:
    """Durations come from workers: anything but a finite, non-negative number is
    ignored (the report then stamps the server's own time) rather than trusted."""
    from hyperq.server.workerconn import _seconds

    assert _seconds(value) == expected

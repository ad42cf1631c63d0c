"""What queries about jobs, tasks and workers return: immutable views of the model.

Views are built on demand (a million-task job has no per-task objects until someone
asks) and carry `to_wire()` forms of plain data for replies. Nothing here changes the
model or does I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from hyperq.server.model.jobs import DoneFacts, Job, JobState, Submit, TaskRecord, TaskState


class TaskView(NamedTuple):
    # A tuple, not a frozen dataclass: `task list` builds one per task, and a frozen
    # dataclass's __init__ (one object.__setattr__ per field) cost 3 µs of the server's
    # ~12 µs per listed task.
    job_id: int
    task_id: int
    state: TaskState
    instance: int
    crash_count: int
    worker: int | None  # where it is placed or last ran
    workers: tuple[int, ...]
    started_at: float | None
    finished_at: float | None
    error: str | None
    variant: int
    submit_index: int
    entry: Any

    def to_wire(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "id": self.task_id,
            "state": str(self.state),
            "instance": self.instance,
            "crash_count": self.crash_count,
            "worker": self.worker,
            "workers": list(self.workers),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "variant": self.variant,
            "submit": self.submit_index,
            "entry": self.entry,
        }


@dataclass(frozen=True)
class JobInfo:
    id: int
    name: str
    state: JobState
    is_open: bool
    cancel_reason: str | None
    max_fails: int | None
    task_count: int
    task_stats: Mapping[str, int]  # running/finished/failed/canceled/aborted/waiting
    submitted_at: float
    completed_at: float | None
    workers: tuple[int, ...]  # every worker that ran one of its tasks, ascending
    submit_count: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": str(self.state),
            "is_open": self.is_open,
            "cancel_reason": self.cancel_reason,
            "max_fails": self.max_fails,
            "task_count": self.task_count,
            "task_stats": dict(self.task_stats),
            "submitted_at": self.submitted_at,
            "completed_at": self.completed_at,
            "workers": list(self.workers),
            "submit_count": self.submit_count,
        }


@dataclass(frozen=True)
class WorkerView:
    id: int
    configuration: Mapping[str, Any]
    hostname: str
    started_at: float
    ended_at: float | None
    lost_reason: str | None  # None while connected
    last_task_started: tuple[int, int, float] | None  # (job, task, time)
    assigned_tasks: int  # assigned or running here
    running_tasks: int
    stop_requested: bool
    # Held for a multi-node task: True on its root, False on a secondary node.
    mn_main: bool | None = None

    @property
    def is_running(self) -> bool:
        return self.lost_reason is None

    def to_wire(self) -> dict[str, Any]:
        last = self.last_task_started
        return {
            "id": self.id,
            "configuration": dict(self.configuration),
            "hostname": self.hostname,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "lost_reason": self.lost_reason,
            "last_task_started": (
                None if last is None else {"job": last[0], "task": last[1], "time": last[2]}
            ),
            "runtime_info": (
                {"assigned_tasks": self.assigned_tasks, "running_tasks": self.running_tasks}
                if self.is_running
                else None
            ),
            "stop_requested": self.stop_requested,
        }


TASK_STAT_KEYS = ("running", "finished", "failed", "canceled", "aborted", "waiting")
RECORD_ONLY_STATES = frozenset({TaskState.RUNNING, TaskState.FINISHED, TaskState.FAILED})


def record_view(job_id: int, record: TaskRecord) -> TaskView:
    submit = record.submit
    return TaskView(
        job_id=job_id,
        task_id=record.task_id,
        state=record.state,
        instance=record.instance,
        crash_count=record.crash_count,
        worker=record.worker,
        workers=record.workers,
        started_at=record.started_at,
        finished_at=record.finished_at,
        error=record.error,
        variant=record.variant,
        submit_index=submit.index,
        entry=submit.entry(record.task_id),
    )


def pristine_view(job_id: int, submit: Submit, task_id: int, rank: int) -> TaskView:
    """A task without a record: waiting, canceled/aborted before it was placed, or
    finished (its facts kept in the submit's done runs)."""
    if submit.done:
        done = submit.done_piece(rank)
        if done is not None:
            return done_view(job_id, submit, task_id, done[2])
    dropped = submit.dropped_piece(rank)
    return TaskView(
        job_id=job_id,
        task_id=task_id,
        state=dropped[2] if dropped is not None else TaskState.WAITING,
        instance=0,
        crash_count=0,
        worker=None,
        workers=(),
        started_at=None,
        finished_at=dropped[3] if dropped is not None else None,
        error=None,
        variant=0,
        submit_index=submit.index,
        entry=submit.entry(task_id),
    )


def done_view(job_id: int, submit: Submit, task_id: int, facts: DoneFacts) -> TaskView:
    return TaskView(
        job_id=job_id,
        task_id=task_id,
        state=TaskState.FINISHED,
        instance=facts.instance,
        crash_count=facts.crash_count,
        worker=facts.worker,
        workers=facts.workers,
        started_at=facts.started_at,
        finished_at=facts.finished_at,
        error=None,
        variant=facts.variant,
        submit_index=submit.index,
        entry=submit.entry(task_id),
    )


def done_views(job: Job) -> Iterator[TaskView]:
    """The finished tasks kept as done runs, in ascending ID order."""
    runs = []
    for submit in job.submits:
        if submit.done:
            runs.append(
                (
                    done_view(job.id, submit, task_id, facts)
                    for first, end, facts in submit.done
                    for start, last, step in submit.ids.slice(first, end)
                    for task_id in range(start, last + 1, step)
                )
            )
    if len(runs) == 1:
        return runs[0]
    return heapq.merge(*runs, key=lambda view: view.task_id)


def submit_views(job: Job, submit: Submit) -> Iterator[TaskView]:
    for rank, task_id in enumerate(submit.ids):
        record = job.records.get(task_id)
        if record is not None:
            yield record_view(job.id, record)
        else:
            yield pristine_view(job.id, submit, task_id, rank)


def view_facts(view: TaskView, job: Job) -> list[Any]:
    record = job.records.get(view.task_id)
    placed = record is not None and record.placed
    allocation = record.allocation.to_wire() if record is not None and record.allocation else None
    return [
        view.task_id,
        str(view.state),
        view.instance,
        view.crash_count,
        view.worker,
        list(view.workers),
        view.started_at,
        view.finished_at,
        view.error,
        view.variant,
        placed,
        allocation,
    ]

"""Events rebuilt from the current state, for `hq journal replay/stream` without a journal.

Without a journal the server keeps no history, so it describes what it holds as the
events that would have produced it (journal.md §4), stably sorted by time. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hyperq.server.model.events import (
    Event,
    JobCompleted,
    JobCreated,
    JobOpen,
    ServerStart,
    TaskAborted,
    TaskCanceled,
    TaskFailed,
    TaskFinished,
    TaskStarted,
    WorkerConnected,
    WorkerLost,
)
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.state import Model
from hyperq.server.model.taskids import ids_to_items


def reconstruct(model: Model, started_at: float) -> list[Event]:
    events: list[Event] = [ServerStart(started_at, model.server_uid or "")]
    for worker_id in model.worker_ids():
        view = model.worker_info(worker_id)
        assert view is not None
        events.append(WorkerConnected(view.started_at, worker_id, dict(view.configuration)))
        if view.lost_reason is not None and view.ended_at is not None:
            events.append(WorkerLost(view.ended_at, worker_id, view.lost_reason))
    for job_id in model.job_ids():
        info = model.job_info(job_id)
        assert info is not None
        job_desc = {"name": info.name, "max_fails": info.max_fails}
        events.append(JobOpen(info.submitted_at, job_id, info.name, info.max_fails))
        submits = zip(model.job_submit_times(job_id), model.job_submits(job_id), strict=True)
        graph: list[Any] | None = None
        for submitted_at, desc in submits:
            if "graph" in desc:
                # The model keeps one description per graph task; the submit was one.
                if graph is not None and graph[0]["graph"] == desc["graph"]:
                    graph.append(desc)
                    continue
                graph = [desc]
                whole = {"submit_dir": desc["submit_dir"], "graph": graph}
                whole["stream_path"] = desc.get("stream_path")
                events.append(JobCreated(submitted_at, job_id, False, job_desc, whole))
                continue
            graph = None
            events.append(JobCreated(submitted_at, job_id, False, job_desc, desc))
        # Tasks canceled (aborted) together, by one command, make one event, as they did
        # when it happened: a canceled array of 100,000 tasks is one line, not 100,000.
        ended_together: dict[tuple[TaskState, float], list[int]] = defaultdict(list)
        for view in model.iter_tasks(job_id):
            if view.started_at is not None and view.workers:
                events.append(
                    TaskStarted(view.started_at, job_id, view.task_id, view.instance, view.workers)
                )
            end = view.finished_at if view.finished_at is not None else info.submitted_at
            if view.state == TaskState.FINISHED:
                events.append(TaskFinished(end, job_id, view.task_id))
            elif view.state == TaskState.FAILED:
                events.append(TaskFailed(end, job_id, view.task_id, view.error or ""))
            elif view.state in (TaskState.CANCELED, TaskState.ABORTED):
                ended_together[(view.state, end)].append(view.task_id)
        for (state, end), task_ids in ended_together.items():
            ref = ((job_id, tuple(ids_to_items(sorted(task_ids)))),)
            kind = TaskCanceled if state == TaskState.CANCELED else TaskAborted
            events.append(kind(end, ref))
        if info.completed_at is not None:
            events.append(JobCompleted(info.completed_at, job_id))
    events.sort(key=lambda event: event.time)
    return events

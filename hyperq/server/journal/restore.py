"""Rebuilding the server model from a journal (journal.md §2–§3).

Restoring is replaying the journal's events through the same `Model.apply`, then the
restore rules: completed jobs are dropped (their IDs stay used), workers are not
restored (the next worker ID is the highest seen + 2), and every task that was waiting
or running becomes waiting, a started one with instance = last started instance + 1.

One exception, beyond HyperQueue: a worker started with `--on-server-lost reconnect`
that was connected when the server went down is *held*: it stays in the model with its
running tasks, takes no new tasks, and either comes back (`Model.worker_resumed`) or is
declared lost when the server's grace period ends. Tasks of `stop` and `finish-running`
workers return to waiting at once, exactly as the spec says.
Pure: the caller reads the file and logs `model.warnings`.
"""

from __future__ import annotations

from collections.abc import Iterable

from hyperq.server.model.events import Event
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.state import Model


def restore(
    events: Iterable[Event], *, model: Model | None = None, hold_reconnecting: bool = True
) -> Model:
    """Replay `events` onto `model` (a new one by default, or one already replayed from
    a snapshot), then apply the restore rules."""
    model = Model() if model is None else model
    for event in events:
        model.apply(event)
    return apply_restore_rules(model, hold_reconnecting=hold_reconnecting)


def apply_restore_rules(model: Model, *, hold_reconnecting: bool = True) -> Model:
    """Turn a model replayed from a journal into the restored server's starting state."""
    for job_id in [job_id for job_id, job in model.jobs.items() if job.is_completed]:
        del model.jobs[job_id]
    held = set()
    if hold_reconnecting:
        held = {
            worker_id
            for worker_id, worker in model.workers.items()
            if worker.is_connected
            and worker.configuration.get("on_server_lost") == "reconnect"
            # `hq worker stop` was acknowledged: the worker is on its way out.
            and not worker.stop_requested
        }
    for job in model.jobs.values():
        for record in list(job.active.values()):
            if record.state == TaskState.RUNNING and record.placed and record.worker in held:
                continue
            # Workers are gone; the allocations they held go with them.
            record.placed = False
            record.allocation = None
            if record.state == TaskState.RUNNING:
                record.instance += 1
                record.started_at = None
                record.worker = None
                record.workers = ()
            job.set_state(record, TaskState.WAITING)
    for worker_id in list(model.workers):
        worker = model.workers[worker_id]
        if worker_id in held:
            worker.held = True
            worker.tasks = {
                key
                for key in worker.tasks
                if model.jobs.get(key[0]) is not None
                and model.jobs[key[0]].records.get(key[1]) is not None
                and model.jobs[key[0]].records[key[1]].state == TaskState.RUNNING
            }
        else:
            del model.workers[worker_id]
    model.next_worker_id = model.max_worker_id + 2
    model.rebuild_ready()
    return model

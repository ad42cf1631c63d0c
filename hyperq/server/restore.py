"""Rebuilding the server model from a journal (journal.md §2–§3).

Restoring is replaying the journal's events through the same `Model.apply`, then the
restore rules: completed jobs are dropped (their IDs stay used), workers are not
restored (the next worker ID is the highest seen + 2), and every task that was waiting
or running becomes waiting, a started one with instance = last started instance + 1.
Pure: the caller reads the file and logs `model.warnings`.
"""

from __future__ import annotations

from collections.abc import Iterable

from hyperq.server.events import Event
from hyperq.server.jobs import TaskState
from hyperq.server.model import Model


def restore(events: Iterable[Event]) -> Model:
    model = Model()
    for event in events:
        model.apply(event)
    for job_id in [job_id for job_id, job in model.jobs.items() if job.is_completed]:
        del model.jobs[job_id]
    for job in model.jobs.values():
        for record in list(job.active.values()):
            # Workers are gone; the allocations they held go with them.
            record.placed = False
            record.allocation = None
            if record.state == TaskState.RUNNING:
                record.instance += 1
                record.started_at = None
                record.worker = None
                record.workers = ()
            job.set_state(record, TaskState.WAITING)
    model.workers.clear()
    model.next_worker_id = model.max_worker_id + 2
    model.ready.clear()
    for job in model.jobs.values():
        for submit in job.submits:
            if submit.has_waiting:
                model.ready[(job.id, submit.index)] = submit
    return model

"""`hq journal prune`: rewrite the journal keeping only what a restore still needs.

Kept: server start/stop records, events of workers still connected, and events of jobs
that are not completed (task-canceled / task-aborted lists filtered to those jobs).
The new file is written beside the journal, fsynced, renamed over it and the directory
fsynced, so a crash at any point leaves either the old or the new journal whole.
Blocking file work: the server runs `prune_file` in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from hyperq.server.journal.format import HEADER, encode_record, fsync_dir, read_journal
from hyperq.server.journal.snapshot import remove_snapshot
from hyperq.server.model.events import (
    Event,
    JobCancel,
    JobClose,
    JobCompleted,
    JobCreated,
    JobOpen,
    ServerStart,
    ServerStop,
    TaskAborted,
    TaskCanceled,
    TaskFailed,
    TaskFinished,
    TasksFinished,
    TaskStarted,
    WorkerConnected,
    WorkerLost,
    WorkerStopRequested,
    from_record,
    to_record,
)
from hyperq.transport.codec import encode_unbounded


def keep_event(
    event: Event, live_jobs: Collection[int], live_workers: Collection[int]
) -> Event | None:
    """The event as the pruned journal keeps it, or None to drop it."""
    if isinstance(event, ServerStart | ServerStop):
        return event
    if event.kind.startswith("autoalloc-"):
        return event
    if isinstance(event, WorkerConnected | WorkerLost | WorkerStopRequested):
        return event if event.id in live_workers else None
    if isinstance(
        event, JobCreated | JobCompleted | TaskStarted | TaskFinished | TasksFinished | TaskFailed
    ):
        return event if event.job in live_jobs else None
    if isinstance(event, JobOpen | JobClose | JobCancel):
        return event if event.job_id in live_jobs else None
    if isinstance(event, TaskCanceled | TaskAborted):
        groups = tuple((job, items) for job, items in event.tasks if job in live_jobs)
        if not groups:
            return None
        return event if groups == event.tasks else type(event)(event.time, groups)
    return None


def prune_file(
    path: str, live_jobs: Collection[int], live_workers: Collection[int]
) -> tuple[int, int]:
    """Rewrite the journal; returns where its records ended before and end now."""
    records, report = read_journal(path)
    before = report.valid_end
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(HEADER)
        for seq, value in records:
            event = keep_event(from_record(value), live_jobs, live_workers)
            if event is None:
                continue
            out.write(encode_record(seq, encode_unbounded(to_record(event))))
        out.flush()
        os.fsync(out.fileno())
        after = out.tell()
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    # Its CRC would no longer match anyway; the server makes a new one of the new file.
    remove_snapshot(path)
    return before, after

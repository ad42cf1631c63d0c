"""Starting from a journal: read it, rebuild the model, and reopen it for appending.

Runs before the server's trio loop. A damaged journal never stops the server: a torn
tail is cut off with the WARN line scripts look for, damage in the middle is skipped
and reported, and an event we cannot understand is skipped with a warning.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass

from hyperq.common.errors import HqError
from hyperq.server.journal.format import HEADER, create_journal, cut_after
from hyperq.server.journal.restore import apply_restore_rules
from hyperq.server.journal.snapshot import catch_up, remove_snapshot
from hyperq.server.model.state import Model

log = logging.getLogger(__name__)

# How long a restarting server waits for a previous server's journal writer to let go.
OTHER_WRITER_WAIT = 10.0

TORN_TAIL_WARNING = "Journal contains not fully written data; they will be removed from the log"


@dataclass
class Recovery:
    model: Model | None  # None: a new journal
    server_uid: str | None
    end: int  # where the journal's next record goes
    next_seq: int
    events: int
    unsnapshotted: int = 0  # events after the snapshot (all of them without one)


def _log_problems(
    path: str, damaged: list[tuple[int, int, int]], unreadable: list[tuple[int, str]]
) -> None:
    for seq, why in unreadable:
        log.warning("Skipping unreadable journal record %d: %s", seq, why)
    for offset, skipped, lost in damaged:
        log.warning(
            "Journal %s is damaged at offset %d: skipped %d bytes, %d record(s) lost",
            path,
            offset,
            skipped,
            lost,
        )


def _wait_for_other_writer(path: str) -> None:
    """The journal sink holds an exclusive flock on the journal. A sink left behind by a
    crashed server lets go as soon as it notices (it never touches the file again); a
    sink that does not is another server's, using this journal right now."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # reading the journal reports it properly
    try:
        deadline = time.monotonic() + OTHER_WRITER_WAIT
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not told:
                    # Up to OTHER_WRITER_WAIT of silence would look like a hang.
                    log.info(
                        "Journal %s is still held by another process (the writer of a "
                        "crashed server?); waiting up to %g s for it",
                        path,
                        OTHER_WRITER_WAIT,
                    )
                    told = True
                if time.monotonic() > deadline:
                    raise HqError(
                        f"Cannot open event log file at {path}: it is in use by another "
                        "process (another server?)"
                    ) from None
                time.sleep(0.05)
            except OSError:
                return  # a filesystem without locks
    finally:
        os.close(fd)  # and with it the lock


def recover(path: str) -> Recovery:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        if os.path.exists(path):
            os.unlink(path)
        try:
            create_journal(path)
        except OSError as error:
            raise HqError(f"Cannot create event log file at {path}: {error.strerror}") from None
        # A snapshot left beside a journal that is gone describes nothing any more.
        remove_snapshot(path)
        return Recovery(None, None, len(HEADER), 1, 0)
    _wait_for_other_writer(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise HqError(f"Cannot open event log file at {path}: {error.strerror}") from None
    snapshot, report, from_snapshot = catch_up(data, path)
    del data
    _log_problems(path, snapshot.damaged, snapshot.unreadable)
    if report.torn_tail:
        log.warning(TORN_TAIL_WARNING)
    model = apply_restore_rules(snapshot.model)
    for warning in model.warnings:
        log.warning("%s", warning)
    try:
        cut_after(path, snapshot.journal_end)
    except OSError as error:
        raise HqError(f"Cannot open event log file at {path}: {error.strerror}") from None
    events = snapshot.events
    if from_snapshot is not None:
        log.info(
            "Restored %d events from journal %s (%d from its snapshot)",
            events,
            path,
            from_snapshot,
        )
    else:
        log.info("Restored %d events from journal %s", events, path)
    tail = events - (from_snapshot or 0)
    return Recovery(
        model, model.server_uid, snapshot.journal_end, snapshot.last_seq + 1, events, tail
    )

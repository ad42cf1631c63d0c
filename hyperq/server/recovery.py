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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hyperq.common.errors import HqError
from hyperq.server.events import from_record
from hyperq.server.journalfile import (
    HEADER,
    ReadReport,
    check_header,
    create_journal,
    cut_after,
    iter_records,
)
from hyperq.server.model import Model
from hyperq.server.restore import apply_restore_rules
from hyperq.server.snapshot import Snapshot, load_matching, remove_snapshot, snapshot_path

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


def apply_records(
    model: Model, records: Iterable[tuple[int, Any]], unreadable: list[tuple[int, str]]
) -> int:
    """Apply journal records (seq, decoded payload) to `model`; returns how many were
    events. A record we cannot understand is skipped and added to `unreadable`."""
    count = 0
    apply = model.apply
    for seq, value in records:
        try:
            event = from_record(value)
        except (KeyError, TypeError, ValueError) as error:
            unreadable.append((seq, str(error)))
            continue
        apply(event)
        count += 1
    return count


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
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HqError(
                        f"Journal {path} is in use by another process (another server?)"
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
            raise HqError(f"Cannot create journal {path}: {error.strerror}") from None
        # A snapshot left beside a journal that is gone describes nothing any more.
        remove_snapshot(path)
        return Recovery(None, None, len(HEADER), 1, 0)
    _wait_for_other_writer(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise HqError(f"Cannot open event log file at {path}: {error.strerror}") from None
    check_header(data, path)
    found = load_matching(snapshot_path(path), data)
    snapshot = found if found is not None else Snapshot(Model(), len(HEADER), 0, 0)
    model, events = snapshot.model, snapshot.events
    report = ReadReport(last_seq=snapshot.last_seq, valid_end=snapshot.journal_end)
    unreadable = list(snapshot.unreadable)
    tail = apply_records(
        model, iter_records(data, path, report, start=report.valid_end), unreadable
    )
    del data
    _log_problems(path, snapshot.damaged + report.damaged, unreadable)
    if report.torn_tail:
        log.warning(TORN_TAIL_WARNING)
    model = apply_restore_rules(model)
    for warning in model.warnings:
        log.warning("%s", warning)
    try:
        cut_after(path, report.valid_end)
    except OSError as error:
        raise HqError(f"Cannot open journal {path}: {error.strerror}") from None
    if found is not None:
        log.info(
            "Restored %d events from journal %s (%d from its snapshot)",
            events + tail,
            path,
            events,
        )
    else:
        log.info("Restored %d events from journal %s", tail, path)
    return Recovery(
        model, model.server_uid, report.valid_end, report.last_seq + 1, events + tail, tail
    )

"""Starting from a journal: read it, rebuild the model, and reopen it for appending.

Runs before the server's trio loop. A damaged journal never stops the server: a torn
tail is cut off with the WARN line scripts look for, damage in the middle is skipped
and reported, and an event we cannot understand is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import BinaryIO

from hyperq.common.errors import HqError
from hyperq.server.events import Event, ServerStart, from_record
from hyperq.server.journalfile import HEADER, create_journal, open_for_append, read_journal
from hyperq.server.model import Model
from hyperq.server.restore import restore

log = logging.getLogger(__name__)

TORN_TAIL_WARNING = "Journal contains not fully written data; they will be removed from the log"


@dataclass
class Recovery:
    model: Model | None  # None: a new journal
    server_uid: str | None
    file: BinaryIO
    next_seq: int
    events: int


def read_events(path: str) -> tuple[list[Event], int, int, int]:
    """(events, last seq, end of the last good record, torn tail bytes); logs damage."""
    records, report = read_journal(path)
    for offset, skipped, lost in report.damaged:
        log.warning(
            "Journal %s is damaged at offset %d: skipped %d bytes, %d record(s) lost",
            path,
            offset,
            skipped,
            lost,
        )
    events = []
    for seq, value in records:
        try:
            events.append(from_record(value))
        except (KeyError, TypeError, ValueError) as error:
            log.warning("Skipping unreadable journal record %d: %s", seq, error)
    return events, report.last_seq, report.valid_end, report.torn_tail


def recover(path: str) -> Recovery:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        if os.path.exists(path):
            os.unlink(path)
        try:
            create_journal(path)
        except OSError as error:
            raise HqError(f"Cannot create journal {path}: {error.strerror}") from None
        return Recovery(None, None, open_for_append(path, len(HEADER)), 1, 0)
    events, last_seq, valid_end, torn = read_events(path)
    if torn:
        log.warning(TORN_TAIL_WARNING)
    model = restore(events)
    for warning in model.warnings:
        log.warning("%s", warning)
    uid = None
    for event in events:
        if isinstance(event, ServerStart):
            uid = event.server_uid
    try:
        file = open_for_append(path, valid_end)
    except OSError as error:
        raise HqError(f"Cannot open journal {path}: {error.strerror}") from None
    log.info("Restored %d events from journal %s", len(events), path)
    return Recovery(model, uid, file, last_seq + 1, len(events))

"""`hq journal report <JOURNAL> <OUTPUT>`: read the journal file, write the HTML page."""

from __future__ import annotations

import os

from hyperq.common import log
from hyperq.common.errors import HqError
from hyperq.report.data import Window, build_report
from hyperq.report.render import render_html
from hyperq.server.journal.format import read_journal
from hyperq.server.model.events import Event, expand, from_record


def load_events(path: str) -> list[Event]:
    records, report = read_journal(path)
    for offset, skipped, lost in report.damaged:
        log.error(
            f"Journal is damaged at offset {offset}: skipped {skipped} bytes, {lost} record(s) lost"
        )
    events = []
    for seq, value in records:
        try:
            events.extend(expand(from_record(value)))
        except (KeyError, TypeError, ValueError) as error:
            log.error(f"Cannot read journal record {seq}: {error}")
    return events


def write_report(journal: str, output: str, window: Window) -> None:
    html = render_html(build_report(load_events(journal), window))
    temporary = f"{output}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(html)
        os.replace(temporary, output)
    except OSError as error:
        raise HqError(f"Cannot write the report to {output}: {error.strerror}") from None

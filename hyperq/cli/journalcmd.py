"""`hq journal …`: export a journal file, stream or replay events, flush and prune."""

from __future__ import annotations

import json
import sys
from typing import Any

from hyperq.common.context import Context
from hyperq.common.errors import HqError

GROUP_USAGE = """Commands for the event journal

Usage:
  hq journal export <PATH>
  hq journal stream
  hq journal replay
  hq journal flush
  hq journal prune
  hq journal report <JOURNAL> <OUTPUT> [--start-time <DUR>] [--end-time <DUR>]
"""

EXPORT_USAGE = """Print every event of a journal file as one JSON object per line (no server needed)

Usage:
  hq journal export <PATH>
"""
STREAM_USAGE = """Print the server's past events, then follow new ones live

Usage:
  hq journal stream
"""
REPLAY_USAGE = """Print the server's past events and exit

Usage:
  hq journal replay
"""
FLUSH_USAGE = """Force the server to write its journal to disk

Usage:
  hq journal flush
"""
PRUNE_USAGE = """Rewrite the journal keeping only live jobs and workers

Usage:
  hq journal prune
"""
REPORT_USAGE = """Write an HTML report of a journal file (no server needed)

Usage:
  hq journal report <JOURNAL> <OUTPUT> [--start-time <DUR>] [--end-time <DUR>]

Options:
  --start-time <DUR>   Leave out what happened before this offset from the first event
  --end-time <DUR>     Leave out what happened after this offset from the first event
"""


def _print_line(event: Any) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")


def export(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.common import log
    from hyperq.server.journal.format import read_journal
    from hyperq.server.model.events import expand, from_record, to_export_json

    path = args["<PATH>"]
    records, report = read_journal(path)
    for offset, skipped, lost in report.damaged:
        log.error(
            f"Journal is damaged at offset {offset}: skipped {skipped} bytes, {lost} record(s) lost"
        )
    count = 0
    for seq, value in records:
        try:
            event = from_record(value)
        except (KeyError, TypeError, ValueError) as error:
            log.error(f"Cannot read journal record {seq}: {error}")
            continue
        if not event.exported:
            continue
        # A range event prints as the per-task events it stands for.
        for one in expand(event):
            _print_line(to_export_json(one))
            count += 1
    sys.stdout.flush()
    log.info(f"Outputted {count} {'event' if count == 1 else 'events'}")
    return 0


def _stream(ctx: Context, follow: bool) -> int:
    from hyperq.client.session import connect_to_server
    from hyperq.transport.wsclient import ConnectionClosedError

    # Clients never see the running server's own `server-stop` (journal.md §4). In the
    # history every `server-stop` is followed by the next run's `server-start`, so one
    # is held back until another event arrives and dropped when the stream ends.
    held: list[Any] = []
    with connect_to_server(ctx) as session:
        session.request("journal-stream", follow=follow)
        while True:
            try:
                message = session.connection.recv()
            except ConnectionClosedError:
                if follow:
                    return 0  # the server stopped: the stream simply ends
                # A replay ends with an explicit end: without it, history is missing.
                raise HqError("Connection to the server was lost before the replay ended") from None
            if not isinstance(message, dict):
                raise HqError("Invalid message from the server")
            if "error" in message:
                raise HqError(str(message["error"]))
            for event in message.get("events", ()):
                for earlier in held:
                    _print_line(earlier)
                held.clear()
                if _is_server_stop(event):
                    held.append(event)
                else:
                    _print_line(event)
            sys.stdout.flush()
            if message.get("end"):
                return 0


def _is_server_stop(event: Any) -> bool:
    inner = event.get("event") if isinstance(event, dict) else None
    return isinstance(inner, dict) and inner.get("type") == "server-stop"


def stream(ctx: Context, args: dict[str, Any]) -> int:
    return _stream(ctx, follow=True)


def replay(ctx: Context, args: dict[str, Any]) -> int:
    return _stream(ctx, follow=False)


def _print_nothing(ctx: Context) -> None:
    """A command without a result still prints one value in JSON mode (README §3.3)."""
    from hyperq.cli.commandargs import output_of

    output_of(ctx).nothing()


def flush(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.client.session import connect_to_server

    with connect_to_server(ctx) as session:
        session.request("journal-flush")
    _print_nothing(ctx)
    return 0


def prune(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.client.session import connect_to_server

    with connect_to_server(ctx) as session:
        session.request("journal-prune")
    _print_nothing(ctx)
    return 0


def report(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.common.duration import parse_duration
    from hyperq.common.errors import UsageError
    from hyperq.report.data import Window
    from hyperq.report.main import write_report

    bounds = []
    for option in ("--start-time", "--end-time"):
        text = args.get(option)
        try:
            bounds.append(parse_duration(text) if text is not None else None)
        except HqError as error:
            raise UsageError(
                f"error: invalid value '{text}' for '{option} <DUR>': {error.message}"
            ) from None
    write_report(args["<JOURNAL>"], args["<OUTPUT>"], Window(bounds[0], bounds[1]))
    return 0


COMMANDS = {
    "export": (EXPORT_USAGE, export, False),
    "stream": (STREAM_USAGE, stream, False),
    "replay": (REPLAY_USAGE, replay, False),
    "flush": (FLUSH_USAGE, flush, False),
    "prune": (PRUNE_USAGE, prune, False),
    "report": (REPORT_USAGE, report, False),
}

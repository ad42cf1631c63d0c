"""`hq dashboard [stream]` and `hq dashboard replay <JOURNAL>`: get the events, start the UI.

Textual runs its own asyncio loop, so the live stream is read by the blocking client
connection in a Textual thread worker (the one place the dashboard uses a thread); it
hands each batch to the UI thread with `call_from_thread`.
"""

from __future__ import annotations

import sys
from typing import Any

from hyperq.common.context import Context
from hyperq.common.errors import HqError

MISSING_TEXTUAL = (
    "`hq dashboard` needs the Textual package: install hyperq with the dashboard extra, "
    "e.g. `pip install 'hyperq[dashboard]'`"
)
REBUILT_WARNING = (
    "The server runs without a journal: the history shown was rebuilt from its current "
    "state and lacks what it forgot (e.g. worker overviews, finished jobs' timing). "
    "Start the server with `--journal <PATH>` to keep the full history."
)


def _require_textual() -> None:
    try:
        import textual  # noqa: F401
    except ImportError:
        raise HqError(MISSING_TEXTUAL) from None


def load_journal_events(path: str) -> list[dict[str, Any]]:
    from hyperq.server.journal.format import read_journal
    from hyperq.server.model.events import WorkerOverview, expand, from_record, to_export_json

    records, _report = read_journal(path)
    events = []
    for _seq, value in records:
        try:
            event = from_record(value)
        except (KeyError, TypeError, ValueError):
            continue
        if not event.exported:
            continue
        for one in expand(event):
            line = to_export_json(one)
            if isinstance(one, WorkerOverview) and one.running_cpus:
                # The same extra the server adds for a dashboard's stream.
                line["running_cpus"] = [[j, t, list(c)] for j, t, c in one.running_cpus]
            events.append(line)
    return events


def replay(path: str) -> int:
    _require_textual()
    from hyperq.dashboard.app import Dashboard
    from hyperq.dashboard.data import DashboardData

    print(f"Loading journal {path}", flush=True)
    data = DashboardData()
    data.add_all(load_journal_events(path))
    print(f"Loaded {data.count} events", flush=True)
    Dashboard(data, live=False).run()
    return 0


def stream(ctx: Context) -> int:
    _require_textual()
    from textual import work

    from hyperq.client.session import connect_to_server
    from hyperq.dashboard.app import Dashboard
    from hyperq.dashboard.data import DashboardData
    from hyperq.transport.wsclient import ConnectionClosedError

    data = DashboardData()
    with connect_to_server(ctx) as session:
        session.request("journal-stream", follow=True, live_marker=True, overviews=True)
        print("Streaming events from the server", flush=True)
        history: list[dict[str, Any]] = []
        journaled = True
        while True:
            message = session.recv()
            if not isinstance(message, dict):
                raise HqError("Invalid message from the server")
            if "error" in message:
                raise HqError(str(message["error"]))
            history.extend(message.get("events", ()))
            if "live" in message:
                journaled = bool(message.get("journal", True))
                break
        data.add_all(history)
        print(f"Loaded {data.count} events", flush=True)

        class LiveDashboard(Dashboard):
            def on_mount(self) -> None:
                super().on_mount()
                self.read_stream()

            @work(thread=True, exit_on_error=False)
            def read_stream(self) -> None:
                while True:
                    try:
                        message = session.connection.recv()
                    except (ConnectionClosedError, OSError):
                        self.call_from_thread(self.notify, "The server has stopped")
                        return
                    if isinstance(message, dict) and message.get("events"):
                        self.call_from_thread(self.add_events, list(message["events"]))

        app = LiveDashboard(data, live=True, warning=None if journaled else REBUILT_WARNING)
        app.run()
    return 0


def run(ctx: Context, args: dict[str, Any]) -> int:
    if args.get("replay"):
        return replay(args["<JOURNAL>"])
    if not sys.stdout.isatty():
        raise HqError("`hq dashboard` needs a terminal")
    return stream(ctx)

"""How the server stops: one stop request, whatever asked for it.

SIGINT, SIGTERM, SIGHUP and `hq server stop` all land here. The first request starts the
graceful shutdown (which runs under a deadline); a second signal cuts it short.
"""

from __future__ import annotations

import logging
import signal

import trio

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Long enough to tell workers and flush the journal, short enough that a user waiting
# on Ctrl-C is not kept waiting.
GRACE_PERIOD = 5.0


class StopRequest:
    def __init__(self) -> None:
        self.requested = trio.Event()
        self.reason = ""
        self.grace_scope: trio.CancelScope | None = None

    def request(self, reason: str) -> None:
        if self.requested.is_set():
            # A second request while stopping: stop waiting for the graceful part.
            if self.grace_scope is not None:
                self.grace_scope.cancel()
            return
        self.reason = reason
        self.requested.set()


async def watch_signals(
    stop: StopRequest, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(*SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("Received %s, stopping the server", name)
            stop.request(name)

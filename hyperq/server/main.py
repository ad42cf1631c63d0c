"""The server's trio tree, once `startup` has bound the sockets and announced the server.

root nursery
├── signal watcher     SIGINT/SIGTERM/SIGHUP → stop request
├── journal writer     persisted events → fsynced batches (with --journal)
├── scheduler          wakes on change → assignments → worker links
├── watchdog           heartbeats and idle timeouts
├── held workers       after a restore: gives up on `reconnect` workers after the grace
├── allocator          automatic allocation (hyperq.alloc): queues, sbatch/qsub, polling
├── client listener    one handler per client connection
└── worker listener    one handler per worker connection

SIGINT, SIGTERM, SIGHUP and `hq server stop` all end in the same graceful stop: a
`server-stop` event is written and flushed under a deadline, then the tree is cancelled.
"""

from __future__ import annotations

import logging
import signal
import socket

import trio

from hyperq.alloc.service import Allocator, client_ops
from hyperq.common.access import AccessRecord
from hyperq.common.errors import only_hq_error
from hyperq.server.clientapi import ClientApi
from hyperq.server.config import ServerConfig
from hyperq.server.core import ServerCore
from hyperq.server.info import ServerInfo
from hyperq.server.journal.recovery import Recovery
from hyperq.server.journal.writer import Journal
from hyperq.server.lifecycle import GRACE_PERIOD, StopRequest, watch_signals
from hyperq.server.model.events import ServerStop
from hyperq.server.workerconn import WorkerHandler
from hyperq.transport.wsserver import serve_role

log = logging.getLogger(__name__)


def serve(
    config: ServerConfig,
    record: AccessRecord,
    recovery: Recovery | None,
    info: ServerInfo,
    client_sock: socket.socket,
    worker_sock: socket.socket,
    early_signals: list[int],
) -> None:
    try:
        trio.run(_serve, config, record, recovery, info, client_sock, worker_sock, early_signals)
    except BaseExceptionGroup as group:
        # A service that fails for a reason the user can act on (the journal cannot be
        # written, say) says so in one line, like every other error.
        error = only_hq_error(group)
        if error is None:
            raise
        raise error from None


async def _serve(
    config: ServerConfig,
    record: AccessRecord,
    recovery: Recovery | None,
    info: ServerInfo,
    client_sock: socket.socket,
    worker_sock: socket.socket,
    early_signals: list[int],
) -> None:
    assert record.client and record.worker and record.server_uid
    stop = StopRequest()
    if record.client.secret_key is None:
        log.warning("Client authentication and encryption is disabled")
    if record.worker.secret_key is None:
        log.warning("Worker authentication and encryption is disabled")
    journal = None
    if recovery is not None:
        assert config.journal_path is not None
        journal = Journal(
            config.journal_path,
            recovery.end,
            recovery.next_seq,
            config.journal_flush_period,
            unsnapshotted=recovery.unsnapshotted,
        )
    core = ServerCore(
        record.server_uid,
        info.start_time,
        config.idle_timeout,
        model=recovery.model if recovery else None,
        journal=journal,
    )
    api = ClientApi(stop, core, info)
    allocator = Allocator(core, str(config.server_dir))
    api.add_plain_ops(client_ops(allocator))
    workers = WorkerHandler(core)
    async with trio.open_nursery() as root:
        await root.start(watch_signals, stop)
        if early_signals:
            stop.request(signal.Signals(early_signals[0]).name)
        if journal is not None:
            await root.start(journal.run)
            await root.start(journal.run_snapshots)
        root.start_soon(core.run_scheduler)
        root.start_soon(core.run_watchdog)
        root.start_soon(core.release_held_workers, config.reconnect_grace)
        await root.start(allocator.run)
        await root.start(
            serve_role, "client", record.client.key_bytes(), client_sock, api.handle_connection
        )
        await root.start(
            serve_role, "worker", record.worker.key_bytes(), worker_sock, workers.handle
        )
        await stop.requested.wait()
        log.info("Stopping server (%s)", stop.reason)
        core.stopping = True
        with trio.move_on_after(GRACE_PERIOD) as grace:
            stop.grace_scope = grace
            await api.shutdown()
            # Allocations would otherwise keep nodes busy for nothing (alloc.md §6).
            await allocator.shutdown()
            core.commit([ServerStop(core.now())])
            await core.durable()
        root.cancel_scope.cancel()

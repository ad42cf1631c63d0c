"""`hq server start`: the root nursery tree and the start-up sequence.

root nursery
├── signal watcher     SIGINT/SIGTERM/SIGHUP → stop request
├── journal writer     persisted events → fsynced batches (with --journal)
├── scheduler          wakes on change → assignments → worker links
├── watchdog           heartbeats and idle timeouts
├── client listener    one handler per client connection
└── worker listener    one handler per worker connection

The journal is read (and the model restored) before the loop starts. The access record
is written only once both listeners are bound, so a reader that finds it can connect at
once. Whatever ends the server, `hq-current` is removed on the way out and the run
directory is kept.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import trio

from hyperq import __version__
from hyperq.common import serverdir
from hyperq.common.access import (
    AccessRecord,
    Endpoint,
    generate_record,
    read_record,
    write_record,
)
from hyperq.common.errors import HqError
from hyperq.server.clientapi import ClientApi
from hyperq.server.config import ServerConfig
from hyperq.server.core import ServerCore
from hyperq.server.events import ServerStop
from hyperq.server.info import ServerInfo
from hyperq.server.journal import Journal
from hyperq.server.lifecycle import GRACE_PERIOD, StopRequest, watch_signals
from hyperq.server.recovery import Recovery, recover
from hyperq.server.workerconn import WorkerHandler
from hyperq.transport.wsserver import serve_role

log = logging.getLogger(__name__)

BIND_ALL = "0.0.0.0"

Announce = Callable[[ServerInfo, Path], None]


def check_not_running(server_dir: Path) -> None:
    """Refuse to start over a live server; a stale record (nothing listening) is ignored."""
    access_path = server_dir / serverdir.CURRENT_LINK / serverdir.ACCESS_FILE
    try:
        record = read_record(access_path)
    except HqError:
        return
    if record.client is None:
        return
    try:
        with socket.create_connection((record.client.host, record.client.port), timeout=1.0):
            pass
    except OSError:
        return
    raise HqError(
        f"Server at {server_dir} is already online, please stop it first using "
        f"`hq server stop --server-dir {server_dir}`"
    )


def initial_record(config: ServerConfig, server_uid: str | None) -> AccessRecord:
    """The access record before the ports are known: from --access-file, or fresh keys."""
    if config.access_file is not None:
        record = read_record(config.access_file)
        if record.client is None or record.worker is None or record.server_uid is None:
            raise HqError(f"Access file {config.access_file} is not a full access record")
    else:
        host = config.host or socket.gethostname()
        record = generate_record(
            host, 0, host, 0, client_auth=config.client_auth, worker_auth=config.worker_auth
        )
    if server_uid is not None:
        record = replace(record, server_uid=server_uid)
    return record


def start_server(config: ServerConfig, announce: Announce) -> None:
    """Run a server until it is stopped. Errors before serving raise HqError."""
    check_not_running(config.server_dir)
    recovery = recover(os.path.abspath(config.journal_path)) if config.journal_path else None
    record = initial_record(config, recovery.server_uid if recovery else None)
    trio.run(_serve, config, record, recovery, announce)


def _bound(endpoint: Endpoint, host: str | None, port: int) -> Endpoint:
    return Endpoint(host or endpoint.host, port, endpoint.secret_key)


async def _serve(
    config: ServerConfig, record: AccessRecord, recovery: Recovery | None, announce: Announce
) -> None:
    assert record.client and record.worker and record.server_uid
    started = time.time()
    stop = StopRequest()
    if record.client.secret_key is None:
        log.warning("Client authentication and encryption is disabled")
    if record.worker.secret_key is None:
        log.warning("Worker authentication and encryption is disabled")
    # An explicit port wins over the access file's; the access file's over a random one.
    client_port = config.client_port if config.client_port is not None else record.client.port
    worker_port = config.worker_port if config.worker_port is not None else record.worker.port

    journal = None
    if recovery is not None:
        assert config.journal_path is not None
        journal = Journal(
            config.journal_path, recovery.file, recovery.next_seq, config.journal_flush_period
        )
    core = ServerCore(
        record.server_uid,
        started,
        config.idle_timeout,
        model=recovery.model if recovery else None,
        journal=journal,
    )
    api = ClientApi(stop)
    api.core = core
    workers = WorkerHandler(core)
    run_dir: Path | None = None
    try:
        async with trio.open_nursery() as root:
            await root.start(watch_signals, stop)
            if journal is not None:
                await root.start(journal.run)
            root.start_soon(core.run_scheduler)
            root.start_soon(core.run_watchdog)
            root.start_soon(core.release_held_workers, config.reconnect_grace)
            client_ws = await root.start(
                serve_role,
                "client",
                record.client.key_bytes(),
                BIND_ALL,
                client_port,
                api.handle_connection,
            )
            worker_ws = await root.start(
                serve_role,
                "worker",
                record.worker.key_bytes(),
                BIND_ALL,
                worker_port,
                workers.handle,
            )
            record = replace(
                record,
                version=__version__,
                client=_bound(record.client, config.host, client_ws.port),
                worker=_bound(record.worker, config.host, worker_ws.port),
            )
            run_dir = serverdir.create_run_dir(config.server_dir)
            write_record(run_dir / serverdir.ACCESS_FILE, record)
            serverdir.point_current_link(config.server_dir, run_dir)
            assert record.client and record.worker
            info = ServerInfo(
                server_uid=record.server_uid or "",
                client_host=record.client.host,
                client_port=record.client.port,
                worker_host=record.worker.host,
                worker_port=record.worker.port,
                version=__version__,
                pid=os.getpid(),
                start_time=started,
                journal_path=config.journal_path,
            )
            api.info = info
            announce(info, config.server_dir)
            await stop.requested.wait()
            log.info("Stopping server (%s)", stop.reason)
            core.stopping = True
            with trio.move_on_after(GRACE_PERIOD) as grace:
                stop.grace_scope = grace
                await api.shutdown()
                core.commit([ServerStop(core.now())])
                await core.durable()
            root.cancel_scope.cancel()
    finally:
        if run_dir is not None:
            serverdir.remove_current_link(config.server_dir, run_dir)

"""`hq server start`: the root nursery tree and the start-up sequence.

root nursery
├── signal watcher     SIGINT/SIGTERM/SIGHUP → stop request
├── client listener    one handler per client connection
└── worker listener    one handler per worker connection

The access record is written only once both listeners are bound, so a reader that finds
it can connect at once. Whatever ends the server, `hq-current` is removed on the way out
and the run directory is kept.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import trio

from hyperq import __version__
from hyperq.common import serverdir
from hyperq.common.access import AccessRecord, generate_record, read_record, write_record
from hyperq.common.errors import HqError
from hyperq.server.clientapi import ClientApi
from hyperq.server.config import ServerConfig
from hyperq.server.core import ServerCore
from hyperq.server.info import ServerInfo
from hyperq.server.lifecycle import GRACE_PERIOD, StopRequest, watch_signals
from hyperq.server.workerconn import WorkerHandler
from hyperq.transport.wsserver import serve_role

log = logging.getLogger(__name__)

BIND_ALL = "0.0.0.0"


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


def load_access_file(config: ServerConfig) -> AccessRecord | None:
    if config.access_file is None:
        return None
    record = read_record(config.access_file)
    if record.client is None or record.worker is None or record.server_uid is None:
        raise HqError(f"Access file {config.access_file} is not a full access record")
    return record


def build_record(
    config: ServerConfig, preset: AccessRecord | None, client_port: int, worker_port: int
) -> AccessRecord:
    if preset is not None:
        return preset
    host = config.host or socket.gethostname()
    return generate_record(
        host,
        client_port,
        host,
        worker_port,
        client_auth=config.client_auth,
        worker_auth=config.worker_auth,
    )


def start_server(config: ServerConfig, announce: Announce) -> None:
    """Run a server until it is stopped. Errors before serving raise HqError."""
    preset = load_access_file(config)
    check_not_running(config.server_dir)
    trio.run(_serve, config, preset, announce)


class Announce:
    """What the caller wants done once the server is up (print the info table)."""

    def __call__(self, info: ServerInfo, server_dir: Path) -> None:  # pragma: no cover
        raise NotImplementedError


async def _serve(config: ServerConfig, preset: AccessRecord | None, announce: Announce) -> None:
    stop = StopRequest()
    started = time.time()
    client_key = preset.client.key_bytes() if preset and preset.client else None
    worker_key = preset.worker.key_bytes() if preset and preset.worker else None
    if preset is None:
        # Keys must exist before the listeners start; build them from a provisional record.
        provisional = build_record(config, None, 0, 0)
        assert provisional.client and provisional.worker
        client_key = provisional.client.key_bytes()
        worker_key = provisional.worker.key_bytes()
    else:
        provisional = preset
    if client_key is None:
        log.warning("Client authentication and encryption is disabled")
    if worker_key is None:
        log.warning("Worker authentication and encryption is disabled")

    client_port = config.client_port
    worker_port = config.worker_port
    if preset is not None:
        assert preset.client and preset.worker
        client_port = client_port if client_port is not None else preset.client.port
        worker_port = worker_port if worker_port is not None else preset.worker.port

    assert provisional.server_uid is not None
    core = ServerCore(provisional.server_uid, started, config.idle_timeout)
    api = ClientApi(stop)
    api.core = core
    workers = WorkerHandler(core)
    run_dir: Path | None = None
    try:
        async with trio.open_nursery() as root:
            await root.start(watch_signals, stop)
            root.start_soon(core.run_scheduler)
            root.start_soon(core.run_watchdog)
            client_ws = await root.start(
                serve_role, "client", client_key, BIND_ALL, client_port or 0, api.handle_connection
            )
            worker_ws = await root.start(
                serve_role, "worker", worker_key, BIND_ALL, worker_port or 0, workers.handle
            )
            assert provisional.client and provisional.worker
            host = config.host
            record = AccessRecord(
                version=__version__,
                server_uid=provisional.server_uid,
                client=type(provisional.client)(
                    host or provisional.client.host, client_ws.port, provisional.client.secret_key
                ),
                worker=type(provisional.worker)(
                    host or provisional.worker.host, worker_ws.port, provisional.worker.secret_key
                ),
            )
            run_dir = serverdir.create_run_dir(config.server_dir)
            write_record(run_dir / serverdir.ACCESS_FILE, record)
            serverdir.point_current_link(config.server_dir, run_dir)
            assert record.client and record.worker and record.server_uid
            info = ServerInfo(
                server_uid=record.server_uid,
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
            with trio.move_on_after(GRACE_PERIOD) as grace:
                stop.grace_scope = grace
                await api.shutdown()
            root.cancel_scope.cancel()
    finally:
        if run_dir is not None:
            serverdir.remove_current_link(config.server_dir, run_dir)

"""`hq server start` up to the moment the server is reachable, without trio.

Importing trio and the rest of the server costs this machine about 0.3 s, so everything
a user or script waits for comes first: refuse a live server, restore the journal (if
any), bind both listening sockets, write the access record, point `hq-current` at it
and print the info table. Connections that arrive meanwhile wait in the kernel's backlog
and are served as soon as the trio tree (`hyperq.server.main`) takes the sockets over.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hyperq import __version__
from hyperq.common import serverdir
from hyperq.common.access import AccessRecord, Endpoint, generate_record, read_record, write_record
from hyperq.common.errors import HqError
from hyperq.server.config import ServerConfig
from hyperq.server.info import ServerInfo

# Both ports listen on every interface (spec: server.md §1).
BIND_ALL = "0.0.0.0"
# Connections the kernel queues before the server accepts them: start-up bursts of
# workers and clients connecting at once.
BACKLOG = 1024

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


def bind_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((BIND_ALL, port))
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise HqError(f"Cannot listen on port {port}: {error.strerror}") from None
    return sock


def _bound(endpoint: Endpoint, host: str | None, port: int) -> Endpoint:
    return Endpoint(host or endpoint.host, port, endpoint.secret_key)


def start_server(config: ServerConfig, announce: Announce) -> None:
    """Run a server until it is stopped. Errors before serving raise HqError."""
    started = time.time()
    # Until the trio tree watches signals itself, remember them: a SIGINT that arrives
    # while trio is still being imported must still mean a graceful stop.
    early_signals: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, _frame: early_signals.append(signum))
    check_not_running(config.server_dir)
    # Young-generation collections every 20,000 allocations instead of 700: a request
    # allocates hundreds of short-lived containers (freed by reference counting anyway),
    # and at the default the collector ran every few requests and walked the ones still
    # waiting for their reply. Measured (alternating runs, 8 submitters): 5-7% more
    # submits/s, with the journal on and off alike (server CPU per submit -40 µs).
    gc.set_threshold(20_000, 20, 100)
    recovery = None
    if config.journal_path:
        from hyperq.server.journal.recovery import recover

        # A restore builds up to millions of objects that all live on: cyclic GC passes
        # over them would double its time, and after it they belong in the permanent
        # generation, where later collections do not walk them again.
        gc.disable()
        try:
            recovery = recover(os.path.abspath(config.journal_path))
        finally:
            gc.enable()
        gc.freeze()
    record = initial_record(config, recovery.server_uid if recovery else None)
    assert record.client and record.worker and record.server_uid
    # An explicit port wins over the access file's; the access file's over a random one.
    client_port = config.client_port if config.client_port is not None else record.client.port
    worker_port = config.worker_port if config.worker_port is not None else record.worker.port
    client_sock = bind_listener(client_port)
    worker_sock = bind_listener(worker_port)
    run_dir: Path | None = None
    try:
        record = replace(
            record,
            version=__version__,
            client=_bound(record.client, config.host, client_sock.getsockname()[1]),
            worker=_bound(record.worker, config.host, worker_sock.getsockname()[1]),
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
        announce(info, config.server_dir)

        from hyperq.server.main import serve

        serve(config, record, recovery, info, client_sock, worker_sock, early_signals)
    finally:
        client_sock.close()
        worker_sock.close()
        if run_dir is not None:
            serverdir.remove_current_link(config.server_dir, run_dir)

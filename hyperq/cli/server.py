"""`hq server …`: start, stop, info, generate-access, wait, debug-dump."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hyperq.common.context import Context
from hyperq.common.errors import HqError, UsageError

GROUP_USAGE = """Commands for the server

Usage:
  hq server start [options]
  hq server stop
  hq server info
  hq server wait [--timeout <DUR>]
  hq server generate-access <ACCESS_FILE> --client-port <P> --worker-port <P> [options]
  hq server debug-dump <PATH>
"""

START_USAGE = """Start the server

Usage:
  hq server start [options]

Options:
  --host <HOST>                  Host written for clients and workers (default: hostname)
  --client-port <PORT>           Port for client connections (default: random free port)
  --worker-port <PORT>           Port for worker connections (default: random free port)
  --idle-timeout <DUR>           Idle timeout for workers that do not set their own
  --journal <PATH>               Event journal; the server restores from it if it exists
  --journal-flush-period <DUR>   How often progress events are fsynced [default: 1s]
  --access-file <PATH>           Reuse a full access record (see `hq server generate-access`)
  --disable-client-authentication-and-encryption  Clients connect without a key
  --disable-worker-authentication-and-encryption  Workers connect without a key
  --scheduler-time-limit <DUR>   Accepted for compatibility [default: 5s]
  --reconnect-grace <DUR>        After a restore from the journal, how long tasks of workers
                                 started with `--on-server-lost reconnect` wait for their
                                 worker to come back before they are rescheduled [default: 1m]
"""

STOP_USAGE = """Stop the server

Usage:
  hq server stop
"""

INFO_USAGE = """Show information about the running server

Usage:
  hq server info
"""

WAIT_USAGE = """Wait until the server is running

Usage:
  hq server wait [--timeout <DUR>]

Options:
  --timeout <DUR>   Give up after this long [default: 5m]
"""

GENERATE_ACCESS_USAGE = """Generate an access record for a server started later

Usage:
  hq server generate-access <ACCESS_FILE> --client-port <P> --worker-port <P> [options]

Options:
  --client-port <P>       Client port
  --worker-port <P>       Worker port
  --client-file <F>       Also write the client-only record here
  --worker-file <F>       Also write the worker-only record here
  --host <H>              Host for both parts (default: local hostname)
  --client-host <H>       Host for the client part
  --worker-host <H>       Host for the worker part
  --disable-client-authentication-and-encryption  Clients connect without a key
  --disable-worker-authentication-and-encryption  Workers connect without a key
"""

DEBUG_DUMP_USAGE = """Dump the server's internal state as JSON

Usage:
  hq server debug-dump <PATH>
"""


def _port(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise UsageError(f"error: invalid value '{value}' for '{name} <PORT>': not a port number")
    return port


def _duration(value: str | None, name: str) -> float | None:
    from hyperq.common.duration import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except HqError as error:
        raise UsageError(
            f"error: invalid value '{value}' for '{name} <DUR>': {error.message}"
        ) from None


def start(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.common.log import setup_logging
    from hyperq.output.modes import make_output
    from hyperq.server.config import ServerConfig
    from hyperq.server.startup import start_server

    if args["--journal"] == "":
        # Not "no journal": a script whose path variable came out empty would otherwise
        # run without the crash safety it asked for.
        raise HqError("Cannot create event log file at '': the path is empty")
    flush = _duration(args["--journal-flush-period"], "--journal-flush-period")
    _duration(args["--scheduler-time-limit"], "--scheduler-time-limit")
    config = ServerConfig(
        server_dir=ctx.server_dir,
        host=args["--host"],
        client_port=_port(args["--client-port"], "--client-port"),
        worker_port=_port(args["--worker-port"], "--worker-port"),
        idle_timeout=_duration(args["--idle-timeout"], "--idle-timeout"),
        journal_path=args["--journal"],
        journal_flush_period=flush if flush is not None else 1.0,
        access_file=Path(os.path.abspath(args["--access-file"])) if args["--access-file"] else None,
        client_auth=not args["--disable-client-authentication-and-encryption"],
        worker_auth=not args["--disable-worker-authentication-and-encryption"],
        reconnect_grace=_duration(args["--reconnect-grace"], "--reconnect-grace") or 0.0,
    )
    setup_logging(ctx.debug)
    output = make_output(ctx.output_mode, ctx.colors)
    start_server(config, lambda info, server_dir: output.server_info(info, server_dir))
    return 0


def stop(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.client.session import connect_to_server

    with connect_to_server(ctx) as session:
        session.request("server-stop")
    from hyperq.common import log

    log.info("Stopping server")
    return 0


def info(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.client.session import connect_to_server
    from hyperq.output.modes import make_output
    from hyperq.server.info import ServerInfo

    with connect_to_server(ctx) as session:
        result = session.request("server-info")
    make_output(ctx.output_mode, ctx.colors).server_info(ServerInfo.from_wire(result), None)
    return 0


def wait(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.client.session import try_connect
    from hyperq.common.duration import format_duration

    timeout = _duration(args["--timeout"], "--timeout")
    assert timeout is not None
    deadline = time.monotonic() + timeout
    # Retrying often keeps the wait close to the server's real start; 0.2 s is cheap.
    interval = 0.2
    while True:
        try:
            try_connect(ctx).close()
            return 0
        except HqError:
            pass
        now = time.monotonic()
        if now >= deadline:
            raise HqError(
                f"Timeout after {format_duration(timeout)}: Could not connect to server at "
                f"`{ctx.server_dir}`. Make sure that the server is running."
            )
        time.sleep(min(interval, deadline - now))


def generate_access(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.common.access import generate_record, write_record
    from hyperq.output.modes import make_output

    client_port = _port(args["--client-port"], "--client-port")
    worker_port = _port(args["--worker-port"], "--worker-port")
    assert client_port is not None and worker_port is not None
    host = args["--host"] or socket.gethostname()
    record = generate_record(
        args["--client-host"] or host,
        client_port,
        args["--worker-host"] or host,
        worker_port,
        client_auth=not args["--disable-client-authentication-and-encryption"],
        worker_auth=not args["--disable-worker-authentication-and-encryption"],
    )
    path = Path(args["<ACCESS_FILE>"])
    write_record(path, record)
    if args["--client-file"]:
        write_record(Path(args["--client-file"]), record.client_only())
    if args["--worker-file"]:
        write_record(Path(args["--worker-file"]), record.worker_only())
    make_output(ctx.output_mode, ctx.colors).generated_access(path)
    return 0


def debug_dump(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.client.session import connect_to_server

    with connect_to_server(ctx) as session:
        dump = session.request("debug-dump")
    try:
        with open(args["<PATH>"], "w") as f:
            json.dump(dump, f, indent=2)
    except OSError as error:
        raise HqError(f"Could not write debug dump: {error}") from None
    return 0


COMMANDS = {
    "start": (START_USAGE, start, False),
    "stop": (STOP_USAGE, stop, False),
    "info": (INFO_USAGE, info, False),
    "wait": (WAIT_USAGE, wait, False),
    "generate-access": (GENERATE_ACCESS_USAGE, generate_access, False),
    "debug-dump": (DEBUG_DUMP_USAGE, debug_dump, False),
}

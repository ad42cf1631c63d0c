"""Finding and talking to the server from a short-lived CLI command (blocking, no trio).

A client that finds no access record, or a server not accepting yet, retries briefly:
scripts often run `hq submit` right after starting the server.
"""

from __future__ import annotations

import time
from typing import Any

from hyperq.common import serverdir
from hyperq.common.access import read_record
from hyperq.common.context import Context
from hyperq.common.errors import HqError
from hyperq.transport.codec import ProtocolError
from hyperq.transport.wsclient import BlockingConnection, ConnectionClosedError, connect

# How long a client keeps retrying a missing record or a refused connection.
CONNECT_RETRY = 2.0
RETRY_INTERVAL = 0.05


class ClientSession:
    def __init__(self, connection: BlockingConnection) -> None:
        self.connection = connection

    def request(self, op: str, **fields: Any) -> Any:
        """Send one request and return its result; a server-side refusal raises HqError."""
        fields["op"] = op
        try:
            reply = self.connection.request(fields)
        except ConnectionClosedError as error:
            raise HqError(f"Connection to the server was lost: {error}") from None
        except ProtocolError as error:
            raise HqError(f"Invalid reply from the server: {error}") from None
        if not isinstance(reply, dict):
            raise HqError("Invalid reply from the server")
        if "error" in reply:
            raise HqError(str(reply["error"]))
        return reply.get("ok")

    def send(self, value: Any) -> None:
        self.connection.send(value)

    def recv(self) -> Any:
        try:
            return self.connection.recv()
        except ConnectionClosedError as error:
            raise HqError(f"Connection to the server was lost: {error}") from None

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> ClientSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def try_connect(ctx: Context) -> ClientSession:
    """One attempt: resolve the dir, read the record, connect. Raises HqError."""
    active = (
        serverdir.resolve_active_dir(ctx.server_dir) if ctx.server_dir.exists() else ctx.server_dir
    )
    access_path = active / serverdir.ACCESS_FILE
    if not access_path.exists():
        raise HqError(
            f'No running instance of HQ found at "{active}".\n'
            f"Try to start the server: `hq server start{ctx.server_dir_hint()}` "
            "or use a different server directory."
        )
    record = read_record(access_path)
    if record.client is None:
        raise HqError(f"Access record {access_path} has no client part")
    endpoint = record.client
    try:
        connection = connect(endpoint.host, endpoint.port, "client", endpoint.key_bytes())
    except (OSError, ConnectionClosedError) as error:
        raise _Unreachable(
            f"Access token found but HQ server {endpoint.host}:{endpoint.port} is unreachable.\n"
            f"Try to (re)start the server using `hq server start{ctx.server_dir_hint()}`"
        ) from error
    except ProtocolError as error:
        raise HqError(f"Cannot connect to the server: {error}") from None
    return ClientSession(connection)


class _Unreachable(HqError):
    pass


def connect_to_server(ctx: Context, retry: float = CONNECT_RETRY) -> ClientSession:
    """Connect, retrying a missing record or a refused connection for `retry` seconds."""
    deadline = time.monotonic() + retry
    while True:
        try:
            return try_connect(ctx)
        except HqError as error:
            retriable = isinstance(error, _Unreachable) or error.message.startswith(
                "No running instance"
            )
            if not retriable or time.monotonic() >= deadline:
                raise HqError(error.message) from None
        time.sleep(RETRY_INTERVAL)

"""Task notifications (`hq task notify`, graphs.md §4): what the task, its worker and the
server agree on. The task side is a plain blocking client (it runs once per message).

Wire, on the worker's Unix socket: the task sends `<token>\\n`, the message length as a
4-byte big-endian integer and the message; the worker answers `ok\\n` once it queued the
message for the server, or closes the connection (unknown token, bad frame).
"""

from __future__ import annotations

import os
import socket
import struct

from hyperq.common.errors import HqError

ACCESS_KEY_VAR = "HQ_ACCESS_KEY"
NOTIFY_LIMIT = 1024
LENGTH = struct.Struct(">I")
OK = b"ok\n"
TIMEOUT = 30.0


def send_notification(message: bytes, environ: dict[str, str] | None = None) -> None:
    """Deliver one message from inside a task; returns once the worker acknowledged."""
    env = os.environ if environ is None else environ
    key = env.get(ACCESS_KEY_VAR)
    if key is None:
        raise HqError(
            f"{ACCESS_KEY_VAR} variable not found. Are you running this command inside a task?"
        )
    endpoint, colon, token = key.rpartition(":")
    if not colon:
        raise HqError(f"Value of {ACCESS_KEY_VAR} has a wrong format")
    if len(message) > NOTIFY_LIMIT:
        raise HqError(
            f"Notify message limit exceeded, message len: {len(message)}, limit: {NOTIFY_LIMIT}"
        )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(endpoint)
            sock.sendall(token.encode() + b"\n" + LENGTH.pack(len(message)) + message)
            reply = b""
            while len(reply) < len(OK):
                chunk = sock.recv(len(OK) - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError as error:
        raise HqError(f"Cannot deliver the notification: {error}") from None
    if reply != OK:
        raise HqError("Cannot deliver the notification: the worker refused it")

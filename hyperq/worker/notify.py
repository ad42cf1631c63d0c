"""The worker's side of task notifications (graphs.md §4): a Unix socket for its tasks.

Each running task gets a token (in `HQ_ACCESS_KEY`, with the socket's path) that is
valid while it runs; a message from a known token goes to the server through `forward`,
and the task is answered once it is queued. The socket lives in a private temporary
directory, removed when the worker ends; `on_directory` hears of it at once, so that the
worker's guardian removes it also when the worker is killed and cannot clean up.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import socket
import string
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from hyperq.common.notify import LENGTH, NOTIFY_LIMIT, OK

log = logging.getLogger(__name__)

Forward = Callable[[int, int, int, bytes], Awaitable[None]]
_ALPHABET = string.ascii_letters + string.digits
# A task that connects and says nothing is cut off after this long.
READ_TIMEOUT = 10.0
MAX_TOKEN_LINE = 64
# Tokens drawn from the OS at once (6 random bytes each: 8 base64 characters, no padding).
TOKEN_BATCH = 512


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


class NotifyService:
    def __init__(self, forward: Forward, on_directory: Callable[[str], Any] | None = None) -> None:
        self.forward = forward
        self.on_directory = on_directory
        self.path: str | None = None
        self._tokens: dict[str, tuple[int, int, int]] = {}
        # Random URL-safe characters not yet used for a token, from `_pool_at` on.
        self._pool = ""
        self._pool_at = 0

    def register(self, job_id: int, task_id: int, instance: int) -> tuple[str, str] | None:
        """A new token for a starting task: (token, HQ_ACCESS_KEY value); None before
        the socket is up."""
        if self.path is None:
            return None
        # One token per task start, 6 random bytes as 8 URL-safe characters, cut from a
        # batch drawn from the OS at once: a draw (and its Python calls) per task was a
        # noticeable part of a short task's cost. Each token is used once, and only this
        # process sees the batch, so tokens stay as unguessable as drawn one by one.
        if self._pool_at >= len(self._pool):
            self._pool = base64.urlsafe_b64encode(secrets.token_bytes(6 * TOKEN_BATCH)).decode()
            self._pool_at = 0
        at = self._pool_at
        self._pool_at = at + 8
        token = "hq0-" + self._pool[at : at + 8]
        self._tokens[token] = (job_id, task_id, instance)
        return token, f"{self.path}:{token}"

    def revoke(self, token: str) -> None:
        self._tokens.pop(token, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            directory = tempfile.mkdtemp(prefix="hq-lc-")
        except OSError as error:
            log.warning("Task notifications are unavailable: %s", error)
            task_status.started()
            return
        try:
            if self.on_directory is not None:
                self.on_directory(directory)
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            path = os.path.join(directory, f"hq-lc-{_random(8)}")
            try:
                await sock.bind(path)
                sock.listen(64)
            except OSError as error:
                # Tasks then run without HQ_ACCESS_KEY; the worker itself goes on.
                sock.close()
                log.warning("Task notifications are unavailable: %s", error)
                task_status.started()
                return
            self.path = path
            task_status.started()
            await trio.serve_listeners(self._handle, [trio.SocketListener(sock)])
        finally:
            self.path = None
            shutil.rmtree(directory, ignore_errors=True)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(READ_TIMEOUT):
                    token, message = await self._read(stream)
                    task = self._tokens.get(token)
                    if task is None:
                        return
                    await self.forward(*task, message)
                    await stream.send_all(OK)
            except (trio.TooSlowError, trio.BrokenResourceError, ValueError) as error:
                log.debug("Notification refused: %s", error)

    @staticmethod
    async def _read(stream: trio.SocketStream) -> tuple[str, bytes]:
        buffer = b""

        async def need(n: int) -> None:
            nonlocal buffer
            while len(buffer) < n:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    raise ValueError("connection closed early")
                buffer += chunk

        while b"\n" not in buffer:
            if len(buffer) > MAX_TOKEN_LINE:
                raise ValueError("token line too long")
            await need(len(buffer) + 1)
        line, _, buffer = buffer.partition(b"\n")
        await need(LENGTH.size)
        (length,) = LENGTH.unpack(buffer[: LENGTH.size])
        if length > NOTIFY_LIMIT:
            raise ValueError("message too long")
        buffer = buffer[LENGTH.size :]
        await need(length)
        return line.decode(errors="replace"), buffer[:length]

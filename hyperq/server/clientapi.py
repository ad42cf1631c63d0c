"""Answers client requests: one handler task per client connection.

A request is a map with an `op`; the reply is `{"ok": value}` or `{"error": message}`.
A malformed request gets an error reply, never an exception that escapes the handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from trio_websocket import ConnectionClosed

from hyperq.server.info import ServerInfo
from hyperq.server.lifecycle import StopRequest
from hyperq.transport.wsserver import PeerConnection

log = logging.getLogger(__name__)

Op = Callable[[dict[str, Any]], Awaitable[Any]]


class RequestError(Exception):
    """A request we refuse; its message goes back to the client as the error."""


class ClientApi:
    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop
        self.info: ServerInfo | None = None
        self.ops: dict[str, Op] = {
            "server-info": self._server_info,
            "server-stop": self._server_stop,
            "debug-dump": self._debug_dump,
        }

    async def handle_connection(self, peer: PeerConnection) -> None:
        while True:
            try:
                request = await peer.recv()
            except ConnectionClosed:
                return
            reply = await self.dispatch(request)
            await peer.send(reply)
            if isinstance(request, dict) and request.get("op") == "server-stop":
                self.stop.request("hq server stop")

    async def dispatch(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"error": "malformed request"}
        op = self.ops.get(request["op"])
        if op is None:
            return {"error": f"unknown request {request['op']!r}"}
        try:
            return {"ok": await op(request)}
        except RequestError as error:
            return {"error": str(error)}

    async def shutdown(self) -> None:
        """Graceful part of the stop: tell what needs telling before the tree is cancelled."""

    async def _server_info(self, request: dict[str, Any]) -> Any:
        assert self.info is not None
        return self.info.to_wire()

    async def _server_stop(self, request: dict[str, Any]) -> Any:
        return None

    async def _debug_dump(self, request: dict[str, Any]) -> Any:
        assert self.info is not None
        return {"tako": {}, "server": self.info.to_wire()}

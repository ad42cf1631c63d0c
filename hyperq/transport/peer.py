"""An authenticated websocket connection, on either side: send and receive sealed values."""

from __future__ import annotations

from typing import Any

import trio
from trio_websocket import WebSocketConnection

from hyperq.transport.codec import MAX_FRAME_SIZE, ProtocolError, encode_unbounded, split_large
from hyperq.transport.sealing import Session

# A send that cannot complete in this time means the peer stopped reading.
SEND_TIMEOUT = 30.0


class PeerConnection:
    """An authenticated connection: send and receive sealed values."""

    def __init__(self, ws: WebSocketConnection, session: Session, role: str) -> None:
        self.ws = ws
        self.session = session
        self.role = role
        self._send_lock = trio.Lock()
        self.remote = f"{getattr(ws.remote, 'address', '?')}:{getattr(ws.remote, 'port', '?')}"

    async def send(self, value: Any) -> None:
        # Sealing advances the nonce counter, so sealing and sending must not interleave.
        async with self._send_lock:
            frame = self.session.seal(value)
            with trio.fail_after(SEND_TIMEOUT):
                await self.ws.send_message(frame)

    async def send_large(self, value: Any) -> None:
        """Send a value of any size: one frame, or parts the client reassembles."""
        data = encode_unbounded(value)
        if len(data) <= MAX_FRAME_SIZE:
            async with self._send_lock:
                frame = self.session.seal_bytes(data)
                with trio.fail_after(SEND_TIMEOUT):
                    await self.ws.send_message(frame)
            return
        for message in split_large(data):
            await self.send(message)

    async def recv(self) -> Any:
        message = await self.ws.get_message()
        if not isinstance(message, bytes):
            raise ProtocolError("text message where a binary frame was expected")
        return self.session.open(message)

    async def close(self, reason: str = "") -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self.ws.aclose(code=1000, reason=reason[:120])

"""The worker's end of the connection: trio-websocket client plus the sealing handshake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trio_websocket import open_websocket

from hyperq.transport.codec import MAX_FRAME_SIZE, ProtocolError
from hyperq.transport.peer import PeerConnection
from hyperq.transport.sealing import ClientHandshake

# Frames the server may have in flight to us before trio-websocket stops reading:
# assignments come in batches, so a handful is plenty.
MESSAGE_QUEUE_SIZE = 8


@asynccontextmanager
async def open_server_connection(
    host: str, port: int, key: bytes | None
) -> AsyncIterator[PeerConnection]:
    async with open_websocket(
        host,
        port,
        "/worker",
        use_ssl=False,
        max_message_size=MAX_FRAME_SIZE,
        message_queue_size=MESSAGE_QUEUE_SIZE,
        connect_timeout=10,
        disconnect_timeout=2,
    ) as ws:
        handshake = ClientHandshake("worker", key)
        await ws.send_message(handshake.hello())
        challenge = await ws.get_message()
        if not isinstance(challenge, bytes):
            raise ProtocolError("text message where a binary frame was expected")
        await ws.send_message(handshake.receive_challenge(challenge))
        assert handshake.session is not None
        yield PeerConnection(ws, handshake.session, "worker")

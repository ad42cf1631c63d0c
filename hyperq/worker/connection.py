"""The worker's end of the connection: trio-websocket client plus the sealing handshake."""

from __future__ import annotations

import trio
from trio_websocket import connect_websocket

from hyperq.transport.codec import MAX_FRAME_SIZE, ProtocolError
from hyperq.transport.peer import PeerConnection
from hyperq.transport.sealing import ClientHandshake

# Frames the server may have in flight to us before trio-websocket stops reading:
# assignments come in batches, so a handful is plenty.
MESSAGE_QUEUE_SIZE = 8
CONNECT_TIMEOUT = 10.0


async def connect_server(
    nursery: trio.Nursery, host: str, port: int, key: bytes | None
) -> PeerConnection:
    """Connect and authenticate; the connection's reader task lives in `nursery`."""
    with trio.fail_after(CONNECT_TIMEOUT):
        ws = await connect_websocket(
            nursery,
            host,
            port,
            "/worker",
            use_ssl=False,
            max_message_size=MAX_FRAME_SIZE,
            message_queue_size=MESSAGE_QUEUE_SIZE,
        )
        handshake = ClientHandshake("worker", key)
        await ws.send_message(handshake.hello())
        challenge = await ws.get_message()
        if not isinstance(challenge, bytes):
            raise ProtocolError("text message where a binary frame was expected")
        await ws.send_message(handshake.receive_challenge(challenge))
        assert handshake.session is not None
        return PeerConnection(ws, handshake.session, "worker")

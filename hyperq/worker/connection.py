"""The worker's end of the connection: our lean websocket link plus the sealing handshake."""

from __future__ import annotations

import trio

from hyperq.transport import link as lean
from hyperq.transport.peer import SEND_TIMEOUT, PeerConnection
from hyperq.transport.sealing import ClientHandshake

CONNECT_TIMEOUT = 10.0


async def connect_server(
    nursery: trio.Nursery, host: str, port: int, key: bytes | None
) -> PeerConnection:
    """Connect and authenticate. The link needs no task of its own; `nursery` is kept
    for the callers, whose connections' lifetimes it still scopes."""
    with trio.fail_after(CONNECT_TIMEOUT):
        link = await lean.connect(host, port, "/worker")
        try:
            handshake = ClientHandshake("worker", key)
            await link.send_message(handshake.hello(), SEND_TIMEOUT)
            challenge = await link.get_message()
            await link.send_message(handshake.receive_challenge(challenge), SEND_TIMEOUT)
        except BaseException:
            link.close_now()
            raise
        assert handshake.session is not None
        return PeerConnection(link, handshake.session, "worker")

"""An authenticated websocket connection, on either side: send and receive sealed values."""

from __future__ import annotations

from typing import Any

import trio

from hyperq.transport.codec import MAX_FRAME_SIZE, encode_unbounded, split_large
from hyperq.transport.link import FrameLink
from hyperq.transport.sealing import Session

# A send that cannot complete in this time means the peer stopped reading.
SEND_TIMEOUT = 30.0


class PeerConnection:
    """An authenticated connection: send and receive sealed values."""

    def __init__(self, link: FrameLink, session: Session, role: str) -> None:
        self.link = link
        self.session = session
        self.role = role
        self.remote = link.remote

    async def send(self, value: Any) -> None:
        link = self.link
        # Sealing advances the nonce counter, so sealing and sending must not interleave:
        # seal only once no other send is under way, and start sending in the same step.
        while link.send_busy:
            await link.wait_send_idle()
        await link.send_message(self.session.seal(value), SEND_TIMEOUT)

    async def send_large(self, value: Any) -> None:
        """Send a value of any size: one frame, or parts the client reassembles."""
        data = encode_unbounded(value)
        if len(data) <= MAX_FRAME_SIZE:
            link = self.link
            while link.send_busy:
                await link.wait_send_idle()
            await link.send_message(self.session.seal_bytes(data), SEND_TIMEOUT)
            return
        for message in split_large(data):
            await self.send(message)

    async def recv(self) -> Any:
        return self.session.open(await self.link.get_message())

    async def close(self, reason: str = "") -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self.link.aclose(1000, reason[:120])

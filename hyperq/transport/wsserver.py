"""Serving one role (client or worker) with the sealing handshake.

The worker role, whose links carry a message per task or two, runs on our own lean
websocket link (`link.LeanLink`); the client role keeps trio-websocket (wsproto). Each
accepted connection gets its own handler task. Whatever a peer does (garbage, wrong key,
oversized frames, silence, dropping mid-frame) ends that one connection with a logged
reason; nothing it sends can reach the rest of the server.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from hyperq.common.errors import describe_exception
from hyperq.transport import link as lean
from hyperq.transport.codec import MAX_FRAME_SIZE, ProtocolError
from hyperq.transport.link import FrameLink, LinkClosed, SendGate
from hyperq.transport.peer import PeerConnection
from hyperq.transport.sealing import ServerHandshake, Session
from hyperq.transport.wsframes import CLOSE_POLICY, CLOSE_TOO_BIG, FrameError
from hyperq.transport.wsserverframes import BadRequest

log = logging.getLogger(__name__)

# A peer must finish the websocket upgrade and our handshake within this time; a silent
# peer would otherwise hold a connection slot for trio-websocket's 60 s default.
HANDSHAKE_TIMEOUT = 5.0
# Messages trio-websocket may buffer per connection before it stops reading the socket:
# enough to keep a busy worker's pipeline full, small enough that a peer that floods us
# costs at most this many frames of memory.
MESSAGE_QUEUE_SIZE = 8


Handler = Callable[[PeerConnection], Awaitable[None]]


class WebSocketLink(SendGate):
    """trio-websocket's connection as a FrameLink."""

    def __init__(self, ws: WebSocketConnection) -> None:
        super().__init__()
        self.ws = ws
        self.remote = f"{getattr(ws.remote, 'address', '?')}:{getattr(ws.remote, 'port', '?')}"

    async def send_message(self, data: bytes, timeout: float) -> None:
        self._send_busy = True
        try:
            with trio.fail_after(timeout):
                await self.ws.send_message(data)
        finally:
            self._send_done()

    async def get_message(self) -> bytes:
        message = await self.ws.get_message()
        if not isinstance(message, bytes):
            raise ProtocolError("text message where a binary frame was expected")
        return message

    async def aclose(self, code: int, reason: str) -> None:
        await self.ws.aclose(code=code, reason=reason)


async def _authenticate(link: FrameLink, role: str, key: bytes | None) -> Session:
    handshake = ServerHandshake(role, key)
    challenge = handshake.receive_hello(await link.get_message())
    await link.send_message(challenge, HANDSHAKE_TIMEOUT)
    return handshake.receive_proof(await link.get_message())


async def _serve_connection(
    role: str,
    key: bytes | None,
    handler: Handler,
    upgrade: Callable[[], Awaitable[FrameLink]],
) -> None:
    """One connection from its upgrade to its end, whatever the peer does."""
    link: FrameLink | None = None
    peer: PeerConnection | None = None
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            link = await upgrade()
            session = await _authenticate(link, role, key)
        peer = PeerConnection(link, session, role)
        try:
            await handler(peer)
        except BaseExceptionGroup as group:
            # A handler's own nursery (a worker's send and receive loops) wraps what one
            # of its tasks raised: the reasons below are about that one exception.
            leaf = _sole_exception(group)
            if leaf is None:
                raise
            raise leaf from None
    except trio.TooSlowError:
        if peer is None:
            log.warning("Closing %s connection: handshake timed out", role)
            await _close(link, CLOSE_POLICY, "handshake timed out")
        else:
            # A send (PeerConnection's deadline) found the peer no longer reading.
            log.warning(
                "Closing %s connection %s: it stopped reading (a send timed out)",
                role,
                peer.remote,
            )
            await _close(link, CLOSE_POLICY, "stopped reading")
    except BadRequest as error:
        # Not a websocket client (the HTTP error is already sent): nothing to tell.
        log.debug("Refused a %s connection's upgrade: %s", role, error)
    except FrameError as error:
        if error.code == CLOSE_TOO_BIG:
            log.warning("Closing %s connection: frame exceeds %d bytes", role, MAX_FRAME_SIZE)
        else:
            log.warning("Closing %s connection: %s", role, error)
        await _close(link, error.code, str(error))
    except ProtocolError as error:
        log.warning("Closing %s connection: %s", role, error)
        await _close(link, CLOSE_POLICY, str(error))
    except ConnectionClosed as closed:
        reason = closed.reason
        if reason is not None and reason.code == CLOSE_TOO_BIG:
            log.warning("Closing %s connection: frame exceeds %d bytes", role, MAX_FRAME_SIZE)
        else:
            log.debug("%s connection closed: %s", role, reason)
    except LinkClosed as closed:
        log.debug("%s connection closed: %s", role, closed)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
        log.debug("%s connection broken: %s", role, error)
    except Exception as error:
        # A bug in one handler must not take the server down; log it loudly, with
        # the reason (the traceback follows under --debug).
        log.error(
            "Error in %s connection handler: %s",
            role,
            describe_exception(error),
            exc_info=error,
        )
        await _close(link, 1011, "internal error")
    else:
        if isinstance(link, lean.LeanLink):
            await _close(link, 1000, "")
    finally:
        if isinstance(link, lean.LeanLink):
            link.close_now()


async def serve_role(
    role: str,
    key: bytes | None,
    sock: socket.socket,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `role` peers on an already bound and listening socket."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    if role == "worker":

        async def on_stream(stream: trio.SocketStream) -> None:
            await _serve_connection(role, key, handler, lambda: lean.accept(stream))

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, on_stream, [listener])
            task_status.started()
        return

    async def on_request(request: WebSocketRequest) -> None:
        async def upgrade() -> FrameLink:
            return WebSocketLink(await request.accept())

        await _serve_connection(role, key, handler, upgrade)

    server = WebSocketServer(
        on_request,
        [listener],
        message_queue_size=MESSAGE_QUEUE_SIZE,
        max_message_size=MAX_FRAME_SIZE,
        receive_buffer_size=256 * 1024,
        connect_timeout=HANDSHAKE_TIMEOUT,
        disconnect_timeout=2,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started()


def _sole_exception(group: BaseExceptionGroup) -> BaseException | None:
    """The one exception inside nested groups of one, or None if there are more."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


async def _close(link: FrameLink | None, code: int, reason: str) -> None:
    if link is None:
        return
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await link.aclose(code, reason[:120])
        except Exception:
            pass

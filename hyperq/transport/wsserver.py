"""Serving one role (client or worker) over trio-websocket, with the sealing handshake.

Each accepted connection gets its own handler task. Whatever a peer does (garbage,
wrong key, oversized frames, silence, dropping mid-frame) ends that one connection with
a logged reason; nothing it sends can reach the rest of the server.
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
from hyperq.transport.codec import MAX_FRAME_SIZE, ProtocolError
from hyperq.transport.peer import PeerConnection
from hyperq.transport.sealing import ServerHandshake, Session

log = logging.getLogger(__name__)

# A peer must finish the websocket upgrade and our handshake within this time; a silent
# peer would otherwise hold a connection slot for trio-websocket's 60 s default.
HANDSHAKE_TIMEOUT = 5.0
# Messages trio-websocket may buffer per connection before it stops reading the socket:
# enough to keep a busy worker's pipeline full, small enough that a peer that floods us
# costs at most this many frames of memory.
MESSAGE_QUEUE_SIZE = 8


Handler = Callable[[PeerConnection], Awaitable[None]]


async def _recv_bytes(ws: WebSocketConnection) -> bytes:
    message = await ws.get_message()
    if not isinstance(message, bytes):
        raise ProtocolError("text message where a binary frame was expected")
    return message


async def _authenticate(ws: WebSocketConnection, role: str, key: bytes | None) -> Session:
    handshake = ServerHandshake(role, key)
    challenge = handshake.receive_hello(await _recv_bytes(ws))
    await ws.send_message(challenge)
    return handshake.receive_proof(await _recv_bytes(ws))


async def serve_role(
    role: str,
    key: bytes | None,
    sock: socket.socket,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `role` peers on an already bound and listening socket."""

    async def on_request(request: WebSocketRequest) -> None:
        ws: WebSocketConnection | None = None
        peer: PeerConnection | None = None
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                ws = await request.accept()
                session = await _authenticate(ws, role, key)
            peer = PeerConnection(ws, session, role)
            await handler(peer)
        except trio.TooSlowError:
            if peer is None:
                log.warning("Closing %s connection: handshake timed out", role)
                await _close(ws, 1008, "handshake timed out")
            else:
                # A send (PeerConnection's deadline) found the peer no longer reading.
                log.warning(
                    "Closing %s connection %s: it stopped reading (a send timed out)",
                    role,
                    peer.remote,
                )
                await _close(ws, 1008, "stopped reading")
        except ProtocolError as error:
            log.warning("Closing %s connection: %s", role, error)
            await _close(ws, 1008, str(error))
        except ConnectionClosed as closed:
            reason = closed.reason
            if reason is not None and reason.code == 1009:
                log.warning("Closing %s connection: frame exceeds %d bytes", role, MAX_FRAME_SIZE)
            else:
                log.debug("%s connection closed: %s", role, reason)
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
            await _close(ws, 1011, "internal error")

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    server = WebSocketServer(
        on_request,
        [listener],
        message_queue_size=MESSAGE_QUEUE_SIZE,
        max_message_size=MAX_FRAME_SIZE,
        receive_buffer_size=256 * 1024,
        connect_timeout=HANDSHAKE_TIMEOUT,
        disconnect_timeout=2,
    )
    await server.run(task_status=task_status)


async def _close(ws: WebSocketConnection | None, code: int, reason: str) -> None:
    if ws is None:
        return
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await ws.aclose(code=code, reason=reason[:120])
        except Exception:
            pass

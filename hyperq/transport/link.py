"""A websocket link straight on a socket: no reader task, no channel, no wsproto.

`LeanLink` is one end of a connection, server or client. `get_message` reads the socket
itself and parses with `wsframes.FrameParser`: everything one read brings stays buffered
for the next calls, so a burst of frames costs one system call. `send_message` frames and
writes at once; only a write the socket cannot take whole waits, and only that wait has
a deadline. The upgrade handshakes (`accept`, `connect`) are here too; `PeerConnection`
(peer.py) seals and opens values over any `FrameLink`, this one or trio-websocket's.

Why: per message, trio-websocket's reader task, its memory channel, its send lock and
wsproto's generic parser were about half the server's CPU on a busy worker link.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

from hyperq.transport.codec import ProtocolError
from hyperq.transport.wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_PONG,
    ClientProtocol,
    Closed,
    FrameParser,
    Ping,
    close_payload,
    frame,
)
from hyperq.transport.wsserverframes import BadRequest, ServerProtocol

RECV_SIZE = 64 * 1024
# Messages `get_message` may return from its buffer without letting other tasks run: a
# peer that keeps the socket full cannot hold the scheduler for longer than this.
FAIR_SHARE = 16
# Pongs and close frames are small; a peer that cannot take one in this time is gone.
CONTROL_TIMEOUT = 5.0
_MASK_POOL = 4096
_T = TypeVar("_T")


class LinkClosed(Exception):
    """The peer closed the connection (`code`, `reason`), or it was lost (code 1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason or f"connection closed with code {code}")
        self.code = code
        self.reason = reason


class FrameLink(Protocol):
    """What PeerConnection needs of a websocket connection."""

    remote: str

    @property
    def send_busy(self) -> bool:
        """A send is under way (blocked): another must wait (`wait_send_idle`) first."""
        ...

    async def wait_send_idle(self) -> None: ...

    async def send_message(self, data: bytes, timeout: float) -> None:
        """Send one binary message; trio.TooSlowError if it cannot be written in `timeout`."""
        ...

    async def get_message(self) -> bytes: ...

    async def aclose(self, code: int, reason: str) -> None: ...


class SendGate:
    """Sends that must not interleave: `send_busy` while one waits for the socket."""

    def __init__(self) -> None:
        self._send_busy = False
        self._send_idle: trio.Event | None = None

    @property
    def send_busy(self) -> bool:
        return self._send_busy

    async def wait_send_idle(self) -> None:
        if self._send_idle is None:
            self._send_idle = trio.Event()
        await self._send_idle.wait()

    def _send_done(self) -> None:
        self._send_busy = False
        if self._send_idle is not None:
            self._send_idle.set()
            self._send_idle = None


def _remote_of(sock: socket.socket) -> str:
    try:
        address = sock.getpeername()
    except OSError:
        return "?:?"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


def _raw_socket(stream: trio.SocketStream) -> socket.socket:
    """The stream's socket as a plain non-blocking one, which the link drives itself."""
    sock = socket.socket(fileno=stream.socket.detach())
    sock.setblocking(False)
    return sock


class LeanLink(SendGate):
    """One end of a websocket connection over a non-blocking socket."""

    def __init__(self, sock: socket.socket, parser: FrameParser, *, client: bool) -> None:
        super().__init__()
        self._sock = sock
        self._parser = parser
        self._client = client
        self.remote = _remote_of(sock)
        self._unyielded = 0
        self._masks = b""
        self._mask_at = 0
        self._broken = False  # a frame was cut short (or the socket failed): no more sends
        self._close_sent = False
        self._peer_closed = trio.Event()  # the peer's close frame (or EOF) was read
        self._receiving = False
        self._sock_closed = False

    # --- sending -----------------------------------------------------------------------
    def _mask_key(self) -> bytes:
        # Masking keys from the system's random source, drawn 1,024 at a time: one
        # getrandom call per message was a measurable part of a small message's cost.
        at = self._mask_at
        if at >= len(self._masks):
            self._masks = os.urandom(_MASK_POOL)
            at = 0
        self._mask_at = at + 4
        return self._masks[at : at + 4]

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        return frame(opcode, payload, self._mask_key() if self._client else None)

    async def send_message(self, data: bytes, timeout: float) -> None:
        await self._send_bytes(self._frame(OP_BINARY, data), timeout)

    async def _send_bytes(self, data: bytes, timeout: float) -> None:
        if self._broken or self._sock_closed:
            raise trio.ClosedResourceError("the connection is closed")
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self._broken = True
            raise trio.BrokenResourceError(str(error)) from error
        if sent < len(data):
            await self._send_rest(data, sent, timeout)

    async def _send_rest(self, data: bytes, sent: int, timeout: float) -> None:
        """The socket took only part of a frame: wait for room, under one deadline."""
        self._send_busy = True
        try:
            view = memoryview(data)
            with trio.fail_after(timeout):
                while sent < len(data):
                    await trio.lowlevel.wait_writable(self._sock)
                    try:
                        sent += self._sock.send(view[sent:])
                    except BlockingIOError:
                        pass
        except OSError as error:
            self._broken = True
            raise trio.BrokenResourceError(str(error)) from error
        except BaseException:
            # Cut short mid-frame (deadline, cancellation): the stream cannot carry
            # another frame.
            self._broken = True
            raise
        finally:
            self._send_done()

    async def _send_control(self, opcode: int, payload: bytes) -> None:
        while self._send_busy:
            await self.wait_send_idle()
        await self._send_bytes(self._frame(opcode, payload), CONTROL_TIMEOUT)

    # --- receiving ---------------------------------------------------------------------
    async def get_message(self) -> bytes:
        """The next binary message. LinkClosed when the peer closes (or vanishes),
        ProtocolError (FrameError: with a close code) for a frame we refuse."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._receiving = True
        try:
            while True:
                event = self._parser.next_event()
                if event is None:
                    await self._fill()
                elif type(event) is bytes:
                    self._unyielded += 1
                    if self._unyielded >= FAIR_SHARE:
                        self._unyielded = 0
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return event
                elif isinstance(event, Ping):
                    if not self._close_sent:
                        await self._pong(event.payload)
                else:
                    assert isinstance(event, Closed)
                    await self._peer_close(event)
        finally:
            self._receiving = False

    async def _pong(self, payload: bytes) -> None:
        try:
            await self._send_control(OP_PONG, payload)
        except trio.TooSlowError:
            # A peer that pings but does not read the answer: the receiver's callers
            # know a broken link, not a send deadline.
            raise trio.BrokenResourceError("the peer does not read our pong") from None

    async def _fill(self) -> None:
        """More bytes into the parser: at once if the socket has them, else when it does."""
        sock = self._sock
        while True:
            if self._sock_closed:
                raise trio.ClosedResourceError("the connection is closed")
            try:
                # A fresh buffer per read rather than one kept per link: the same cost,
                # and 64 idle links do not hold 64 of them.
                data = sock.recv(RECV_SIZE)
                break
            except BlockingIOError:
                self._unyielded = 0
                await trio.lowlevel.wait_readable(sock)
            except OSError as error:
                self._lost()
                raise trio.BrokenResourceError(str(error)) from error
        if not data:
            self._lost()
            raise LinkClosed(1006, "connection lost")
        self._parser.buffer += data

    def _lost(self) -> None:
        self._peer_closed.set()
        if self._client:
            # Nobody else closes a lost worker link's socket (a reconnect makes a new
            # one); the server's is closed when its handler ends.
            self.close_now()

    async def _peer_close(self, event: Closed) -> None:
        self._peer_closed.set()
        if not self._close_sent and not self._broken:
            # The close handshake: answer with the same code (RFC 6455 §5.5.1).
            self._close_sent = True
            try:
                await self._send_control(OP_CLOSE, close_payload(event.code))
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass
        if self._client:
            # Both close frames are through; nobody else will close a worker's socket
            # (the server's is closed when its handler ends).
            self.close_now()
        raise LinkClosed(event.code, event.reason)

    # --- closing -----------------------------------------------------------------------
    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and wait for the peer's (the caller bounds the wait), then
        close the socket. Safe to call more than once and after any failure."""
        if self._sock_closed:
            return
        try:
            if not self._close_sent and not self._broken:
                self._close_sent = True
                await self._send_control(OP_CLOSE, close_payload(code, reason))
            if not self._broken:
                # Wait for the peer's close frame, read by the receiving task if there
                # is one: closing with unread data would reset the connection, and the
                # peer could lose what we sent last.
                if self._receiving:
                    await self._peer_closed.wait()
                else:
                    while not self._peer_closed.is_set():
                        await self.get_message()
        except (
            LinkClosed,
            ProtocolError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
        ):
            pass
        finally:
            self.close_now()

    def close_now(self) -> None:
        """Close the socket without a word; a task waiting on it gets ClosedResourceError."""
        if not self._sock_closed:
            self._sock_closed = True
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()


async def _read_until(sock: socket.socket, feed: Callable[[bytes], _T | None], lost: str) -> _T:
    """Read the socket into `feed` until it gives an answer (the upgrade is through)."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            continue
        if not data:
            raise LinkClosed(1006, lost)
        answer = feed(data)
        if answer is not None:
            return answer


async def accept(stream: trio.SocketStream) -> LeanLink:
    """The server's end of a new connection: the upgrade, answered 101 (or refused with
    an HTTP error and BadRequest). The caller bounds the time."""
    sock = _raw_socket(stream)
    protocol = ServerProtocol()
    link = LeanLink(sock, protocol.parser, client=False)

    def feed(data: bytes) -> bytes | None:
        try:
            return protocol.receive_request(data)
        except BadRequest as error:
            try:
                sock.send(error.response)
            except OSError:
                pass
            raise

    try:
        answer = await _read_until(sock, feed, "connection lost during the upgrade")
        await link._send_bytes(answer, CONTROL_TIMEOUT)
        return link
    except BaseException:
        link.close_now()
        raise


async def connect(host: str, port: int, resource: str) -> LeanLink:
    """The client's end: a TCP connection and the upgrade. The caller bounds the time."""
    stream = await trio.open_tcp_stream(host, port)
    sock = _raw_socket(stream)
    protocol = ClientProtocol(host, port, resource)
    link = LeanLink(sock, protocol.parser, client=True)

    def feed(data: bytes) -> bool | None:
        try:
            return True if protocol.receive_answer(data) else None
        except ProtocolError as error:
            # Refused like a connection: the caller retries or reports it so.
            raise LinkClosed(1006, str(error)) from None

    try:
        await link._send_bytes(protocol.handshake_request(), CONTROL_TIMEOUT)
        await _read_until(sock, feed, "connection closed during the upgrade")
        return link
    except BaseException:
        link.close_now()
        raise

"""A minimal sans-IO websocket *client* protocol (RFC 6455), for short CLI commands.

Why not wsproto here: importing it costs a short-lived `hq` command about 40 ms (its
HTTP layer and a 64K-entry masking table built at import), a quarter of the whole
budget of a client command. The server side keeps trio-websocket (wsproto). This covers
only what our client needs: the upgrade handshake, masked binary frames out, binary,
continuation, ping and close frames in. It takes and returns bytes; no I/O here.
"""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass

from hyperq.transport.codec import MAX_FRAME_SIZE, ProtocolError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
MAX_HANDSHAKE = 64 * 1024


@dataclass(frozen=True)
class Message:
    data: bytes


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Closed:
    code: int
    reason: str


Event = Message | Ping | Closed


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def _accept_for(key: bytes) -> bytes:
    try:
        # CPython's own SHA-1, the one hashlib falls back to: importing hashlib (and
        # OpenSSL's bindings with it) is ~12M instructions of a short CLI command.
        from _sha1 import sha1
    except ImportError:  # pragma: no cover - another interpreter
        from hashlib import sha1

    return base64.b64encode(sha1(key + _GUID).digest())


class ClientProtocol:
    def __init__(self, host: str, port: int, resource: str) -> None:
        self._key = base64.b64encode(os.urandom(16))
        self._request = (
            f"GET {resource} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._buffer = bytearray()
        self.accepted = False
        self._fragments: list[bytes] = []
        self._fragment_size = 0
        self.closed = False

    def handshake_request(self) -> bytes:
        return self._request

    def feed(self, data: bytes) -> list[Event]:
        """Bytes from the server in; events out (the handshake answer first)."""
        self._buffer += data
        events: list[Event] = []
        if not self.accepted:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HANDSHAKE:
                    raise ProtocolError("websocket handshake answer too long")
                return events
            self._check_answer(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
            self.accepted = True
        while not self.closed:
            event = self._next_frame()
            if event is None:
                break
            if event is not True:
                events.append(event)
        return events

    def _check_answer(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"101":
            raise ProtocolError(f"websocket upgrade refused: {lines[0].decode(errors='replace')}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"sec-websocket-accept") != _accept_for(self._key):
            raise ProtocolError("websocket upgrade answered with a wrong accept key")

    def _next_frame(self) -> Event | bool | None:
        """One parsed frame: an event, True for a frame that makes none, None for more data."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin, opcode = first & 0x80, first & 0x0F
        if first & 0x70:
            raise ProtocolError("websocket frame with reserved bits set")
        if second & 0x80:
            raise ProtocolError("masked frame from the server")
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = struct.unpack_from(">H", buf, 2)[0]
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = struct.unpack_from(">Q", buf, 2)[0]
            offset = 10
        if length > MAX_FRAME_SIZE:
            raise ProtocolError("websocket frame exceeds the size limit")
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        if opcode == OP_CLOSE:
            self.closed = True
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
            return Closed(code, payload[2:].decode(errors="replace"))
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return True
        if opcode == OP_TEXT:
            raise ProtocolError("unexpected text message")
        if opcode not in (OP_BINARY, OP_CONTINUATION):
            raise ProtocolError(f"unknown websocket opcode {opcode}")
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if self._fragment_size > MAX_FRAME_SIZE:
            raise ProtocolError("message exceeds the size limit")
        if not fin:
            return True
        data = b"".join(self._fragments)
        self._fragments.clear()
        self._fragment_size = 0
        return Message(data)

    @staticmethod
    def frame(opcode: int, payload: bytes) -> bytes:
        """A masked, final client frame."""
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        key = os.urandom(4)
        return head + key + _mask(payload, key)

    def send_binary(self, payload: bytes) -> bytes:
        return self.frame(OP_BINARY, payload)

    def pong(self, payload: bytes) -> bytes:
        return self.frame(OP_PONG, payload)

    def close(self, code: int = 1000) -> bytes:
        return self.frame(OP_CLOSE, struct.pack(">H", code))

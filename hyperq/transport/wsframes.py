"""A minimal sans-IO websocket protocol (RFC 6455): frames both ways, the client's upgrade.

Why not wsproto: importing it costs a short-lived `hq` command about 40 ms (its HTTP
layer and a 64K-entry masking table built at import), a quarter of the whole budget of a
client command; and on the worker link its generic machinery was a large part of the
cost of each message. `FrameParser` turns the bytes of one direction into messages and
control events; `ClientProtocol` adds the client's upgrade handshake (the server's is in
`wsserverframes`). Only what our peers need: binary messages (fragmented or not), ping,
pong and close. It takes and returns bytes; no I/O here.
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
# Close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_NO_STATUS, CLOSE_POLICY, CLOSE_TOO_BIG = (
    1000,
    1002,
    1005,
    1008,
    1009,
)
# Payloads up to this size are copied out of the buffer by slicing; larger ones through
# a memoryview, which saves one copy of a frame that may be megabytes.
_SMALL = 4096


class FrameError(ProtocolError):
    """A frame the protocol forbids; the connection is closed with `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


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
    # One XOR of two big integers: linear, in C, whatever the size (frames may be MBs).
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


def frame(opcode: int, payload: bytes, mask_key: bytes | None = None) -> bytes:
    """One final frame; masked (as a client must) when `mask_key` is given."""
    n = len(payload)
    bit = 0x80 if mask_key is not None else 0
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, bit | n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, bit | 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, bit | 127, n)
    if mask_key is None:
        return head + payload
    return head + mask_key + _mask(payload, mask_key)


def close_payload(code: int, reason: str = "") -> bytes:
    if code == CLOSE_NO_STATUS:
        return b""
    return struct.pack(">H", code) + reason.encode()[:120]


class FrameParser:
    """The frames of one direction in; whole messages (bytes) and control events out.

    `masked`: the peer is a client, whose frames must be masked (RFC 6455 §5.1);
    otherwise it is a server, whose frames must not be. A message larger than
    MAX_FRAME_SIZE is refused from its frame header, before its payload is buffered.
    """

    def __init__(self, masked: bool) -> None:
        self.buffer = bytearray()
        self._mask_bit = 0x80 if masked else 0
        self._fragments: list[bytes] = []
        self._fragment_size = 0
        self.closed = False

    def next_event(self) -> bytes | Ping | Closed | None:
        """The next message or control event; None when more bytes are needed.

        Raises FrameError (with the close code to answer) for a frame we refuse."""
        buf = self.buffer
        while not self.closed:
            available = len(buf)
            if available < 2:
                return None
            first = buf[0]
            second = buf[1]
            if first & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "websocket frame with reserved bits set")
            if second & 0x80 != self._mask_bit:
                raise FrameError(
                    CLOSE_PROTOCOL_ERROR,
                    "unmasked frame from a client"
                    if self._mask_bit
                    else "masked frame from the server",
                )
            opcode = first & 0x0F
            length = second & 0x7F
            offset = 2
            if length == 126:
                if available < 4:
                    return None
                length = (buf[2] << 8) | buf[3]
                offset = 4
            elif length == 127:
                if available < 10:
                    return None
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if opcode & 0x08:
                if not first & 0x80 or length > 125:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "fragmented or long control frame")
            elif length > MAX_FRAME_SIZE - self._fragment_size:
                raise FrameError(CLOSE_TOO_BIG, "websocket message exceeds the size limit")
            if self._mask_bit:
                end = offset + 4 + length
                if available < end:
                    return None
                key = bytes(buf[offset : offset + 4])
                payload = _mask(bytes(buf[offset + 4 : end]), key)
            else:
                end = offset + length
                if available < end:
                    return None
                if length <= _SMALL:
                    payload = bytes(buf[offset:end])
                else:
                    with memoryview(buf) as view:
                        payload = bytes(view[offset:end])
            del buf[:end]
            if opcode == OP_BINARY or opcode == OP_CONTINUATION:
                if (opcode == OP_CONTINUATION) != bool(self._fragments):
                    raise FrameError(
                        CLOSE_PROTOCOL_ERROR,
                        "continuation frame outside a message"
                        if opcode == OP_CONTINUATION
                        else "new message inside a fragmented one",
                    )
                if first & 0x80 and not self._fragments:
                    return payload
                self._fragments.append(payload)
                self._fragment_size += length
                if not first & 0x80:
                    continue
                data = b"".join(self._fragments)
                self._fragments = []
                self._fragment_size = 0
                return data
            if opcode == OP_PING:
                return Ping(payload)
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                self.closed = True
                if len(payload) == 1:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
                code = struct.unpack(">H", payload[:2])[0] if payload else CLOSE_NO_STATUS
                return Closed(code, payload[2:].decode(errors="replace"))
            if opcode == OP_TEXT:
                # Our peers send binary CBOR only; said as before the link was ours.
                raise ProtocolError("text message where a binary frame was expected")
            raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown websocket opcode {opcode}")
        return None


class ClientProtocol:
    """The client's end: the upgrade request and its answer, then masked frames out."""

    def __init__(self, host: str, port: int, resource: str) -> None:
        self._key = base64.b64encode(os.urandom(16))
        self._request = (
            f"GET {resource} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.parser = FrameParser(masked=False)
        self.accepted = False

    @property
    def closed(self) -> bool:
        return self.parser.closed

    def handshake_request(self) -> bytes:
        return self._request

    def receive_answer(self, data: bytes) -> bool:
        """Bytes of the upgrade answer in; True once it is complete and accepted (bytes
        after it stay in `parser.buffer`)."""
        buffer = self.parser.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HANDSHAKE:
                raise ProtocolError("websocket handshake answer too long")
            return False
        self._check_answer(bytes(buffer[:end]))
        del buffer[: end + 4]
        self.accepted = True
        return True

    def feed(self, data: bytes) -> list[Event]:
        """Bytes from the server in; events out (the handshake answer first)."""
        events: list[Event] = []
        if not self.accepted:
            if not self.receive_answer(data):
                return events
        else:
            self.parser.buffer += data
        while True:
            event = self.parser.next_event()
            if event is None:
                return events
            events.append(Message(event) if isinstance(event, bytes) else event)

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

    @staticmethod
    def frame(opcode: int, payload: bytes) -> bytes:
        """A masked, final client frame."""
        return frame(opcode, payload, os.urandom(4))

    def send_binary(self, payload: bytes) -> bytes:
        return self.frame(OP_BINARY, payload)

    def pong(self, payload: bytes) -> bytes:
        return self.frame(OP_PONG, payload)

    def close(self, code: int = CLOSE_NORMAL) -> bytes:
        return self.frame(OP_CLOSE, struct.pack(">H", code))

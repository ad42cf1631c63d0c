"""The server's end of the websocket upgrade (RFC 6455 §4.2), as a sans-IO core.

`ServerProtocol` takes the bytes of the HTTP upgrade request and answers 101 with the
accept hash, or refuses with 400 (426 for a websocket version other than 13); after it,
its `parser` (wsframes.FrameParser) takes the client's masked frames. The request is
bounded (MAX_HANDSHAKE), so a peer cannot make us buffer without limit. No I/O here.
"""

from __future__ import annotations

import base64
import binascii

from hyperq.transport.codec import ProtocolError
from hyperq.transport.wsframes import MAX_HANDSHAKE, FrameParser, _accept_for


class BadRequest(ProtocolError):
    """An upgrade request we refuse; `response` is the HTTP answer to send before closing."""

    def __init__(self, message: str, status: str = "400 Bad Request", extra: str = "") -> None:
        super().__init__(message)
        body = message.encode()
        self.response = (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n"
        ).encode() + body


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def check_request(head: bytes) -> bytes:
    """The Sec-WebSocket-Key of a valid upgrade request (its head, without the blank
    line); BadRequest otherwise."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("request is not ASCII") from None
    request_line, *lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or not parts[1]:
        raise BadRequest("malformed request line")
    if parts[0] != "GET":
        raise BadRequest("the upgrade must be a GET")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest("malformed header line")
        name = name.lower()
        value = value.strip()
        # Repeated headers are one comma-separated list (RFC 9110 §5.3).
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if "host" not in headers:
        raise BadRequest("no Host header")
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise BadRequest("not a websocket upgrade (Upgrade: websocket)")
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise BadRequest("not a websocket upgrade (Connection: Upgrade)")
    if headers.get("sec-websocket-version") != "13":
        raise BadRequest(
            "unsupported websocket version", "426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n"
        )
    key = headers.get("sec-websocket-key", "")
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise BadRequest("missing or malformed Sec-WebSocket-Key")
    return key.encode()


class ServerProtocol:
    """One accepted TCP connection: the upgrade request, then the client's frames."""

    def __init__(self) -> None:
        self.parser = FrameParser(masked=True)
        self.accepted = False

    def receive_request(self, data: bytes) -> bytes | None:
        """Bytes of the upgrade request in; the 101 answer once it is complete (bytes after
        it stay in `parser.buffer`), None while it is not. BadRequest when refused."""
        buffer = self.parser.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HANDSHAKE:
                raise BadRequest("request too long")
            return None
        if end > MAX_HANDSHAKE:
            raise BadRequest("request too long")
        key = check_request(bytes(buffer[:end]))
        del buffer[: end + 4]
        self.accepted = True
        return (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {_accept_for(key).decode()}\r\n\r\n"
        ).encode()

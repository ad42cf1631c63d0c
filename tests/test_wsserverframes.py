"""The server side of our websocket protocol (upgrade and client frames) against wsproto's
client, and our frame parser fed at arbitrary byte boundaries."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
)

from hyperq.transport.codec import MAX_FRAME_SIZE, ProtocolError
from hyperq.transport.wsframes import (
    MAX_HANDSHAKE,
    ClientProtocol,
    Closed,
    FrameError,
    FrameParser,
    frame,
)
from hyperq.transport.wsframes import Ping as OurPing
from hyperq.transport.wsserverframes import BadRequest, ServerProtocol

GOOD = (
    b"GET /worker HTTP/1.1\r\nHost: h:1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade"
    b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def connected() -> tuple[ServerProtocol, WSConnection]:
    """Our server protocol after wsproto's client upgraded."""
    client = WSConnection(ConnectionType.CLIENT)
    server = ServerProtocol()
    answer = server.receive_request(client.send(Request(host="h", target="/worker")))
    assert answer is not None and answer.startswith(b"HTTP/1.1 101 ")
    client.receive_data(answer)
    assert isinstance(next(iter(client.events())), AcceptConnection)
    return server, client


def events_of(parser: FrameParser) -> list[object]:
    events: list[object] = []
    while (event := parser.next_event()) is not None:
        events.append(event)
    return events


def test_upgrade_answer_has_the_rfc_accept_hash() -> None:
    server = ServerProtocol()
    answer = server.receive_request(GOOD)
    assert answer is not None
    # RFC 6455 §1.3's own example key and accept value.
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert server.accepted


def test_upgrade_request_byte_by_byte_and_frames_right_after() -> None:
    # A slow client (one byte per read) and a request whose first frame came with it.
    client = ClientProtocol("h", 1, "/worker")
    server = ServerProtocol()
    data = client.handshake_request() + client.send_binary(b"first")
    answer = None
    for i in range(len(client.handshake_request())):
        assert answer is None
        answer = server.receive_request(data[i : i + 1])
    assert answer is not None
    assert client.feed(answer) == []
    server.parser.buffer += data[len(client.handshake_request()) :]
    assert events_of(server.parser) == [b"first"]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (GOOD.replace(b"GET", b"POST"), b"400"),
        (GOOD.replace(b"HTTP/1.1", b"HTTP/1.0"), b"400"),
        (GOOD.replace(b"Upgrade: websocket\r\n", b""), b"400"),
        (GOOD.replace(b"Upgrade: websocket", b"Upgrade: h2c"), b"400"),
        (GOOD.replace(b"keep-alive, Upgrade", b"keep-alive"), b"400"),
        (GOOD.replace(b"Version: 13", b"Version: 8"), b"426"),
        (GOOD.replace(b"Sec-WebSocket-Version: 13\r\n", b""), b"426"),
        (GOOD.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short"), b"400"),
        (GOOD.replace(b"Sec-WebSocket-Key", b"X-Key"), b"400"),
        (GOOD.replace(b"Host: h:1\r\n", b""), b"400"),
        (GOOD.replace(b"Host: h:1", b"Host h:1"), b"400"),
        (GOOD.replace(b"Host: h:1", b" folded"), b"400"),
        (GOOD.replace(b"/worker", "/wörker".encode()), b"400"),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"400"),
    ],
)
def test_bad_upgrade_requests_are_refused(request_bytes: bytes, status: bytes) -> None:
    server = ServerProtocol()
    with pytest.raises(BadRequest) as refused:
        server.receive_request(request_bytes)
    assert refused.value.response.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"\r\nConnection: close\r\n" in refused.value.response
    assert not server.accepted


def test_an_endless_request_is_refused_once_it_exceeds_the_limit() -> None:
    server = ServerProtocol()
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    with pytest.raises(BadRequest, match="too long"):
        for _ in range(MAX_HANDSHAKE // len(line) + 2):
            server.receive_request(line)
    # Whole but over the limit.
    with pytest.raises(BadRequest, match="too long"):
        ServerProtocol().receive_request(GOOD[:-2] + line * 70 + b"\r\n")


def test_messages_pings_and_close_from_wsproto() -> None:
    server, client = connected()
    data = client.send(BytesMessage(data=b"abc", message_finished=False))
    data += client.send(Ping(payload=b"p"))  # control frames may come between fragments
    data += client.send(BytesMessage(data=b"def", message_finished=True))
    data += client.send(BytesMessage(data=b""))
    data += client.send(CloseConnection(code=1001, reason="going"))
    server.parser.buffer += data
    assert events_of(server.parser) == [OurPing(b"p"), b"abcdef", b"", Closed(1001, "going")]
    assert server.parser.closed


def test_large_masked_payload_is_unmasked_whole() -> None:
    server, client = connected()
    payload = os.urandom(3 * 1024 * 1024 + 3)
    server.parser.buffer += client.send(BytesMessage(data=payload))
    assert events_of(server.parser) == [payload]


def test_close_without_status_and_frames_after_close_are_ignored() -> None:
    server, _client = connected()
    server.parser.buffer += frame(8, b"", b"abcd") + frame(2, b"late", b"abcd")
    assert events_of(server.parser) == [Closed(1005, "")]


def masked(first: int, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return bytes([first, 0x80 | n]) + b"\0\0\0\0" + payload


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(2, b"unmasked"), 1002),  # clients must mask
        (masked(0xC2, b"x"), 1002),  # RSV1 (no extension was negotiated)
        (masked(0x83, b"x"), 1002),  # reserved data opcode
        (masked(0x8B, b"x"), 1002),  # reserved control opcode
        (masked(0x09, b"x"), 1002),  # fragmented ping
        (masked(0x88, b"\x03"), 1002),  # close with a 1-byte payload
        (masked(0x80, b"x"), 1002),  # continuation with nothing to continue
        (masked(0x02, b"x") + masked(0x82, b"y"), 1002),  # a new message inside one
        (b"\x89\xfe\x00\x7e" + b"\0" * 130, 1002),  # control frame over 125 bytes
        (b"\x82\xff" + (MAX_FRAME_SIZE + 1).to_bytes(8, "big"), 1009),
        (b"\x82\xff" + (1 << 63).to_bytes(8, "big"), 1009),
    ],
)
def test_frames_the_protocol_forbids(data: bytes, code: int) -> None:
    server, _client = connected()
    server.parser.buffer += data
    with pytest.raises(FrameError) as refused:
        events_of(server.parser)
    assert refused.value.code == code


def test_too_big_is_refused_from_the_header_and_across_fragments() -> None:
    # Refused before the payload is there: nothing of it need be buffered.
    server, _client = connected()
    server.parser.buffer += b"\x82\xff" + (MAX_FRAME_SIZE + 1).to_bytes(8, "big")
    with pytest.raises(FrameError, match="size limit"):
        server.parser.next_event()
    server, client = connected()
    half = b"\0" * (MAX_FRAME_SIZE // 2 + 1)
    server.parser.buffer += client.send(BytesMessage(data=half, message_finished=False))
    assert server.parser.next_event() is None
    server.parser.buffer += client.send(BytesMessage(data=half, message_finished=True))
    with pytest.raises(FrameError) as refused:
        server.parser.next_event()
    assert refused.value.code == 1009


def test_text_is_refused_as_before() -> None:
    server, _client = connected()
    server.parser.buffer += masked(0x81, b"hi")
    with pytest.raises(ProtocolError, match="text message where a binary frame") as refused:
        server.parser.next_event()
    assert not isinstance(refused.value, FrameError)


wire_events = st.lists(
    st.one_of(
        st.tuples(st.just("message"), st.lists(st.binary(max_size=300), min_size=1, max_size=3)),
        st.tuples(st.just("ping"), st.binary(max_size=125)),
    ),
    max_size=6,
)


def _client_bytes(
    client: WSConnection, items: list[tuple[str, object]]
) -> tuple[bytes, list[object]]:
    data = b""
    expected: list[object] = []
    for kind, value in items:
        if kind == "ping":
            assert isinstance(value, bytes)
            data += client.send(Ping(payload=value))
            expected.append(OurPing(value))
        else:
            assert isinstance(value, list)
            for i, part in enumerate(value):
                data += client.send(BytesMessage(data=part, message_finished=i == len(value) - 1))
            expected.append(b"".join(value))
    return data, expected


@settings(max_examples=200, deadline=None)
@given(items=wire_events, cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
def test_frames_split_anywhere_parse_as_whole(
    items: list[tuple[str, object]], cuts: list[int]
) -> None:
    _server, client = connected()
    data, expected = _client_bytes(client, items)
    whole = FrameParser(masked=True)
    whole.buffer += data
    assert events_of(whole) == expected
    pieces = FrameParser(masked=True)
    got: list[object] = []
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in itertools.pairwise(bounds):
        pieces.buffer += data[start:end]
        got += events_of(pieces)
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=70_000), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=300_000), max_size=8),
)
def test_server_frames_split_anywhere_parse_as_whole(
    payloads: list[bytes], cuts: list[int]
) -> None:
    # The client's direction (unmasked frames, all three length forms).
    data = b"".join(frame(2, p) for p in payloads) + frame(8, struct.pack(">H", 1000) + b"bye")
    expected: list[object] = [*payloads, Closed(1000, "bye")]
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    parser = FrameParser(masked=False)
    got: list[object] = []
    for start, end in itertools.pairwise(bounds):
        parser.buffer += data[start:end]
        got += events_of(parser)
    assert got == expected

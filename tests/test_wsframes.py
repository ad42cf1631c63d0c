"""Our minimal websocket client protocol against wsproto's server side."""

import pytest
from hypothesis import given
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
from hyperq.transport.wsframes import ClientProtocol, Closed, Message
from hyperq.transport.wsframes import Ping as OurPing


def connected() -> tuple[ClientProtocol, WSConnection]:
    client = ClientProtocol("127.0.0.1", 1234, "/client")
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.handshake_request())
    (request,) = list(server.events())
    assert isinstance(request, Request) and request.target == "/client"
    assert client.feed(server.send(AcceptConnection())) == []
    assert client.accepted
    return client, server


@given(st.lists(st.binary(max_size=70_000), max_size=4))
def test_messages_both_ways(payloads: list[bytes]) -> None:
    client, server = connected()
    for payload in payloads:
        server.receive_data(client.send_binary(payload))
        events = list(server.events())
        assert [e.data for e in events if isinstance(e, BytesMessage)] == [payload]
        assert client.feed(server.send(BytesMessage(data=payload))) == [Message(payload)]


def test_fragmented_split_and_ping() -> None:
    client, server = connected()
    data = server.send(BytesMessage(data=b"abc", message_finished=False))
    data += server.send(BytesMessage(data=b"def", message_finished=True))
    data += server.send(Ping(payload=b"p"))
    events = []
    for i in range(len(data)):  # byte by byte: partial frames must wait for more data
        events += client.feed(data[i : i + 1])
    assert events == [Message(b"abcdef"), OurPing(b"p")]
    server.receive_data(client.pong(b"p"))
    assert list(server.events())


def test_close() -> None:
    client, server = connected()
    events = client.feed(server.send(CloseConnection(code=1008, reason="bad")))
    assert events == [Closed(1008, "bad")]
    client2, server2 = connected()
    server2.receive_data(client2.close())
    assert isinstance(next(iter(server2.events())), CloseConnection)


def test_bad_answers_rejected() -> None:
    client = ClientProtocol("h", 1, "/client")
    with pytest.raises(ProtocolError, match="refused"):
        client.feed(b"HTTP/1.1 403 Forbidden\r\n\r\n")
    client = ClientProtocol("h", 1, "/client")
    with pytest.raises(ProtocolError, match="accept key"):
        client.feed(b"HTTP/1.1 101 Switching\r\nSec-WebSocket-Accept: nope\r\n\r\n")
    client, _server = connected()
    with pytest.raises(ProtocolError, match="size limit"):
        client.feed(b"\x82\x7f" + (MAX_FRAME_SIZE + 1).to_bytes(8, "big"))
    client, _server = connected()
    with pytest.raises(ProtocolError, match="masked"):
        client.feed(b"\x82\x81abcd!")

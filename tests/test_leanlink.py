"""The worker port on our lean link, end to end over loopback: trio-websocket (wsproto)
clients still talk to it, our worker client talks to a trio-websocket server, and a bad
peer ends only its own connection, with the close code RFC 6455 asks for."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket, serve_websocket

from hyperq.transport import wsserver
from hyperq.transport.codec import MAX_FRAME_SIZE
from hyperq.transport.link import LinkClosed
from hyperq.transport.peer import PeerConnection
from hyperq.transport.sealing import ClientHandshake, ServerHandshake
from hyperq.transport.wsserver import Handler, serve_role
from hyperq.worker.connection import connect_server

KEY = os.urandom(32)


@contextlib.asynccontextmanager
async def serving(handler: Handler, key: bytes | None = KEY) -> AsyncIterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_role, "worker", key, listener, handler)
            yield listener.getsockname()[1]
            nursery.cancel_scope.cancel()


async def echo(peer: PeerConnection) -> None:
    while True:
        await peer.send(await peer.recv())


async def read_until_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some():
            data += chunk
    return data


def close_code(data: bytes) -> int:
    """The code of the close frame an unmasked server stream ends with."""
    assert data[0] == 0x88, data[:2]
    return int(struct.unpack(">H", data[2:4])[0])


async def test_a_trio_websocket_client_talks_to_the_worker_port() -> None:
    closed = trio.Event()
    seen: list[Any] = []

    async def handler(peer: PeerConnection) -> None:
        try:
            while True:
                value = await peer.recv()
                seen.append(value)
                await peer.send(value)
        except LinkClosed as error:
            seen.append(("closed", error.code))
            raise
        finally:
            closed.set()

    big = os.urandom(3 * 1024 * 1024)
    async with serving(handler) as port:
        with trio.fail_after(30):
            async with open_websocket(
                "127.0.0.1", port, "/worker", use_ssl=False, max_message_size=MAX_FRAME_SIZE
            ) as ws:
                handshake = ClientHandshake("worker", KEY)
                await ws.send_message(handshake.hello())
                challenge = await ws.get_message()
                assert isinstance(challenge, bytes)
                await ws.send_message(handshake.receive_challenge(challenge))
                session = handshake.session
                assert session is not None
                for value in ({"op": "heartbeat"}, big, list(range(1000))):
                    await ws.send_message(session.seal(value))
                    assert session.open(await ws.get_message()) == value
                # wsproto answers the pong itself; ping() returns once it came.
                await ws.ping(b"are you there")
            await closed.wait()
    assert seen[-1] == ("closed", 1000)


async def test_our_worker_client_talks_to_a_trio_websocket_server() -> None:
    async def handler(request: Any) -> None:
        ws = await request.accept()
        handshake = ServerHandshake("worker", KEY)
        await ws.send_message(handshake.receive_hello(await ws.get_message()))
        session = handshake.receive_proof(await ws.get_message())
        await ws.ping(b"p")  # our link answers pings
        while True:
            await ws.send_message(session.seal(session.open(await ws.get_message())))

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_websocket, max_message_size=MAX_FRAME_SIZE),
            handler,
            "127.0.0.1",
            0,
            None,
        )
        port = server.port
        with trio.fail_after(30):
            peer = await connect_server(nursery, "127.0.0.1", port, KEY)
            for value in ({"op": "updates"}, os.urandom(2 * 1024 * 1024)):
                await peer.send(value)
                assert await peer.recv() == value
            await peer.close("done")
        nursery.cancel_scope.cancel()


async def test_lean_worker_client_against_the_lean_server() -> None:
    async with serving(echo) as port, trio.open_nursery() as nursery:
        with trio.fail_after(30):
            peer = await connect_server(nursery, "127.0.0.1", port, KEY)
            for i in range(200):  # many messages: sealing counters stay in step
                await peer.send({"i": i})
            for i in range(200):
                assert await peer.recv() == {"i": i}
            await peer.close("worker stopping")
            with pytest.raises((LinkClosed, trio.ClosedResourceError)):
                await peer.recv()


async def test_bad_upgrade_gets_http_400_and_the_port_keeps_serving() -> None:
    async with serving(echo) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /worker HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await read_until_eof(stream)
        assert answer.startswith(b"HTTP/1.1 400 ")
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(os.urandom(70 * 1024))  # no blank line, over the bound
        assert (await read_until_eof(stream)).startswith(b"HTTP/1.1 400 ")
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                peer = await connect_server(nursery, "127.0.0.1", port, KEY)
                await peer.send("after")
                assert await peer.recv() == "after"
                await peer.close()


async def upgraded(port: int) -> trio.SocketStream:
    """A raw TCP peer past the upgrade (no sealing handshake yet)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        b"GET /worker HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    answer = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some(1)
    assert answer.startswith(b"HTTP/1.1 101 ")
    return stream


def client_frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([first, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload  # a zero key: the payload goes as is


async def test_protocol_violations_close_with_their_codes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="hyperq.transport.wsserver")
    async with serving(echo) as port:
        stream = await upgraded(port)
        await stream.send_all(b"\x82\x05hello")  # unmasked
        assert close_code(await read_until_eof(stream)) == 1002

        stream = await upgraded(port)
        await stream.send_all(b"\x82\xff" + (MAX_FRAME_SIZE + 1).to_bytes(8, "big"))
        assert close_code(await read_until_eof(stream)) == 1009

        stream = await upgraded(port)
        await stream.send_all(client_frame(0x81, b"text"))
        assert close_code(await read_until_eof(stream)) == 1008

        # Ping answered with its payload, then our close echoed with its code.
        stream = await upgraded(port)
        await stream.send_all(client_frame(0x89, b"ping!") + client_frame(0x88, b"\x03\xe9"))
        data = await read_until_eof(stream)
        assert data == b"\x8a\x05ping!" + b"\x88\x02\x03\xe9"
    assert f"frame exceeds {MAX_FRAME_SIZE} bytes" in caplog.text
    assert "unmasked frame from a client" in caplog.text
    assert "text message where a binary frame was expected" in caplog.text
    assert "Traceback" not in caplog.text


async def test_slow_or_silent_upgrade_is_cut_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(wsserver, "HANDSHAKE_TIMEOUT", 0.3)
    caplog.set_level(logging.WARNING, logger="hyperq.transport.wsserver")
    async with serving(echo) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /worker HTTP/1.1\r\nHost: x\r\n")
        assert await read_until_eof(stream) == b""
    assert "Closing worker connection: handshake timed out" in caplog.text


async def test_a_peer_dropping_mid_frame_ends_only_its_connection() -> None:
    ended: list[BaseException] = []
    one_ended = trio.Event()

    async def handler(peer: PeerConnection) -> None:
        try:
            await echo(peer)
        except BaseException as error:
            ended.append(error)
            one_ended.set()
            raise

    async with serving(handler, key=None) as port, trio.open_nursery() as nursery:
        with trio.fail_after(30):
            other = await connect_server(nursery, "127.0.0.1", port, None)
            stream = await upgraded(port)
            hello = ClientHandshake("worker", None)
            await stream.send_all(client_frame(0x82, hello.hello()))
            challenge = await stream.receive_some()  # one short unmasked frame
            assert challenge[0] == 0x82 and challenge[1] == len(challenge) - 2
            await stream.send_all(client_frame(0x82, hello.receive_challenge(challenge[2:])))
            await stream.send_all(client_frame(0x82, b"\0" * 1000)[:500])
            await stream.aclose()
            await one_ended.wait()
            assert isinstance(ended[0], LinkClosed)
            # The other connection goes on.
            await other.send({"still": "here"})
            assert await other.recv() == {"still": "here"}
            await other.close()
        nursery.cancel_scope.cancel()


async def test_an_oversized_message_from_trio_websocket_is_refused_with_1009() -> None:
    async with serving(echo, key=None) as port:
        with trio.fail_after(30):
            async with open_websocket(
                "127.0.0.1", port, "/worker", use_ssl=False, max_message_size=2 * MAX_FRAME_SIZE
            ) as ws:
                handshake = ClientHandshake("worker", None)
                await ws.send_message(handshake.hello())
                await ws.send_message(handshake.receive_challenge(await ws.get_message()))
                with contextlib.suppress(ConnectionClosed):
                    await ws.send_message(b"\0" * (MAX_FRAME_SIZE + 1024))
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason.code == 1009


async def test_concurrent_senders_on_a_full_socket_keep_the_sealing_order() -> None:
    # Big values from two tasks at once fill the socket, so sends wait mid-frame; a
    # second sender must not seal (advance the nonce) or write until the first is done,
    # or the peer's opening fails.
    count = 40
    big = os.urandom(256 * 1024)

    async def two_senders(peer: PeerConnection) -> None:
        async with trio.open_nursery() as nursery:
            for name in ("a", "b"):

                async def send_all(name: str = name) -> None:
                    for i in range(count):
                        await peer.send([name, i, big])

                nursery.start_soon(send_all)
        await peer.recv()  # until the client closes

    async with serving(two_senders) as port, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            peer = await connect_server(nursery, "127.0.0.1", port, KEY)
            got: dict[str, list[int]] = {"a": [], "b": []}
            for _ in range(2 * count):
                name, i, data = await peer.recv()
                assert data == big
                got[name].append(i)
                await trio.sleep(0)
            assert got == {"a": list(range(count)), "b": list(range(count))}
            await peer.close()

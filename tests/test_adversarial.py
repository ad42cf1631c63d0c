"""Hostile peers against a real server: each bad connection is closed with a logged
reason, and a legitimate client keeps working throughout."""

import json
import os

import trio
from trio_websocket import ConnectionClosed, open_websocket

from hyperq.transport.codec import MAX_FRAME_SIZE, encode
from hyperq.transport.sealing import ClientHandshake
from tests.harness import HqEnv, wait_until


async def expect_closed(ws) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            return


def legit_info(hq_env: HqEnv) -> None:
    result = hq_env.run(["--output-mode", "json", "server", "info"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pid"] > 0


async def test_bad_peers_do_not_disturb_the_server(hq_env: HqEnv) -> None:
    process = hq_env.start_server()
    record = json.loads(hq_env.access_path().read_text())
    port = record["client"]["port"]
    worker_port = record["worker"]["port"]
    key = bytes.fromhex(record["client"]["secret_key"])

    async def check_legit() -> None:
        await trio.to_thread.run_sync(legit_info, hq_env)

    with trio.fail_after(60):
        # A silent peer holds its connection open while everything else goes on.
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as silent:
            # Garbage instead of a handshake.
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                await ws.send_message(b"\xff\x00garbage")
                await expect_closed(ws)
            await check_legit()

            # A text message instead of a binary frame.
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                await ws.send_message("hello")
                await expect_closed(ws)

            # The wrong key: the client cannot verify the server and the server refuses the proof.
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                handshake = ClientHandshake("client", os.urandom(32))
                await ws.send_message(handshake.hello())
                challenge = await ws.get_message()
                assert isinstance(challenge, bytes)
                fake_proof = encode({"proof": os.urandom(32)})
                await ws.send_message(fake_proof)
                await expect_closed(ws)
            await check_legit()

            # The right key but the worker role on the client port.
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                await ws.send_message(ClientHandshake("worker", key).hello())
                await expect_closed(ws)

            # A client key on the worker port.
            async with open_websocket("127.0.0.1", worker_port, "/", use_ssl=False) as ws:
                handshake = ClientHandshake("worker", key)
                await ws.send_message(handshake.hello())
                await ws.get_message()
                await ws.send_message(encode({"proof": os.urandom(32)}))
                await expect_closed(ws)

            # An authenticated session whose frame was tampered with.
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                handshake = ClientHandshake("client", key)
                await ws.send_message(handshake.hello())
                challenge = await ws.get_message()
                assert isinstance(challenge, bytes)
                await ws.send_message(handshake.receive_challenge(challenge))
                assert handshake.session is not None
                frame = bytearray(handshake.session.seal({"op": "server-info"}))
                frame[5] ^= 0x40
                await ws.send_message(bytes(frame))
                await expect_closed(ws)

            # An oversized frame.
            async with open_websocket(
                "127.0.0.1", port, "/", use_ssl=False, max_message_size=2 * MAX_FRAME_SIZE
            ) as ws:
                try:
                    await ws.send_message(b"\0" * (MAX_FRAME_SIZE + 1024))
                except ConnectionClosed:
                    pass
                await expect_closed(ws)
            await check_legit()

            # A raw TCP peer that drops mid-frame, and one that sends no HTTP at all.
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            await stream.aclose()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(os.urandom(512))
            await stream.aclose()
            await check_legit()

            # The silent peer is cut off by the handshake deadline; the server stays up.
            await expect_closed(silent)
        await check_legit()

    assert process.poll() is None
    log = hq_env.log_of("server")
    wait_until(lambda: "handshake timed out" in hq_env.log_of("server"), what="timeout log")
    log = hq_env.log_of("server")
    assert "failed to prove" in log
    assert "wrong role" in log
    assert "failed authentication" in log
    assert "exceeds" in log
    assert "Traceback" not in log
    hq_env.stop_server(process)

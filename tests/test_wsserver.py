"""`serve_role` in-process: how a connection that goes wrong after the handshake ends."""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
from collections.abc import AsyncIterator
from typing import cast

import pytest
import trio

from hyperq.server import workerconn
from hyperq.server.core import ServerCore
from hyperq.transport import peer as peer_module
from hyperq.transport import wsclient
from hyperq.transport.codec import encode_unbounded
from hyperq.transport.peer import PeerConnection
from hyperq.transport.wsclient import connect
from hyperq.transport.wsserver import Handler, serve_role


@contextlib.asynccontextmanager
async def serving(role: str, handler: Handler) -> AsyncIterator[int]:
    """`serve_role` for `role` on a free loopback port, which it yields; stopped on exit."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_role, role, None, listener, handler)
            yield listener.getsockname()[1]
            nursery.cancel_scope.cancel()


async def serve_one_worker(handler: Handler) -> None:
    """Serve the worker role, connect one peer that completes the handshake and then
    neither sends nor reads, and return once the server's handler for it has ended
    (`serve_role` logs why in the same step)."""
    handler_ended = trio.Event()

    async def watched(peer: PeerConnection) -> None:
        try:
            await handler(peer)
        finally:
            handler_ended.set()

    async with serving("worker", watched) as port:
        conn = await trio.to_thread.run_sync(connect, "127.0.0.1", port, "worker", None)
        try:
            with trio.fail_after(30):
                await handler_ended.wait()
        finally:
            conn.close()


async def test_peer_that_stops_reading_is_cut_off_with_its_own_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker or client that stops reading makes a send hit its deadline; the log must
    # say so, not blame the handshake (which this peer completed).
    monkeypatch.setattr(peer_module, "SEND_TIMEOUT", 0.5)
    caplog.set_level(logging.WARNING, logger="hyperq.transport.wsserver")

    async def flood(peer: PeerConnection) -> None:
        while True:  # until the socket buffers are full and a send times out
            await peer.send_large(b"x" * (1 << 20))

    await serve_one_worker(flood)

    assert "Closing worker connection 127.0.0.1:" in caplog.text
    assert "it stopped reading (a send timed out)" in caplog.text
    assert "handshake timed out" not in caplog.text


async def test_stopped_reading_inside_a_handlers_nursery_keeps_its_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker's handler sends from a task of its own nursery (workerconn's send loop):
    # the send's deadline reaches the server wrapped in an exception group, and must
    # still be logged as the peer's fault, not as an error of the handler.
    monkeypatch.setattr(peer_module, "SEND_TIMEOUT", 0.5)
    caplog.set_level(logging.WARNING, logger="hyperq.transport.wsserver")

    async def flood_from_a_task(peer: PeerConnection) -> None:
        async def flood() -> None:
            while True:
                await peer.send_large(b"x" * (1 << 20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            nursery.start_soon(trio.sleep_forever)

    await serve_one_worker(flood_from_a_task)

    assert "it stopped reading (a send timed out)" in caplog.text
    assert "Error in worker connection handler" not in caplog.text


async def test_worker_that_never_registers_is_cut_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workerconn, "REGISTER_TIMEOUT", 0.3)
    caplog.set_level(logging.WARNING, logger="hyperq.transport.wsserver")
    # The handler gives up before it would touch the server's state.
    await serve_one_worker(workerconn.WorkerHandler(cast(ServerCore, None)).handle)

    assert "Closing worker connection: no register message within 0.3 s" in caplog.text
    assert "handshake timed out" not in caplog.text
    assert "stopped reading" not in caplog.text


@pytest.mark.parametrize("collector_on", [True, False])
async def test_big_values_arrive_whole_and_leave_the_collector_as_it_was(
    collector_on: bool,
) -> None:
    # A big value is decoded with the cyclic collector paused (wsclient.recv); the client
    # must get it intact and find the collector as it left it.
    big = [{"id": i, "state": "waiting", "workers": [i % 7]} for i in range(100_000)]
    small = {"ok": "after"}

    async def send_both(peer: PeerConnection) -> None:
        await peer.send_large(big)
        await peer.send_large(small)
        await trio.sleep_forever()

    def receive(port: int) -> tuple[object, object, bool]:
        conn = connect("127.0.0.1", port, "client", None)
        try:
            first = conn.recv()
            second = conn.recv()
            return first, second, gc.isenabled()
        finally:
            conn.close()

    was = gc.isenabled()
    (gc.enable if collector_on else gc.disable)()
    try:
        async with serving("client", send_both) as port:
            with trio.fail_after(60):
                first, second, enabled = await trio.to_thread.run_sync(receive, port)
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()
    assert len(encode_unbounded(big)) >= wsclient.BIG_VALUE  # the paused path was taken
    assert first == big
    assert second == small
    assert enabled is collector_on

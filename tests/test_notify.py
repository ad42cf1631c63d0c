"""The worker's notification socket and the task-side client, in one process."""

from __future__ import annotations

import pytest
import trio

from hyperq.common.errors import HqError
from hyperq.common.notify import send_notification
from hyperq.worker.notify import NotifyService


async def test_round_trip_and_revoked_token() -> None:
    got: list[tuple[int, int, int, bytes]] = []

    async def forward(job: int, task: int, instance: int, message: bytes) -> None:
        got.append((job, task, instance, message))

    service = NotifyService(forward)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            access = service.register(3, 7, 1)
            assert access is not None
            token, key = access
            env = {"HQ_ACCESS_KEY": key}
            await trio.to_thread.run_sync(send_notification, b"one\n\x00", env)
            await trio.to_thread.run_sync(send_notification, b"two", env)
            assert got == [(3, 7, 1, b"one\n\x00"), (3, 7, 1, b"two")]
            service.revoke(token)
            with pytest.raises(HqError, match="refused"):
                await trio.to_thread.run_sync(send_notification, b"late", env)
            assert len(got) == 2
            nursery.cancel_scope.cancel()
    assert service.path is None and service.register(1, 1, 0) is None


async def test_unusable_temp_dir_leaves_the_worker_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def forward(job: int, task: int, instance: int, message: bytes) -> None:
        raise AssertionError("nothing can arrive")

    import tempfile

    def no_temp_dir(**_: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", no_temp_dir)
    service = NotifyService(forward)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
    assert service.register(1, 2, 0) is None  # tasks simply get no HQ_ACCESS_KEY

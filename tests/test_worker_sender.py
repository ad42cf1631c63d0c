"""The worker's sender: when a report goes, and what it carries.

A report waits up to the worker's report window for the ends of tasks that still run, goes at once
when nothing else runs or the last running task ends, and waits for the server while a
`reconnect` worker is away. Driven with trio's autojump clock: time moves only when
every task waits, so "sent before the deadline" is exact.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from hyperq.worker import main as worker_main
from hyperq.worker.launcher import FINISHED
from tests.test_worker_resilience import make_runtime


class RecordingPeer:
    def __init__(self, clock: trio.testing.MockClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, list[list[Any]]]] = []

    async def send(self, value: dict[str, Any]) -> None:
        assert value["op"] == "updates"
        self.sent.append((self.clock.current_time(), value["items"]))


def finished(task: int) -> list[Any]:
    return ["finished", 1, task, 0, None, time.monotonic()]


def running(runtime: worker_main.WorkerRuntime, *tasks: int) -> None:
    for task in tasks:
        runtime.task_scopes[(1, task)] = (0, trio.CancelScope())


def sent_ids(items: list[list[Any]]) -> list[int]:
    ids: list[int] = []
    for item in items:
        if item[0] == "finished-ids":
            for first, last, step in item[3]:
                ids.extend(range(first, last + 1, step))
        else:
            ids.append(item[2])
    return ids


def reports(peer: RecordingPeer, since: float) -> list[tuple[float, list[int]]]:
    """Each report sent: when (seconds after `since`, to the µs) and which tasks ended."""
    return [(round(at - since, 6), sent_ids(items)) for at, items in peer.sent]


Body = Callable[[worker_main.WorkerRuntime, RecordingPeer, float], Awaitable[None]]


async def with_sender(tmp_path: Path, clock: trio.testing.MockClock, body: Body) -> None:
    """Run `body(runtime, peer, start)` beside a runtime's sender, its reports recorded
    by `peer`, `start` the clock's time once the sender waits; then stop the sender."""
    async with trio.open_nursery() as nursery:
        runtime = make_runtime(tmp_path, nursery)
        peer = RecordingPeer(clock)
        runtime.peer = peer  # type: ignore[assignment]
        nursery.start_soon(runtime._send_updates)
        await trio.testing.wait_all_tasks_blocked()
        await body(runtime, peer, clock.current_time())
        nursery.cancel_scope.cancel()


async def test_a_lone_task_s_end_goes_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def body(
        runtime: worker_main.WorkerRuntime, peer: RecordingPeer, start: float
    ) -> None:
        runtime._task_ended((1, 0), 0, trio.CancelScope(), FINISHED)
        await trio.testing.wait_all_tasks_blocked()
        assert reports(peer, start) == [(0.0, [0])]

    await with_sender(tmp_path, autojump_clock, body)


async def test_ends_wait_for_the_window_while_others_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def body(
        runtime: worker_main.WorkerRuntime, peer: RecordingPeer, start: float
    ) -> None:
        running(runtime, 0, 1, 2)
        scope = runtime.task_scopes[(1, 0)][1]
        runtime._task_ended((1, 0), 0, scope, FINISHED)
        await trio.sleep(runtime.report_window / 2)
        assert peer.sent == []  # tasks 1 and 2 still run: it waits for them
        runtime._task_ended((1, 1), 0, runtime.task_scopes[(1, 1)][1], FINISHED)
        await trio.sleep(runtime.report_window)
        # One report, when the window opened by the first end closed.
        assert reports(peer, start) == [
            (runtime.report_window, [0, 1])
        ]
        # A later end opens a window of its own (task 2 runs on, and so does 3).
        running(runtime, 3)
        again = autojump_clock.current_time()
        runtime._task_ended((1, 2), 0, runtime.task_scopes[(1, 2)][1], FINISHED)
        await trio.sleep(2 * runtime.report_window)
        assert reports(peer, again)[1:] == [
            (runtime.report_window, [2])
        ]

    await with_sender(tmp_path, autojump_clock, body)


async def test_the_last_running_task_s_end_sends_the_waiting_report_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def body(
        runtime: worker_main.WorkerRuntime, peer: RecordingPeer, start: float
    ) -> None:
        running(runtime, 0, 1)
        runtime._task_ended((1, 0), 0, runtime.task_scopes[(1, 0)][1], FINISHED)
        await trio.testing.wait_all_tasks_blocked()
        assert peer.sent == []
        # A cancelled task's end reports nothing, but nothing runs now: the report goes.
        runtime._task_ended((1, 1), 0, runtime.task_scopes[(1, 1)][1], None)
        await trio.testing.wait_all_tasks_blocked()
        assert reports(peer, start) == [(0.0, [0])]

    await with_sender(tmp_path, autojump_clock, body)


async def test_updates_from_other_tasks_wake_the_sender_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A task's notification (forwarded by a task of its own) wakes the sender as a
    task's end does, and goes at once when nothing runs."""
    async def body(
        runtime: worker_main.WorkerRuntime, peer: RecordingPeer, start: float
    ) -> None:
        await runtime._forward_notification(1, 5, 0, b"hello")
        await trio.testing.wait_all_tasks_blocked()
        assert [(at - start, items[0][:4]) for at, items in peer.sent] == [
            (0.0, ["notify", 1, 5, 0])
        ]

    await with_sender(tmp_path, autojump_clock, body)


async def test_a_reconnect_worker_keeps_its_reports_until_the_server_is_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Away from the server, the kept reports wait (the sender neither sends nor spins);
    what ends meanwhile joins them; the first update after the reconnection sends all."""
    async def body(
        runtime: worker_main.WorkerRuntime, peer: RecordingPeer, start: float
    ) -> None:
        runtime.reconnecting = True
        runtime.connected = False
        runtime._task_ended((1, 0), 0, trio.CancelScope(), FINISHED)
        # Would never return if the sender looped without waiting.
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1.0)
        assert peer.sent == [] and sent_ids(runtime.unsent) == [0]
        runtime._task_ended((1, 1), 0, trio.CancelScope(), FINISHED)
        await trio.testing.wait_all_tasks_blocked()
        assert peer.sent == [] and sent_ids(runtime.unsent) == [0, 1]
        runtime.connected = True
        runtime._task_ended((1, 2), 0, trio.CancelScope(), FINISHED)
        await trio.testing.wait_all_tasks_blocked()
        assert [sent_ids(items) for _at, items in peer.sent] == [[0, 1, 2]]
        assert runtime.unsent == []

    await with_sender(tmp_path, autojump_clock, body)


def test_a_worker_s_report_window_goes_by_its_cpus(tmp_path: Path) -> None:
    """Longer on a worker with at most two CPUs, whose queues the server makes deeper
    by the same rule (hyperq.common.queueing)."""
    import dataclasses

    from hyperq.common import queueing
    from hyperq.common.resources import ResourceDescriptor, ResourceDescriptorItem

    base = make_runtime(tmp_path, None)  # type: ignore[arg-type]
    windows = {}
    for cpus in (1, 2, 3, 8):
        cpu_range = ResourceDescriptorItem.of_range("cpus", 0, cpus - 1)
        config = dataclasses.replace(base.config, resources=ResourceDescriptor((cpu_range,)))
        reply = {"worker": {"id": 1}, "server_uid": "uid1"}
        runtime = worker_main.WorkerRuntime(
            config, None, None, reply, base.guardian, base.load_endpoint  # type: ignore[arg-type]
        )
        windows[cpus] = runtime.report_window
    small, big = 2 * queueing.REPORT_WINDOW, queueing.REPORT_WINDOW
    assert windows == {1: small, 2: small, 3: big, 8: big}
    assert queueing.queue_depth(2) == 2 * queueing.queue_depth(3)

"""Tasks launched with `after` (schemas.After): the worker holds them, prepared, behind
the task they name and starts them on its allocation when it ends; cancels, gives back
and endings drop them unstarted. Driven through the worker's own message handling
(no server), with real task processes: a predecessor blocks until the test creates its
release file, and each task leaves a marker with its CPUs."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from hyperq.transport import schemas
from hyperq.worker import main as worker_main
from hyperq.worker import queued as worker_queued
from hyperq.worker.main import Ending, WorkerRuntime, _on_the_wire
from tests.test_worker_resilience import make_runtime, start_reaper

CPUS = [["cpus", [20000, "compact"], 20000, [["3", 10000], ["5", 10000]]]]
# Writes its CPUs to `<task>.cpus` if `blocks`: waits for the file `release-<task>`, then
# leaves `<task>.done`. The predecessors it names must have left theirs (else it fails).
SCRIPT = (
    'for p in {needs}; do test -e "$p.done" || exit 3; done; '
    'echo "$HQ_CPUS" > "$HQ_TASK_ID.cpus"; '
    '{block}touch "$HQ_TASK_ID.done"'
)
BLOCK = 'while [ ! -e "release-$HQ_TASK_ID" ]; do sleep 0.01; done; '


@pytest.fixture(params=["runners", "reaper"])
def reaper(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "reaper")


@dataclass
class Worker:
    """A runtime with its task nursery and every update it queued, in order."""

    runtime: WorkerRuntime
    tasks: trio.Nursery
    dir: Path
    updates: list[list[Any]] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    def send(self, message: dict[str, Any]) -> bool:
        return self.runtime.handle_message(self.tasks, message)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (the caller's fail_after bounds it) until `condition` holds; checked on
        every update and, for files the tasks write, every 10 ms."""
        while not condition():
            with trio.move_on_after(0.01):
                await self._changed.wait()

    async def update(self, kind: str, task: int) -> list[Any]:
        await self.until(lambda: self.find(kind, task) is not None)
        found = self.find(kind, task)
        assert found is not None
        return found

    def find(self, kind: str, task: int) -> list[Any] | None:
        return next((u for u in self.updates if u[0] == kind and u[2] == task), None)

    def index(self, kind: str, task: int) -> int:
        return next(i for i, u in enumerate(self.updates) if u[0] == kind and u[2] == task)

    def of(self, task: int) -> list[list[Any]]:
        return [u for u in self.updates if u[2] == task]

    def release(self, task: int) -> None:
        (self.dir / f"release-{task}").touch()

    async def started(self, task: int) -> str:
        """The CPUs of `task`, once its process runs."""
        path = self.dir / f"{task}.cpus"
        await self.until(path.exists)
        await self.until(lambda: path.read_text().endswith("\n"))
        return path.read_text().strip()

    def ran(self, task: int) -> bool:
        return (self.dir / f"{task}.cpus").exists()

    async def collect(self) -> None:
        async for update in self.runtime.updates_recv:
            self.updates.append(update)
            self._changed.set()
            self._changed = trio.Event()

    async def settle(self) -> None:
        """Every task has ended and every update is collected (nothing stays behind: a
        released task starts in the same wake-up as its predecessor's end)."""
        runtime = self.runtime
        await self.until(lambda: not runtime.task_scopes)
        if runtime.reaper is not None and runtime.reaper.running:
            runtime.reaper.close_when_idle()


@asynccontextmanager
async def worker(tmp_path: Path, reaper: bool = False) -> AsyncIterator[Worker]:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            runtime = make_runtime(tmp_path, nursery)
            runtime.started_delay = 0.0  # starts are reported at once: their order shows
            async with trio.open_nursery() as tasks:
                runtime.task_nursery = tasks
                if reaper:
                    await start_reaper(runtime, tasks)
                state = Worker(runtime, tasks, tmp_path)
                nursery.start_soon(state.collect)
                yield state
                await state.settle()
            nursery.cancel_scope.cancel()


def program(tmp_path: Path, needs: tuple[int, ...] = (), blocks: bool = False) -> dict[str, Any]:
    script = SCRIPT.format(needs=" ".join(map(str, needs)), block=BLOCK if blocks else "")
    args = ["sh", "-c", script]
    return {
        "program": {"args": args, "cwd": str(tmp_path), "env": {}, "stdout": None, "stderr": None},
        "submit_dir": str(tmp_path),
    }


def rows(descs: dict[str, Any], tasks: list[tuple[int, str, int | None]]) -> dict[str, Any]:
    """`compute-rows` of job 1: (task, description, after), all on the same two CPUs."""
    return {
        "op": "compute-rows",
        "descs": descs,
        "tasks": [[1, task, 0, key, CPUS, None, [], after] for task, key, after in tasks],
    }


def items(descs: dict[str, Any], tasks: list[tuple[int, str, int | None]]) -> dict[str, Any]:
    """The same as `compute` with map items."""
    message = rows(descs, tasks)
    fields = ("job", "task", "instance", "desc", "allocation", "entry", "nodes", "after")
    return {
        "op": "compute",
        "descs": descs,
        "tasks": [dict(zip(fields, row, strict=True)) for row in message["tasks"]],
    }


@pytest.mark.parametrize("form", [rows, items])
async def test_a_task_after_a_running_one_starts_when_it_ends_on_its_cpus(
    tmp_path: Path, reaper: bool, form: Callable[..., dict[str, Any]]
) -> None:
    async with worker(tmp_path, reaper) as w:
        descs = {"a": program(tmp_path, blocks=True), "b": program(tmp_path, needs=(0,))}
        assert w.send(form(descs, [(0, "a", None)])) is False
        cpus = await w.started(0)
        assert cpus == "3,5"
        assert w.send(form(descs, [(1, "b", 0)])) is False
        runtime = w.runtime
        # Held, not running: not in the running tasks, nor the dashboard's CPU view.
        assert list(runtime.queue.tasks) == [(1, 1)]
        assert list(runtime.task_scopes) == [(1, 0)]
        assert list(runtime.task_cpus) == [(1, 0)]
        assert w.of(1) == []
        w.release(0)
        finished = await w.update("finished", 1)
        assert await w.started(1) == cpus
        assert finished[:4] == ["finished", 1, 1, 0]
        assert w.index("finished", 0) < w.index("started", 1) < w.index("finished", 1)
        assert not runtime.queue.tasks and not runtime.queue.behind


async def test_a_task_after_a_task_the_worker_does_not_hold_starts_at_once(
    tmp_path: Path, reaper: bool
) -> None:
    async with worker(tmp_path, reaper) as w:
        descs = {"d": program(tmp_path)}
        assert w.send(rows(descs, [(0, "d", None)])) is False
        await w.update("finished", 0)
        # 0 ended already, 7 was never given, 2 names itself.
        assert w.send(rows(descs, [(1, "d", 0), (2, "d", 7), (3, "d", 3)])) is False
        assert not w.runtime.queue.tasks
        for task in (1, 2, 3):
            assert (await w.update("finished", task))[:4] == ["finished", 1, task, 0]


async def test_a_cancelled_queued_task_never_runs_and_reports_nothing(
    tmp_path: Path, reaper: bool
) -> None:
    async with worker(tmp_path, reaper) as w:
        descs = {"a": program(tmp_path, blocks=True), "b": program(tmp_path)}
        assert w.send(rows(descs, [(0, "a", None), (1, "b", 0)])) is False
        await w.started(0)
        assert w.send({"op": "cancel", "tasks": [[1, 1, 5]]}) is False  # another instance
        assert list(w.runtime.queue.tasks) == [(1, 1)]
        assert w.send({"op": "cancel", "tasks": [[1, 1, 0]]}) is False
        assert not w.runtime.queue.tasks and not w.runtime.queue.behind
        assert (1, 0) in w.runtime.task_scopes  # what it waited for runs on
        w.release(0)
        await w.update("finished", 0)
    # Like a cancelled task that ran: the server knows, so nothing is reported.
    assert w.of(1) == []
    assert not w.ran(1)


async def test_cancelling_the_running_task_starts_the_one_queued_behind_it(
    tmp_path: Path, reaper: bool
) -> None:
    async with worker(tmp_path, reaper) as w:
        descs = {"a": program(tmp_path, blocks=True), "b": program(tmp_path)}
        assert w.send(rows(descs, [(0, "a", None), (1, "b", 0)])) is False
        cpus = await w.started(0)
        assert w.send({"op": "cancel", "tasks": [[1, 0, 0]]}) is False
        await w.update("finished", 1)
        assert await w.started(1) == cpus
    assert [u[0] for u in w.of(0)] == ["started"]  # cancelled: its end goes unreported


async def test_a_chain_runs_in_order_and_survives_a_cancelled_middle(
    tmp_path: Path, reaper: bool
) -> None:
    async with worker(tmp_path, reaper) as w:
        descs = {
            "a": program(tmp_path, blocks=True),
            "b": program(tmp_path, needs=(0,), blocks=True),
            "c": program(tmp_path, needs=(1,)),
            "e": program(tmp_path, needs=(3,)),
        }
        # 0 ← 1 ← 2 runs in order; 3 ← 4 ← 5 loses 4 to a cancel, 5 then waits for 3.
        message = rows(descs, [(0, "a", None), (1, "b", 0), (2, "c", 1)])
        message["tasks"] += rows({}, [(3, "a", None), (4, "b", 3), (5, "e", 4)])["tasks"]
        assert w.send(message) is False
        await w.started(0)
        await w.started(3)
        queue = w.runtime.queue
        assert {key: q.waits_for for key, q in queue.tasks.items()} == {
            (1, 1): (1, 0),
            (1, 2): (1, 1),
            (1, 4): (1, 3),
            (1, 5): (1, 4),
        }
        assert w.send({"op": "cancel", "tasks": [[1, 4, 0]]}) is False
        assert queue.tasks[(1, 5)].waits_for == (1, 3)
        w.release(3)
        await w.update("finished", 5)
        assert not w.ran(4)
        assert w.of(4) == []
        w.release(0)
        await w.started(1)
        assert (1, 2) in queue.tasks  # 1 runs, 2 still waits for it
        w.release(1)
        await w.update("finished", 2)
        assert w.index("finished", 0) < w.index("started", 1)
        assert w.index("finished", 1) < w.index("started", 2)
        assert [w.find("finished", t) is not None for t in (0, 1, 2, 3, 5)] == [True] * 5


async def test_a_task_queued_too_long_is_given_back_and_never_runs(
    tmp_path: Path, reaper: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_queued, "QUEUED_RETURN_AFTER", 0.05)
    async with worker(tmp_path, reaper) as w:
        runtime = w.runtime
        w.tasks.start_soon(runtime.queue.give_back, runtime._give_back)
        descs = {"a": program(tmp_path, blocks=True), "b": program(tmp_path)}
        assert w.send(rows(descs, [(0, "a", None)])) is False
        await w.started(0)
        # Queued into an empty queue: the service sleeping without a deadline wakes.
        assert w.send(rows(descs, [(1, "b", 0), (2, "b", 1)])) is False
        returned = await w.update("returned", 1)
        await w.update("returned", 2)
        assert not runtime.queue.tasks and not runtime.queue.behind
        assert returned[:4] == ["returned", 1, 1, 0]
        w.release(0)
        await w.update("finished", 0)
        w.tasks.cancel_scope.cancel()
    assert [u[0] for u in w.of(1)] == ["returned"]
    assert not w.ran(1) and not w.ran(2)
    # On the wire exactly what schemas.Returned reads.
    wire = _on_the_wire([returned])
    assert wire == [["returned", 1, 1, 0]]
    typed = schemas.convert_message({"op": "updates", "items": wire}, schemas.WORKER_MESSAGES)
    assert typed == schemas.Updates([schemas.Returned(1, 1, 0)])


@pytest.mark.parametrize("kill_tasks", [True, False])
async def test_a_queued_task_never_starts_once_the_worker_ends(
    tmp_path: Path, reaper: bool, kill_tasks: bool
) -> None:
    async with worker(tmp_path, reaper) as w:
        descs = {"a": program(tmp_path, blocks=True), "b": program(tmp_path)}
        assert w.send(rows(descs, [(0, "a", None), (1, "b", 0)])) is False
        await w.started(0)
        if kill_tasks:
            assert w.send({"op": "stop", "reason": "stopped"}) is True
            w.tasks.cancel_scope.cancel()  # what `run` does for an ending that kills
        else:
            # Server lost with `--on-server-lost finish-running`: 0 finishes, 1 never starts.
            w.runtime.end(Ending("server-lost", 1, kill_tasks=False))
            w.release(0)
            await w.update("finished", 0)
        assert not w.runtime.queue.tasks
    assert w.of(1) == []
    assert not w.ran(1)


async def test_runs_with_afters_queue_per_task(tmp_path: Path, reaper: bool) -> None:
    async with worker(tmp_path, reaper) as w:
        descs = {"a": program(tmp_path, blocks=True), "d": program(tmp_path)}
        first = {
            "op": "compute-runs",
            "descs": descs,
            "runs": [[1, 0, 0, "a", "cpus", [10000, "compact"], 10000, 10000, 1, ["0", "1"]]],
        }
        assert w.send(first) is False
        assert [await w.started(t) for t in (0, 1)] == ["0", "1"]
        # 2 after 1, 3 after 0 (on the CPUs of theirs), 4 on a CPU of its own.
        run = [1, 2, 0, "d", "cpus", [10000, "compact"], 10000, 10000, 1, ["1", "0", "2"]]
        second = {"op": "compute-runs", "descs": descs, "runs": [[*run, None, [1, 0, -1]]]}
        assert w.send(second) is False
        queue = w.runtime.queue
        assert {key: q.waits_for for key, q in queue.tasks.items()} == {
            (1, 2): (1, 1),
            (1, 3): (1, 0),
        }
        await w.update("finished", 4)
        assert await w.started(4) == "2"
        w.release(1)
        await w.update("finished", 2)
        assert await w.started(2) == "1"
        assert list(queue.tasks) == [(1, 3)]
        w.release(0)
        await w.update("finished", 3)
        assert await w.started(3) == "0"


@pytest.mark.parametrize("form", ["runs", "rows"])
async def test_a_zero_worker_finishes_tasks_with_afters_at_once(tmp_path: Path, form: str) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            runtime = make_runtime(tmp_path, nursery)
            runtime.zero = True
            descs = {"d": program(tmp_path)}
            if form == "runs":
                run = [1, 0, 0, "d", "cpus", [10000, "compact"], 10000, 10000, 1, ["0"] * 4]
                message = {
                    "op": "compute-runs",
                    "descs": descs,
                    "runs": [[*run, None, [-1, 0, 1, 2]]],
                }
            else:
                message = rows(descs, [(0, "d", None), (1, "d", 0), (2, "d", 1), (3, "d", 2)])
            async with trio.open_nursery() as tasks:
                assert runtime.handle_message(tasks, message) is False
                ends = [await runtime.updates_recv.receive() for _ in range(4)]
            assert not runtime.queue.tasks and not runtime.task_scopes
    assert [u[:4] for u in ends] == [["finished", 1, task, 0] for task in range(4)]


class FakePeer:
    """The worker's end of a connection: `inbox` feeds `recv` (closing it loses the
    server), and what the worker sends is kept."""

    def __init__(self) -> None:
        self.inbox, self._messages = trio.open_memory_channel[Any](16)
        self.sent: list[Any] = []
        self.sent_changed = trio.Event()

    async def recv(self) -> Any:
        try:
            return await self._messages.receive()
        except trio.EndOfChannel:
            raise trio.BrokenResourceError("lost") from None

    async def send(self, message: Any) -> None:
        self.sent.append(message)
        self.sent_changed.set()
        self.sent_changed = trio.Event()

    async def close(self, reason: str = "") -> None:
        pass

    def items(self) -> list[list[Any]]:
        return [i for m in self.sent if m.get("op") == "updates" for i in m["items"]]


class DirGuardian:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def track(self, pid: int, alive: bool) -> None:
        pass

    def remove_at_exit(self, path: str) -> None:
        self.paths.append(path)


async def test_a_reconnecting_worker_drops_its_queued_tasks_before_it_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `run`: the server is lost while 1 waits for 0; the new connection hears
    only of 0, and 1 never starts there (the server places it again)."""
    # Not given back meanwhile: what drops it here must be the loss.
    monkeypatch.setattr(worker_queued, "QUEUED_RETURN_AFTER", 600.0)
    monkeypatch.setattr(worker_main, "RECONNECT_MAX_DELAY", 0.01)
    first, second = FakePeer(), FakePeer()
    resumes: list[dict[str, Any]] = []
    resumed = trio.Event()

    async def fake_register(
        nursery: trio.Nursery, endpoint: Any, config: Any, resume: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        assert resume is not None
        resumes.append(resume)
        resumed.set()
        return second, {"worker": {"id": 1}, "server_uid": "uid1", "drop": []}

    async def endpoint() -> Any:
        return None

    monkeypatch.setattr(worker_main, "register", fake_register)
    guardian = DirGuardian()
    descs = {"a": program(tmp_path, blocks=True), "b": program(tmp_path)}
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                runtime = make_runtime(tmp_path, nursery)
                runtime.peer = first  # type: ignore[assignment]
                runtime.guardian = guardian  # type: ignore[assignment]
                runtime.load_endpoint = endpoint
                runtime.reconnecting = True
                runtime.started_delay = 0.0
                codes: list[int] = []

                async def run() -> None:
                    codes.append(await runtime.run())

                nursery.start_soon(run)
                await first.inbox.send(rows(descs, [(0, "a", None), (1, "b", 0)]))
                w = Worker(runtime, nursery, tmp_path)
                await w.started(0)
                assert list(runtime.queue.tasks) == [(1, 1)]
                await first.inbox.aclose()
                await resumed.wait()
                assert resumes[0]["known"] == [[1, 0, 0]]
                assert not runtime.queue.tasks
                w.release(0)
                while not any(i[0] == "finished" for i in second.items()):
                    await second.sent_changed.wait()
                await second.inbox.send({"op": "stop", "reason": "stopped"})
        assert codes == [0]
        assert [i[2] for i in first.items() + second.items()] == [0, 0]
        assert not w.ran(1)
    finally:
        for path in guardian.paths:
            shutil.rmtree(path, ignore_errors=True)


async def test_a_task_after_one_that_could_not_start_starts_when_that_one_fails(
    tmp_path: Path, reaper: bool
) -> None:
    async with worker(tmp_path, reaper) as w:
        bad = program(tmp_path)
        bad["program"]["args"] = ["/nonexistent/program"]
        descs = {"bad": bad, "d": program(tmp_path)}
        # 0 names no description (fails unprepared), 2 cannot be spawned.
        message = rows(descs, [(0, "missing", None), (1, "d", 0), (2, "bad", None), (3, "d", 2)])
        assert w.send(message) is False
        assert (1, 1) in w.runtime.queue.tasks  # 0 fails in a task of its own
        for task in (1, 3):
            await w.update("finished", task)
        assert (await w.update("failed", 0))[4].startswith("internal error: ValueError")
        assert "was not found" in (await w.update("failed", 2))[4]
        assert w.index("failed", 0) < w.index("started", 1)
        assert w.index("failed", 2) < w.index("started", 3)
        assert not w.runtime.queue.tasks

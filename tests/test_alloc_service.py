"""The allocator service with the batch system replaced by async fakes: scheduling
passes, back-off, auto-pause, status refresh and remove, driven step by step (no
processes, no sockets; trio's clock is the only clock the limiter sees)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import trio

from hyperq.alloc import managers, service
from hyperq.alloc.decisions import Status
from hyperq.alloc.queue import QueueParams
from hyperq.alloc.service import Allocator
from hyperq.common.errors import HqError
from hyperq.server.model.events import Event
from hyperq.server.model.state import Model
from tests.test_model import submit_desc


class Pulse:
    async def wait(self) -> None:
        await trio.sleep_forever()


class FakeHost:
    def __init__(self) -> None:
        self.model = Model()
        self.events: list[Event] = []
        self.changed = Pulse()

    def commit(self, events: Iterable[Event]) -> None:
        for event in events:
            self.events.append(event)
            self.model.apply(event)

    async def durable(self) -> None:
        pass

    def now(self) -> float:
        return 1000.0

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events if e.kind.startswith("autoalloc-")]


class FakeManager:
    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.fail_submit = False
        self.states: dict[str, Status | HqError] = {}

    async def submit(self, manager: str, path: str, cwd: str, timeout: float) -> str:
        if self.fail_submit:
            raise managers.ManagerError("sbatch execution failed: Exit code: 1")
        job = f"{len(self.submitted) + 1}"
        self.submitted.append(job)
        return job

    async def cancel(self, manager: str, job: str, cwd: str, timeout: float) -> None:
        self.cancelled.append(job)

    async def statuses(self, manager: str, allocations: Any, timeout: float) -> dict[str, Any]:
        return {a.id: self.states.get(a.id, Status("queued")) for a in allocations}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeManager:
    manager = FakeManager()
    monkeypatch.setattr(managers, "submit", manager.submit)
    monkeypatch.setattr(managers, "cancel", manager.cancel)
    monkeypatch.setattr(managers, "statuses", manager.statuses)
    return manager


def params(**fields: Any) -> QueueParams:
    values: dict[str, Any] = {
        "manager": "slurm",
        "backlog": 2,
        "max_workers_per_alloc": 1,
        "timelimit": 3600.0,
        "cli_resource_descriptor": {
            "resources": [{"name": "cpus", "kind": "range", "start": 0, "end": 0}],
            "coupling": {"weights": []},
        },
    }
    values.update(fields)
    return QueueParams(**values)


def allocator_with_tasks(tmp_path: Path, tasks: int) -> tuple[Allocator, FakeHost]:
    host = FakeHost()
    for event in host.model.submit(submit_desc([[0, tasks - 1, 1]]), now=1.0):
        host.model.apply(event)
    allocator = Allocator(host, str(tmp_path))
    return allocator, host


async def test_pass_fills_backlog_and_journals(tmp_path: Path, fake: FakeManager) -> None:
    allocator, host = allocator_with_tasks(tmp_path, 10)
    queue_id = await allocator.add_queue(params(), dry_run=False)
    await allocator.scheduling_pass()
    assert fake.submitted == ["1", "2"]
    assert host.kinds() == ["autoalloc-queue-created"] + ["autoalloc-allocation-queued"] * 2
    script = (tmp_path / "autoalloc" / "1" / "002" / "hq-submit.sh").read_text()
    assert "#SBATCH --job-name=hq-1-2" in script
    assert (tmp_path / "autoalloc" / "1" / "001" / "jobid").read_text() == "1"
    # Backlog full: nothing more until one leaves the queue.
    await allocator.scheduling_pass()
    assert fake.submitted == ["1", "2"]
    fake.states["1"] = Status("running", 1.0)
    await allocator.refresh()
    await allocator.scheduling_pass()
    assert fake.submitted == ["1", "2", "3"]
    assert host.model.autoalloc.allocations.keys() == {"1", "2", "3"}
    await allocator.remove_queue(queue_id, force=True)
    assert sorted(fake.cancelled) == ["1", "2", "3"]
    assert host.kinds()[-1] == "autoalloc-queue-removed"


async def test_submit_failure_backs_off_then_pauses(
    tmp_path: Path, fake: FakeManager, autojump_clock: trio.testing.MockClock
) -> None:
    allocator, _host = allocator_with_tasks(tmp_path, 10)
    await allocator.add_queue(params(), dry_run=False)
    fake.fail_submit = True
    await allocator.scheduling_pass()
    queue = allocator.queues[1]
    assert queue.limiter.submit_fails == 1
    # Within the back-off delay no new attempt is made.
    await allocator.scheduling_pass()
    assert queue.limiter.submit_fails == 1
    for _ in range(9):
        await trio.sleep(3600)
        await allocator.scheduling_pass()
    assert queue.limiter.submit_fails == 10 and queue.paused
    # Failed submissions' directories are pruned down to the newest ones.
    await allocator.refresh()
    dirs = sorted(p.name for p in (tmp_path / "autoalloc" / "1").iterdir())
    assert len(dirs) == 10  # all ten kept (limit 20)


async def test_failing_allocations_pause_the_queue(
    tmp_path: Path, fake: FakeManager, autojump_clock: trio.testing.MockClock
) -> None:
    allocator, _host = allocator_with_tasks(tmp_path, 10)
    await allocator.add_queue(params(backlog=1), dry_run=False)
    for round_ in range(3):
        await allocator.scheduling_pass()
        job = fake.submitted[-1]
        assert len(fake.submitted) == round_ + 1
        fake.states[job] = Status("failed", 1.0, 2.0)
        await allocator.refresh()
        await trio.sleep(3600)
    await allocator.scheduling_pass()
    assert allocator.queues[1].paused
    assert len(fake.submitted) == 3
    # Resuming keeps the counters: the next pass pauses it again (original behaviour).
    allocator.resume(1)
    await allocator.scheduling_pass()
    assert allocator.queues[1].paused and len(fake.submitted) == 3


async def test_restore_recognises_unfinished_allocations(
    tmp_path: Path, fake: FakeManager
) -> None:
    allocator, host = allocator_with_tasks(tmp_path, 10)
    await allocator.add_queue(params(), dry_run=False)
    await allocator.scheduling_pass()
    fake.states["1"] = Status("finished", 1.0, 2.0)
    await allocator.refresh()
    again = Allocator(host, str(tmp_path))
    again.restore()
    assert list(again.queues) == [1] and again.next_queue_id == 2
    assert list(again.queues[1].allocations) == ["2"]
    assert again.queues[1].allocations["2"].status() == "queued"


def test_hq_command_for_module_and_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.sys, "argv", ["/x/hyperq/__main__.py"])
    assert service.hq_command().endswith(" -m hyperq")
    monkeypatch.setattr(service.sys, "argv", ["/opt/bin/hq"])
    assert service.hq_command() == "/opt/bin/hq"


def test_snapshot_keeps_the_autoalloc_record() -> None:
    from hyperq.server.journal.snapshot import decode_model, encode_model
    from hyperq.server.model.events import (
        AutoallocAllocationQueued,
        AutoallocAllocationStarted,
        AutoallocQueueCreated,
        AutoallocQueueRemoved,
    )

    model = Model()
    for event in [
        AutoallocQueueCreated(1.0, 1, params().to_wire()),
        AutoallocQueueCreated(1.0, 2, params().to_wire()),
        AutoallocQueueRemoved(2.0, 2),
        AutoallocAllocationQueued(3.0, 1, "7", 2),
        AutoallocAllocationStarted(4.0, 1, "7"),
    ]:
        model.apply(event)
    again = decode_model(encode_model(model))
    assert again.autoalloc == model.autoalloc
    assert again.autoalloc.max_queue_id == 2 and list(again.autoalloc.queues) == [1]
    assert again.autoalloc.allocations["7"].started_at == 4.0

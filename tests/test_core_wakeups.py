"""When the server core wakes its scheduler task and the change waiters.

A worker's report is applied with its scheduling pass in one batch: the pass places
what the freed CPUs can take, and when it settles the model the scheduler task is not
woken for a second pass that would find nothing. Under a minimal utilization a pass
does not settle, and the follow-up pass still runs and places the rest."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import trio
import trio.testing

from hyperq.server import core as core_module
from hyperq.server.core import Pulse, ServerCore, WorkerLink
from hyperq.server.model.jobs import TaskState
from hyperq.server.workerconn import WorkerHandler
from tests.test_model import submit_desc, worker_config


class Passes:
    """Counts the scheduling passes the core runs."""

    def __init__(self) -> None:
        self.count = 0
        self._real = core_module.schedule_pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self._real(*args, **kwargs)


@asynccontextmanager
async def scheduling_core() -> AsyncIterator[tuple[ServerCore, Passes, trio.Nursery]]:
    """A core with its scheduler task running and its passes counted; the nursery is
    cancelled at the end."""
    passes = Passes()
    with mock.patch.object(core_module, "schedule_pass", passes):
        core = ServerCore("uid", time.time(), None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.run_scheduler)
            yield core, passes, nursery
            nursery.cancel_scope.cancel()


def connected(core: ServerCore, cpus: int, **config: Any) -> int:
    events = core.model.worker_connected({**worker_config(cpus), **config}, now=core.now())
    core.commit(events)
    worker_id = events[0].id  # type: ignore[attr-defined]
    core.links[worker_id] = WorkerLink(worker_id)
    return worker_id


def finish_message(core: ServerCore, worker_id: int) -> dict[str, Any]:
    """The worker's report that everything it was given finished."""
    link = core.links[worker_id]
    launched, link.launch = link.launch, []
    items = [["finished", e.job_id, e.task_id, e.instance, 0.0, 0.0] for e in launched]
    return {"op": "updates", "items": items}


def states(core: ServerCore, job_id: int) -> list[TaskState]:
    return [task.state for task in core.model.iter_tasks(job_id)]


async def test_a_report_costs_one_pass_and_one_wakeup() -> None:
    async with scheduling_core() as (core, passes, nursery):
        worker_id = connected(core, cpus=1)
        job_id = core.model.next_job_id
        core.commit(core.model.submit(submit_desc([[0, 2, 1]]), now=core.now()))
        await trio.testing.wait_all_tasks_blocked()
        assert len(core.links[worker_id].launch) == 1

        wakeups = 0

        async def waiter() -> None:
            nonlocal wakeups
            while True:
                await core.changed.wait()
                wakeups += 1

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        before = passes.count
        handler = WorkerHandler(core)
        assert handler.handle_message(worker_id, finish_message(core, worker_id)) is None
        await trio.testing.wait_all_tasks_blocked()
        # The report's own pass placed the next task (and, the job running short, the
        # last one queued behind it); none ran after it.
        assert passes.count == before + 1
        assert [e.after for e in core.links[worker_id].launch] == [-1, 1]
        assert wakeups == 1
        assert states(core, job_id).count(TaskState.FINISHED) == 1


async def test_a_pass_that_does_not_settle_is_followed_by_another() -> None:
    # The second task of priority 1 goes to a worker waiting for its minimal
    # utilization, after the first pass held the priority-0 task back from the other
    # such worker (its gap): only the next pass places it there.
    async with scheduling_core() as (core, passes, _nursery):
        plain = connected(core, cpus=1)
        waiting = [connected(core, cpus=1, min_utilization=0.5) for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        before = passes.count
        with core.batch():
            for desc in (submit_desc([[0, 1, 1]], priority=1), submit_desc([[0, 0, 1]])):
                core.commit(core.model.submit(desc, now=core.now()))
            core.schedule_now()
        await trio.testing.wait_all_tasks_blocked()
        assert passes.count == before + 3  # placed 2, placed 1, found nothing
        workers = [plain, *waiting]
        placed = [[(e.job_id, e.task_id) for e in core.links[w].launch] for w in workers]
        assert placed == [[(1, 0)], [(1, 1)], [(2, 0)]]


async def test_pulse_wakes_whoever_took_its_event() -> None:
    pulse = Pulse()
    pulse.fire()  # nobody took it: nothing to wake
    armed = pulse.armed()
    assert not armed.is_set()
    pulse.fire()
    assert armed.is_set()
    again = pulse.armed()
    assert not again.is_set()
    woken = False

    async def wait() -> None:
        nonlocal woken
        await pulse.wait()
        woken = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not woken
        pulse.fire()
        await trio.testing.wait_all_tasks_blocked()
        assert woken and again.is_set()


async def test_a_started_report_runs_no_pass_but_wakes_the_waiters() -> None:
    async with scheduling_core() as (core, passes, _nursery):
        worker_id = connected(core, cpus=1)
        job_id = core.model.next_job_id
        core.commit(core.model.submit(submit_desc([[0, 1, 1]]), now=core.now()))
        await trio.testing.wait_all_tasks_blocked()
        (launch,) = core.links[worker_id].launch
        armed = core.changed.armed()
        before = passes.count
        started = ["started", launch.job_id, launch.task_id, launch.instance, 0.0]
        message = {"op": "updates", "items": [started]}
        assert WorkerHandler(core).handle_message(worker_id, message) is None
        await trio.testing.wait_all_tasks_blocked()
        assert armed.is_set()
        assert passes.count == before
        assert states(core, job_id) == [TaskState.RUNNING, TaskState.WAITING]

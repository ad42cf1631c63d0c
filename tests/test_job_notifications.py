"""`job-notifications` (behind `hq submit --wait --on-notify`) forwards every
notification sent before its job completed, even those still queued when the
completion is seen (graphs.md §4.2: every message runs the callback)."""

from __future__ import annotations

import time
from typing import Any

import trio
import trio.testing

from hyperq.server.core import ServerCore
from hyperq.server.graphapi import job_notifications
from hyperq.server.workerconn import WorkerHandler
from tests.test_core_wakeups import connected, finish_message
from tests.test_model import submit_desc


class RecordingPeer:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, message: Any) -> None:
        self.sent.append(message)
        await trio.sleep(0)


async def test_notifications_queued_at_completion_still_go_out() -> None:
    core = ServerCore("uid", time.time(), None)
    worker_id = connected(core, cpus=2)
    job_id = core.model.next_job_id
    core.commit(core.model.submit(submit_desc([[0, 1, 1]]), now=core.now()))
    core.schedule_now()
    peer = RecordingPeer()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job_notifications, core, {"job": job_id}, peer)
            await trio.testing.wait_all_tasks_blocked()
            assert peer.sent == [{"ok": None}]
            # Both notifications and the job's end land before the forwarder runs.
            core.notify(job_id, 0, worker_id, b"one")
            core.notify(job_id, 1, worker_id, b"two")
            message = finish_message(core, worker_id)
            assert WorkerHandler(core).handle_message(worker_id, message) is None
            assert core.model.jobs[job_id].is_completed
    assert peer.sent[1:] == [
        {"notify": {"task": 0, "worker": worker_id, "message": b"one"}},
        {"notify": {"task": 1, "worker": worker_id, "message": b"two"}},
        {"done": True},
    ]

"""One connected worker: registration, its updates, and what we send it.

The handler's receive loop turns the worker's reports into model commands; a sender
task drains the link's queues (task launches, kills, stop) into batched messages.
However the connection ends, the worker is marked lost exactly once, with the reason
that ended it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from hyperq.common.errors import HqError
from hyperq.common.notify import NOTIFY_LIMIT
from hyperq.server.core import ServerCore, WorkerLink
from hyperq.server.replies import worker_wire
from hyperq.transport.codec import ProtocolError
from hyperq.transport.peer import PeerConnection

log = logging.getLogger(__name__)

REGISTER_TIMEOUT = 10.0


class WorkerHandler:
    def __init__(self, core: ServerCore) -> None:
        self.core = core

    async def handle(self, peer: PeerConnection) -> None:
        core = self.core
        with trio.move_on_after(REGISTER_TIMEOUT) as waited:
            message = await peer.recv()
        if waited.cancelled_caught:
            raise ProtocolError(f"no register message within {REGISTER_TIMEOUT:g} s")
        if not isinstance(message, dict) or message.get("op") != "register":
            raise ProtocolError("expected a register message")
        configuration = message.get("configuration")
        if not isinstance(configuration, dict):
            raise ProtocolError("register: bad configuration")
        configuration = dict(configuration)
        if configuration.get("idle_timeout") is None and core.idle_timeout is not None:
            configuration["idle_timeout"] = core.idle_timeout
        configuration["pid"] = message.get("pid")
        resumed = self._resume(message.get("resume"))
        drop: list[list[int]] = []
        if resumed is not None:
            worker_id, events, drop = resumed
        else:
            try:
                events = core.model.worker_connected(configuration, now=core.now())
            except HqError as error:
                await peer.send({"error": error.message})
                return
            worker_id = events[0].id  # type: ignore[attr-defined]
            resume = message.get("resume")
            if isinstance(resume, dict):
                # A reconnecting worker this server cannot take back: it must drop
                # everything it still runs and start afresh under a new ID.
                drop = [list(item[:3]) for item in resume.get("known", [])]
        link = WorkerLink(worker_id)
        core.links[worker_id] = link
        reason = "ConnectionLost"
        try:
            core.commit(events)
            view = core.model.worker_info(worker_id)
            assert view is not None
            await peer.send(
                {"worker": worker_wire(view), "server_uid": core.server_uid, "drop": drop}
            )
            if resumed is not None:
                log.info("Worker %d reconnected from %s", worker_id, peer.remote)
            else:
                log.info("Worker %d registered from %s", worker_id, peer.remote)
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_loop, peer, link)
                    reason = await self._receive_loop(peer, link)
                    nursery.cancel_scope.cancel()
        finally:
            core.links.pop(worker_id, None)
            if link.stop_reason is not None:
                reason = link.stop_reason if link.stop_reason != "stopped" else "Stopped"
            if link.lost_reason is not None:
                reason = link.lost_reason
            if core.stopping:
                # Not a loss: the journal must still show the worker as connected, so that
                # a `reconnect` worker is held (and its tasks kept) when the server restarts.
                log.debug("Worker %d disconnected by the server's stop", worker_id)
            else:
                core.commit(core.model.worker_lost(worker_id, now=core.now(), reason=reason))
                log.info("Worker %d lost: %s", worker_id, reason)

    def _resume(self, resume: Any) -> tuple[int, list[Any], list[list[int]]] | None:
        """Take back a held `reconnect` worker: (its ID, events, tasks it must drop)."""
        core = self.core
        if not isinstance(resume, dict) or resume.get("server_uid") != core.server_uid:
            return None
        worker_id = resume.get("worker_id")
        if not isinstance(worker_id, int) or worker_id not in core.model.held_workers():
            return None
        known = [(int(j), int(t), int(i)) for j, t, i in resume.get("known", [])]
        keep = []
        drop = []
        for job, task, instance in known:
            view = core.model.task(job, task)
            if view is not None and view.worker == worker_id and view.instance == instance:
                keep.append((job, task))
            else:
                drop.append([job, task, instance])
        events = core.model.worker_resumed(worker_id, keep, now=core.now())
        return worker_id, events, drop

    async def _receive_loop(self, peer: PeerConnection, link: WorkerLink) -> str:
        worker_id = link.worker_id
        while True:
            try:
                message = await peer.recv()
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                return "ConnectionLost"
            link.last_seen = time.monotonic()
            if not isinstance(message, dict):
                raise ProtocolError("expected a map")
            op = message.get("op")
            if op == "updates":
                if self._apply_updates(worker_id, message.get("items", [])):
                    self.core.schedule_now()
            elif op == "heartbeat":
                pass
            elif op == "goodbye":
                reason = message.get("reason")
                return reason if reason in ("TimeLimitReached", "IdleTimeout") else "ConnectionLost"
            else:
                raise ProtocolError(f"unknown worker message {op!r}")

    def _apply_updates(self, worker_id: int, items: list[Any]) -> bool:
        """Apply a worker's reports; True if any task ended (so CPUs may be free)."""
        core = self.core
        model = core.model
        now = core.now()
        ended = False
        for item in items:
            kind, job, task, instance = item[0], item[1], item[2], item[3]
            # Workers say how long ago a task started (its start may be reported late,
            # or only with its end): the server's clock stamps both, so no skew.
            if kind == "started":
                ago = _seconds(item[4] if len(item) > 4 else None) or 0.0
                new = model.task_started(
                    job, task, worker_id=worker_id, instance=instance, now=now - ago
                )
            elif kind == "finished":
                ended = True
                new = model.task_finished(
                    job,
                    task,
                    worker_id=worker_id,
                    instance=instance,
                    now=now,
                    ran_for=_seconds(item[4] if len(item) > 4 else None),
                    ended_at=_ago(now, item[5] if len(item) > 5 else None),
                )
            elif kind == "failed":
                ended = True
                new = model.task_failed(
                    job,
                    task,
                    worker_id=worker_id,
                    instance=instance,
                    now=now,
                    error=str(item[4]),
                    ran_for=_seconds(item[5] if len(item) > 5 else None),
                    ended_at=_ago(now, item[6] if len(item) > 6 else None),
                )
            elif kind == "notify":
                message = item[4] if len(item) > 4 else None
                if not isinstance(message, bytes) or len(message) > NOTIFY_LIMIT:
                    raise ProtocolError("malformed notification")
                core.notify(job, task, worker_id, message)
                continue
            else:
                raise ProtocolError(f"unknown update {kind!r}")
            # Each command reads the model, so apply before deciding on the next item.
            core.commit(new)
        return ended

    async def _send_loop(self, peer: PeerConnection, link: WorkerLink) -> None:
        model = self.core.model
        while True:
            # Everything the scheduler assigned before this task got to run goes in one
            # message. No extra yield or delay to gather more: with few CPUs, every
            # scheduling round of latency here leaves a CPU of the worker idle (an extra
            # yield cost ~15% of short-task throughput).
            await link.wake.wait()
            link.wake = trio.Event()
            if link.kill:
                kill, link.kill = link.kill, []
                await peer.send({"op": "cancel", "tasks": kill})
            if link.launch:
                launch, link.launch = link.launch, []
                # Map keys must be strings: frames are decoded with strict_hashable_types.
                descs: dict[str, Any] = {}
                desc_keys: dict[tuple[int, int, int], str] = {}
                tasks = []
                for effect in launch:
                    view = model.task(effect.job_id, effect.task_id)
                    if view is None:
                        continue
                    key = (effect.job_id, view.submit_index, view.variant)
                    if key not in desc_keys:
                        desc_keys[key] = str(len(descs))
                        descs[desc_keys[key]] = launch_desc(
                            model.submit_desc(effect.job_id, view.submit_index), view.variant
                        )
                    tasks.append(
                        {
                            "job": effect.job_id,
                            "task": effect.task_id,
                            "instance": effect.instance,
                            "desc": desc_keys[key],
                            "entry": view.entry,
                            "allocation": effect.allocation.to_wire(),
                        }
                    )
                if tasks:
                    await peer.send({"op": "compute", "descs": descs, "tasks": tasks})
            if link.stop_reason is not None:
                await peer.send({"op": "stop", "reason": link.stop_reason})
                return


def launch_desc(desc: Any, variant: int = 0) -> dict[str, Any]:
    """The part of a submit description a worker needs to run its tasks (with the
    chosen resource variant's index in HQ_RESOURCE_VARIANT when there are several)."""
    program = desc["program"]
    if len(desc.get("variants") or ()) > 1:
        program = {**program, "env": {**program["env"], "HQ_RESOURCE_VARIANT": str(variant)}}
    return {
        "program": program,
        "submit_dir": desc["submit_dir"],
        "stdin": desc.get("stdin"),
        "task_dir": desc.get("task_dir", False),
        "pin": desc.get("pin"),
        "time_limit": desc.get("time_limit"),
    }


def _ago(now: float, value: Any) -> float | None:
    """The time a worker reported as `value` seconds before `now`, if it did."""
    seconds = _seconds(value)
    return now - seconds if seconds is not None else None


def _seconds(value: Any) -> float | None:
    """A duration a worker reported: a finite, non-negative number, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None

"""One connected worker: registration, its updates, and what we send it.

The handler's receive loop turns the worker's reports into model commands; a sender
task drains the link's queues (task launches, kills, stop) into batched messages.
However the connection ends, the worker is marked lost exactly once, with the reason
that ended it. Every message is converted to its declared type (`schemas`) first: a
register that does not fit is refused with the reason; a later message that does not
fit is logged and skipped, and so is a report the model cannot place, so one bad
message costs neither the connection nor the server.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import trio

from hyperq.common.errors import HqError
from hyperq.common.notify import NOTIFY_LIMIT
from hyperq.server.core import ServerCore, WorkerLink
from hyperq.server.descslots import DescSlots
from hyperq.server.model.events import WorkerOverview, WorkerOverviewTemporary
from hyperq.server.model.state import LaunchTask, Model
from hyperq.server.overview import checked_hw_state, checked_tasks
from hyperq.server.replies import worker_wire
from hyperq.server.submitcheck import check_worker_config
from hyperq.transport import schemas
from hyperq.transport.codec import ProtocolError
from hyperq.transport.link import LinkClosed
from hyperq.transport.peer import PeerConnection
from hyperq.transport.schemas import (
    Failed,
    Finished,
    FinishedIds,
    Goodbye,
    Notify,
    Overview,
    Returned,
    SchemaError,
    Started,
    Updates,
)

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
        try:
            register = schemas.convert(message, schemas.Register)
            # Checked for the fields the server reads; stored as sent (it is shown back).
            check_worker_config(
                schemas.convert(register.configuration, schemas.WorkerConfigWire, "configuration")
            )
        except (SchemaError, HqError) as error:
            log.warning("Refusing worker from %s: %s", peer.remote, error.message)
            await peer.send({"error": f"Invalid register message: {error.message}"})
            return
        configuration = dict(register.configuration)
        if configuration.get("idle_timeout") is None and core.idle_timeout is not None:
            configuration["idle_timeout"] = core.idle_timeout
        configuration["pid"] = register.pid
        resumed = self._resume(register.resume)
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
            if register.resume is not None:
                # A reconnecting worker this server cannot take back: it must drop
                # everything it still runs and start afresh under a new ID.
                drop = [list(item) for item in register.resume.known]
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

    def _resume(
        self, resume: schemas.Resume | None
    ) -> tuple[int, list[Any], list[list[int]]] | None:
        """Take back a held `reconnect` worker: (its ID, events, tasks it must drop)."""
        core = self.core
        if resume is None or resume.server_uid != core.server_uid:
            return None
        worker_id = resume.worker_id
        if worker_id not in core.model.held_workers():
            return None
        keep = []
        drop = []
        for job, task, instance in resume.known:
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
            except (LinkClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                return "ConnectionLost"
            link.last_seen = time.monotonic()
            reason = self.handle_message(worker_id, message)
            if reason is not None:
                return reason

    def handle_message(self, worker_id: int, message: Any) -> str | None:
        """One message of a registered worker; the reason the connection ends, if it does.

        A message that does not fit its type is logged and skipped: the worker's other
        reports still count, and its connection (with its running tasks) stays."""
        try:
            typed = schemas.convert_message(message, schemas.WORKER_MESSAGES)
        except SchemaError as error:
            log.warning("Worker %d sent a message we skip: %s", worker_id, error.message)
            return None
        if isinstance(typed, Updates):
            with self.core.batch():
                if self._apply_updates(worker_id, typed.items):
                    self.core.schedule_now()
        elif isinstance(typed, Overview):
            self._overview(worker_id, typed.hw_state, typed.tasks)
        elif isinstance(typed, Goodbye):
            reason = typed.reason
            return reason if reason in ("TimeLimitReached", "IdleTimeout") else "ConnectionLost"
        return None

    def _overview(self, worker_id: int, hw_state: Any, tasks: Any) -> None:
        state = checked_hw_state(hw_state)
        if state is None:
            log.warning("Worker %d sent a malformed overview; ignored", worker_id)
            return
        running = checked_tasks(tasks)
        view = self.core.model.worker_info(worker_id)
        if view is not None and view.configuration.get("overview_interval"):
            self.core.commit([WorkerOverview(self.core.now(), worker_id, state, running)])
        else:
            # Asked for by a watching dashboard only: streamed, never journaled.
            self.core.publish_transient(
                [WorkerOverviewTemporary(self.core.now(), worker_id, state, running)]
            )

    def _apply_updates(self, worker_id: int, items: list[schemas.TaskUpdate]) -> bool:
        """Apply a worker's reports; True if any task ended (so CPUs may be free)."""
        core = self.core
        model = core.model
        now = core.now()
        ended = False
        for item in items:
            if isinstance(item, FinishedIds):
                ended = self._apply_finished_ids(worker_id, item, now) or ended
                continue
            # Workers say how long ago a task started (its start may be reported late,
            # or only with its end): the server's clock stamps both, so no skew.
            if isinstance(item, Started):
                ago = _seconds(item.ago) or 0.0
                new = model.task_started(
                    item.job, item.task, worker_id=worker_id, instance=item.instance, now=now - ago
                )
                # A task placed here starts (`task_started` reports nothing else): no
                # resources, queue or gap changes, so no scheduling pass is due for it.
                core.commit(new, schedulable=False)
                continue
            elif isinstance(item, Finished):
                ended = True
                new = model.task_finished(
                    item.job,
                    item.task,
                    worker_id=worker_id,
                    instance=item.instance,
                    now=now,
                    ran_for=_seconds(item.ran_for),
                    ended_at=_ago(now, item.ended_ago),
                )
            elif isinstance(item, Returned):
                ended = True  # it may go to another worker now
                new = model.task_returned(
                    item.job, item.task, worker_id=worker_id, instance=item.instance, now=now
                )
            elif isinstance(item, Notify):
                if len(item.message) > NOTIFY_LIMIT:
                    log.warning("Worker %d sent an oversized notification; skipped", worker_id)
                else:
                    core.notify(item.job, item.task, worker_id, item.message)
                continue
            else:
                assert isinstance(item, Failed)
                ended = True
                new = model.task_failed(
                    item.job,
                    item.task,
                    worker_id=worker_id,
                    instance=item.instance,
                    now=now,
                    error=item.error,
                    ran_for=_seconds(item.ran_for),
                    ended_at=_ago(now, item.ended_ago),
                )
            # Each command reads the model, so apply before deciding on the next item.
            core.commit(new)
        return ended

    def _apply_finished_ids(self, worker_id: int, item: FinishedIds, now: float) -> bool:
        """A run of finished tasks as a few `tasks-finished` events, which do what its
        tasks' `Finished` items would, in the same order. A worker never holds more
        tasks than it was given: a run claiming more is not expanded at all."""
        core = self.core
        worker = core.model.workers.get(worker_id)
        holds = len(worker.tasks) if worker is not None else 0
        if item.id_count() > holds:
            log.warning(
                "Worker %d reported %d finished tasks of job %d but holds %d; skipped",
                worker_id,
                item.id_count(),
                item.job,
                holds,
            )
            return False
        ran_for = _seconds(item.ran_for)
        ended_at = _ago(now, item.ended_ago)
        core.commit(
            core.model.tasks_finished(
                item.job,
                item.task_ids(),
                worker_id=worker_id,
                instance=item.instance,
                now=now,
                ran_for=ran_for,
                ended_at=ended_at,
            )
        )
        return True

    async def _send_loop(self, peer: PeerConnection, link: WorkerLink) -> None:
        model = self.core.model
        # What the worker holds, for this connection only (its table starts empty too).
        slots = DescSlots()
        while True:
            # Everything the scheduler assigned before this task got to run goes in one
            # message. No extra yield or delay to gather more: with few CPUs, every
            # scheduling round of latency here leaves a CPU of the worker idle (an extra
            # yield cost ~15% of short-task throughput).
            wanted = self.core.overview_watchers > 0
            if wanted != link.overviews_requested:
                link.overviews_requested = wanted
                await peer.send({"op": "overview-request", "enabled": wanted})
            await link.wake.wait()
            link.wake = trio.Event()
            if link.kill:
                kill, link.kill = link.kill, []
                await peer.send({"op": "cancel", "tasks": kill})
            if link.launch:
                launch, link.launch = link.launch, []
                message = launch_message(model, launch, slots)
                if message is not None:
                    await peer.send(message)
            if link.stop_reason is not None:
                await peer.send({"op": "stop", "reason": link.stop_reason})
                return


def launch_message(
    model: Model, launch: list[LaunchTask], slots: DescSlots | None = None
) -> dict[str, Any] | None:
    """One message launching `launch` (tasks the model may since have dropped are left
    out; None if none is left): `compute-runs` when every task fits a run
    (schemas.LaunchRun), else `compute-rows`, so the tasks keep their order either way.

    With `slots` (the connection's, updated here: the message must then be sent) a
    description the worker holds already is named by its slot, and a new one is sent
    once into a slot (`slots` of the message); without, every description the message
    needs goes inline (`descs`), as before slots."""
    # Map keys must be strings: frames are decoded with strict_hashable_types.
    descs: dict[str, Any] = {}
    defined: list[list[Any]] = []
    in_use: set[int] = set()
    desc_keys: dict[tuple[int, int, int], str | int] = {}
    placed: list[tuple[LaunchTask, str | int, Any]] = []
    runs: list[list[Any]] | None = []
    run: list[Any] = []
    next_task = -1
    for effect in launch:
        facts = model.launch_facts(effect.job_id, effect.task_id)
        if facts is None:
            continue
        submit_index, variant, entry = facts
        key = (effect.job_id, submit_index, variant)
        desc_key = desc_keys.get(key)
        if desc_key is None:
            slot = None if slots is None else slots.find(key)
            if slot is None:
                desc = launch_desc(model.submit_desc(effect.job_id, submit_index), variant)
                slot = None if slots is None else slots.take(key, in_use)
                if slot is None:
                    desc_key = str(len(descs))
                    descs[desc_key] = desc
                else:
                    defined.append([slot, desc])
            if slot is not None:
                in_use.add(slot)
                desc_key = slot
            desc_keys[key] = desc_key
        placed.append((effect, desc_key, entry))
        if runs is None:
            continue
        resources = effect.allocation.resources
        if effect.hosts or len(resources) != 1:
            runs = None
            continue
        resource = resources[0]
        units = resource.units
        if not resource.indexed or not units:
            runs = None
            continue
        share = units[0][1]
        if len(units) > 1 and any(unit[1] != share for unit in units):
            runs = None
            continue
        if (
            effect.task_id == next_task
            and effect.job_id == run[0]
            and effect.instance == run[2]
            and desc_key == run[3]
            and resource.name == run[4]
            and (resource.request is run[12] or resource.request == run[12])
            and resource.amount == run[6]
            and share == run[7]
            and len(units) == run[8]
        ):
            run[9].extend([unit[0] for unit in units])
            run[10].append(entry)
            run[11].append(effect.after)
        else:
            request = resource.request
            run = [
                effect.job_id,
                effect.task_id,
                effect.instance,
                desc_key,
                resource.name,
                [request.amount, str(request.policy)],
                resource.amount,
                share,
                len(units),
                [unit[0] for unit in units],
                [entry],
                [effect.after],
                # Compared by identity first: a submit's tasks share their request.
                request,
            ]
            runs.append(run)
        next_task = effect.task_id + 1
    if not placed:
        return None
    if runs is not None:
        for run in runs:
            del run[12]
            if all(after < 0 for after in run[11]):
                del run[11]  # no task of the run waits behind another: say none at all
                if all(entry is None for entry in run[10]):
                    # Entries are for arrays of --each-line/--from-json only: say none.
                    del run[10]
            elif all(entry is None for entry in run[10]):
                run[10] = None
        message: dict[str, Any] = {"op": "compute-runs", "runs": runs}
    else:
        tasks = []
        for effect, desc_key, entry in placed:
            # A row (schemas.LaunchRow), not a map: ~40% less to encode and seal.
            row = [
                effect.job_id,
                effect.task_id,
                effect.instance,
                desc_key,
                effect.allocation.to_wire(),
                entry,
            ]
            if effect.hosts or effect.after >= 0:
                row.append(list(effect.hosts))
            if effect.after >= 0:
                row.append(effect.after)
            tasks.append(row)
        message = {"op": "compute-rows", "tasks": tasks}
    if defined:
        message["slots"] = defined
    if descs or slots is None:
        message["descs"] = descs
    return message


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
        "stream_dir": desc.get("stream_dir"),
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

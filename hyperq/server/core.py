"""The server's state at the trio edge: the one place events are applied.

Everything that changes the model goes through `ServerCore.commit(events)`: apply each
event, carry out its effects (queue task launches and kills on worker links), hand the
persisted ones to the journal, then wake the scheduler and anyone waiting for changes.
Client handlers and worker handlers call commands on `core.model` (pure) and commit the
events they return; nothing else mutates the model.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import Any

import trio

from hyperq.common.placeholders import fill, submit_values
from hyperq.server.journal.writer import Journal
from hyperq.server.model.events import Event, ServerStart, TaskNotified
from hyperq.server.model.scheduler import schedule_pass, worker_is_idle
from hyperq.server.model.state import KillTask, LaunchTask, Model

log = logging.getLogger(__name__)

# Assignments per scheduler pass; between passes the scheduler yields, so one huge
# submit cannot stall heartbeats or client requests.
SCHEDULE_BATCH = 1_000
# How often the watchdog checks heartbeats and idle timeouts.
WATCHDOG_PERIOD = 0.25


def _file_output(channel: Any) -> Any:
    """The channel if it writes a file; None for `none` and for a streamed channel."""
    if not channel or channel.get("path") == "<pipe>":
        return None
    return channel


class WorkerLink:
    """What the server holds for one connected worker: outgoing queues and liveness."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.launch: list[LaunchTask] = []
        self.kill: list[tuple[int, int, int]] = []
        self.stop_reason: str | None = None
        self.wake = trio.Event()
        self.last_seen = time.monotonic()
        self.idle_since: float | None = None
        self.lost_reason: str | None = None
        self.scope = trio.CancelScope()
        # Whether this worker was last told to send temporary overviews (cluster.md §4).
        self.overviews_requested = False

    def poke(self) -> None:
        self.wake.set()


class Pulse:
    """Wakes every waiter on the next change (job wait, job progress, journal stream).

    A change nobody waits for costs nothing: the event is replaced only once someone
    took it (every commit fires, and most have no waiter)."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._taken = False

    def fire(self) -> None:
        if self._taken:
            self._event.set()
            self._event = trio.Event()
            self._taken = False

    async def wait(self) -> None:
        self._taken = True
        await self._event.wait()

    def armed(self) -> trio.Event:
        """The event the next change sets: take it before reading the state, so that a
        change made while the reader awaits something else still wakes it."""
        self._taken = True
        return self._event


class Batch:
    """Commits that wake the scheduler and the change waiters once, at the end (see
    `ServerCore.batch`). A plain class: it is entered once per worker message."""

    __slots__ = ("_core",)

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    def __enter__(self) -> None:
        core = self._core
        assert not core._batching, "batches do not nest"
        core._batching = True
        core._batch_changed = False

    def __exit__(self, *exc_info: object) -> None:
        core = self._core
        core._batching = False
        if core._batch_changed:
            core._wake()


class Subscription:
    """Live persisted events for one `hq journal stream`, with their sequence numbers.

    Bounded: a client that reads too slowly for this many events is cut off rather than
    growing the server's memory.
    """

    QUEUE = 100_000

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[tuple[int | None, Event]](self.QUEUE)
        self.overflowed = False


class ServerCore:
    def __init__(
        self,
        server_uid: str,
        started_at: float,
        idle_timeout: float | None,
        model: Model | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.model = model if model is not None else Model()
        self.journal = journal
        self.server_uid = server_uid
        self.started_at = started_at
        self.idle_timeout = idle_timeout
        self.links: dict[int, WorkerLink] = {}
        self.subscriptions: set[Subscription] = set()
        self.overview_watchers = 0
        # Set once the server stops: connections that end from now on are the server's
        # doing, not the workers' loss, and are not recorded as such.
        self.stopping = False
        self.changed = Pulse()
        self._schedule_wanted = trio.Event()
        # Whether a scheduling pass may find something to place: every commit may make
        # it so; a pass that settles the model (scheduler.schedule_pass) says it does
        # not, and then the scheduler task is not woken for a pass that finds nothing.
        self._unsettled = False
        self._batch = Batch(self)
        self._batching = False
        self._batch_changed = False
        self.commit([ServerStart(started_at, server_uid)])

    # --- applying events --------------------------------------------------------------
    def commit(self, events: Iterable[Event], *, schedulable: bool = True) -> None:
        """Apply `events` (see the module's docstring). `schedulable=False`: the caller
        knows they give a scheduling pass nothing new to place (a placed task that
        starts), so they wake no pass of their own."""
        events = list(events)
        if self.journal is not None:
            numbered: list[tuple[int | None, Event]] = list(self.journal.append(events))
        else:
            numbered = [(None, event) for event in events if event.persisted]
        if numbered and self.subscriptions:
            self._publish(numbered)
        apply = self.model.apply
        for event in events:
            effects = apply(event)
            if effects:
                self._carry_out(effects)
        if events:
            if schedulable:
                self._unsettled = True
            if self._batching:
                self._batch_changed = True
            else:
                self._wake()

    def _carry_out(self, effects: list[Any]) -> None:
        """Queue launches and kills on their workers' links, and wake each link once."""
        links = self.links
        link: WorkerLink | None = None
        poked: list[WorkerLink] = []
        for effect in effects:
            if link is None or link.worker_id != effect.worker_id:
                link = links.get(effect.worker_id)
                if link is None:
                    continue
                poked.append(link)
            if type(effect) is LaunchTask:
                link.launch.append(effect)
            else:
                assert isinstance(effect, KillTask)
                link.kill.append((effect.job_id, effect.task_id, effect.instance))
        for link in poked:
            link.poke()

    def _wake(self) -> None:
        if self._unsettled:
            self._schedule_wanted.set()
        self.changed.fire()

    def batch(self) -> Batch:
        """`with core.batch():` the commits inside wake the scheduler task and the
        change waiters once, at the end of the block, and the scheduler only if no
        pass in the block settled what they changed. Nothing else runs in between (no
        await in the block), so the waiters see the same; a worker's report, applied
        with its scheduling pass in one block, costs no second pass nor task switch."""
        return self._batch

    def _publish(self, numbered: list[tuple[int | None, Event]]) -> None:
        for subscription in list(self.subscriptions):
            for item in numbered:
                try:
                    subscription.send.send_nowait(item)
                except trio.WouldBlock:
                    subscription.overflowed = True
                    subscription.send.close()
                    self.subscriptions.discard(subscription)
                    break

    def publish_transient(self, events: list[Event]) -> None:
        """Events for the live streams only: not applied, not journaled (temporary
        worker overviews)."""
        if self.subscriptions:
            self._publish([(None, event) for event in events])

    def add_overview_watcher(self, delta: int) -> None:
        """A stream that wants overviews came (+1) or went (-1): every worker without its
        own interval sends them while at least one such stream exists."""
        self.overview_watchers += delta
        for link in self.links.values():
            link.poke()

    def notify(self, job_id: int, task_id: int, worker_id: int, message: bytes) -> None:
        """A task's notification: to live event streams only, never to the journal."""
        if self.subscriptions:
            self._publish([(None, TaskNotified(self.now(), job_id, task_id, worker_id, message))])

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        subscription.send.close()

    async def durable(self) -> None:
        """Wait until every event committed so far is on disk (no-op without a journal)."""
        if self.journal is not None:
            await self.journal.sync()

    @staticmethod
    def now() -> float:
        return time.time()

    # --- submits ----------------------------------------------------------------------
    def resolve_submit(self, desc: dict[str, Any], job_id: int) -> dict[str, Any]:
        """Stage 1 of path resolution (jobs.md §2): JOB_ID, SUBMIT_DIR, SERVER_UID."""
        from hyperq.common.placeholders import resolve_paths

        values = submit_values(job_id, desc["submit_dir"], self.server_uid)
        program = dict(desc["program"])
        # A streamed channel (`<pipe>`) is no path; it stays as it is.
        stdout = _file_output(program.get("stdout"))
        stderr = _file_output(program.get("stderr"))
        cwd, out_path, err_path = resolve_paths(
            program["cwd"],
            stdout["path"] if stdout else None,
            stderr["path"] if stderr else None,
            values,
            desc["submit_dir"],
        )
        program["cwd"] = cwd
        if stdout:
            program["stdout"] = {**stdout, "path": out_path}
        if stderr:
            program["stderr"] = {**stderr, "path": err_path}
        resolved = dict(desc)
        resolved["program"] = program
        if desc.get("stream_path"):
            # `stream_path` stays as the client sent it (the journal shows it so);
            # workers get `stream_dir`, absolute even if placeholders remain (stream.md §1).
            stream_dir = fill(desc["stream_path"], values)
            resolved["stream_dir"] = os.path.join(desc["submit_dir"], stream_dir)
        return resolved

    # --- services ---------------------------------------------------------------------
    async def run_scheduler(self) -> None:
        while True:
            while self._unsettled:
                with self.batch():
                    self.schedule_now()
                await trio.sleep(0)
            # Only this task waits for the event: it may be replaced while none waits.
            self._schedule_wanted = trio.Event()
            await self._schedule_wanted.wait()

    def schedule_now(self) -> bool:
        """One scheduling pass of at most SCHEDULE_BATCH assignments; True if it made
        any. Called by the scheduler task, and right after a worker's report, so that a
        CPU it freed gets its next task without waiting a scheduling round."""
        assignments, settles = schedule_pass(self.model, self.now(), SCHEDULE_BATCH)
        if assignments:
            self.commit(self.model.assign(assignments, now=self.now()))
        if settles:
            self._unsettled = False
        return bool(assignments)

    async def release_held_workers(self, grace: float) -> None:
        """After a restore, wait for `reconnect` workers; give up on them after `grace`."""
        held = self.model.held_workers()
        if not held:
            return
        log.info("Waiting up to %s s for %d reconnecting worker(s)", grace, len(held))
        await trio.sleep(grace)
        for worker_id in self.model.held_workers():
            log.warning("Worker %d did not reconnect; its tasks go back to waiting", worker_id)
            self.commit(self.model.worker_lost(worker_id, now=self.now(), reason="ConnectionLost"))

    async def run_watchdog(self) -> None:
        """Heartbeat loss and idle timeouts, checked for every connected worker."""
        while True:
            await trio.sleep(WATCHDOG_PERIOD)
            now_mono = time.monotonic()
            now = self.now()
            for link in list(self.links.values()):
                worker = self.model.workers.get(link.worker_id)
                if worker is None:
                    continue
                config = worker.configuration
                heartbeat = float(config.get("heartbeat_interval") or 8.0)
                if now_mono - link.last_seen > max(3 * heartbeat, 2.0):
                    log.warning("Worker %d lost: no heartbeat", link.worker_id)
                    link.lost_reason = "HeartbeatLost"
                    link.scope.cancel()
                    continue
                idle_timeout = config.get("idle_timeout")
                if idle_timeout is None or link.stop_reason is not None:
                    continue
                if worker_is_idle(self.model, link.worker_id, now):
                    if link.idle_since is None:
                        link.idle_since = now_mono
                    elif now_mono - link.idle_since >= float(idle_timeout):
                        log.info("Worker %d reached its idle timeout", link.worker_id)
                        link.stop_reason = "IdleTimeout"
                        link.poke()
                else:
                    link.idle_since = None

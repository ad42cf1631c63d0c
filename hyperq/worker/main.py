"""The worker program: connection, task runners, heartbeats, and how it ends.

worker nursery
├── websocket reader  (trio-websocket's, one per connection)
├── update sender     batches task state updates into one message
├── heartbeat         keeps the server from declaring us lost
├── signal watcher    SIGINT/SIGTERM/SIGTSTP → stop (exit 0)
├── time limit        the worker's own lifetime → goodbye (exit 0)
└── task nursery      one runner per task; cancelling a runner kills its process group
The receive loop runs in the main task. Whatever ends the worker (server's stop, time
limit, signal, server lost) goes through `end()`, which decides the exit code and
whether running tasks are killed or allowed to finish. With `--on-server-lost
reconnect` a lost server is not an end: tasks keep running, their reports wait, and the
worker retries the server directory until the server is back or the limit runs out.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from hyperq.common.access import Endpoint
from hyperq.common.errors import HqError
from hyperq.common.notify import ACCESS_KEY_VAR
from hyperq.common.resources import Allocation
from hyperq.transport.codec import ProtocolError
from hyperq.transport.peer import PeerConnection
from hyperq.worker.config import WorkerConfig
from hyperq.worker.connection import connect_server
from hyperq.worker.guardian import Guardian
from hyperq.worker.launcher import ProgramCache, TaskLaunchSpec, TaskOutcome, run_task
from hyperq.worker.notify import NotifyService

log = logging.getLogger(__name__)

# Updates queued between task runners and the sender. The sender drains everything queued
# into one message, so this bounds memory, not throughput; runners wait when it is full.
UPDATE_QUEUE_SIZE = 4096
WORKER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGTSTP)
# A task's start is reported this long after it (or with its end, if that comes first):
# short tasks then cost the server one report instead of two. Workers that may
# reconnect report at once, so that a restored server knows what they run.
STARTED_REPORT_DELAY = 0.02
# `--on-server-lost reconnect`: how long the worker keeps trying, and how often.
RECONNECT_LIMIT = 600.0
RECONNECT_MAX_DELAY = 5.0
SEND_ERRORS = (
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)

EndpointLoader = Callable[[], Awaitable[Endpoint]]


def _on_the_wire(batch: list[list[Any]]) -> list[list[Any]]:
    """Queued updates as sent. Each is queued with the monotonic time its fact became
    true (last item); on the wire that becomes how long ago, added to a start's own
    "ago" and appended to an end. Results queued while the server was away (a
    `reconnect` worker) are then recorded at the time they happened, not at delivery."""
    now = time.monotonic()
    wire = []
    for item in batch:
        *fields, stamp = item
        age = max(now - stamp, 0.0)
        if fields[0] == "started":
            fields[4] += age
        else:
            fields.append(age)
        wire.append(fields)
    return wire


@dataclass
class Ending:
    reason: str  # "stopped", "IdleTimeout", "time-limit", "signal", "server-lost"
    exit_code: int
    kill_tasks: bool


def hq_executable() -> str | None:
    """The absolute path of `hq` for tasks' $HQ."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "hq" and os.path.exists(argv0):
        return os.path.abspath(argv0)
    candidate = os.path.join(os.path.dirname(sys.executable), "hq")
    return candidate if os.path.exists(candidate) else None


async def register(
    nursery: trio.Nursery,
    endpoint: Endpoint,
    config: WorkerConfig,
    resume: dict[str, Any] | None = None,
) -> tuple[PeerConnection, dict[str, Any]]:
    peer = await connect_server(nursery, endpoint.host, endpoint.port, endpoint.key_bytes())
    message: dict[str, Any] = {
        "op": "register",
        "configuration": config.to_json(),
        "pid": os.getpid(),
    }
    if resume is not None:
        message["resume"] = resume
    await peer.send(message)
    with trio.fail_after(30):
        reply = await peer.recv()
    if not isinstance(reply, dict) or "error" in reply:
        error = reply.get("error") if isinstance(reply, dict) else "invalid reply"
        await peer.close()
        raise HqError(f"Server refused the worker: {error}")
    return peer, reply


class WorkerRuntime:
    def __init__(
        self,
        config: WorkerConfig,
        nursery: trio.Nursery,
        peer: PeerConnection,
        reply: dict[str, Any],
        guardian: Guardian,
        load_endpoint: EndpointLoader,
    ) -> None:
        self.config = config
        self.conn_nursery = nursery
        self.peer = peer
        self.worker_id: int = reply["worker"]["id"]
        self.server_uid: str = reply["server_uid"]
        self.guardian = guardian
        self.load_endpoint = load_endpoint
        self.hq = hq_executable()
        # Copying os.environ per task costs more than the rest of preparing it.
        self.base_env = dict(os.environ)
        self.programs = ProgramCache()
        self.ending: Ending | None = None
        self.receive_scope = trio.CancelScope()
        self.task_scopes: dict[tuple[int, int], tuple[int, trio.CancelScope]] = {}
        self.updates_send, self.updates_recv = trio.open_memory_channel[list[Any]](
            UPDATE_QUEUE_SIZE
        )
        self.unsent: list[list[Any]] = []
        self.connected = True
        self.reconnecting = config.on_server_lost == "reconnect"
        # Running tasks whose start is not reported yet: key -> (instance, monotonic start).
        self.unreported: dict[tuple[int, int], tuple[int, float]] = {}
        self.started_delay = 0.0 if self.reconnecting else STARTED_REPORT_DELAY
        self._unreported_added = trio.Event()
        self.notifier = NotifyService(self._forward_notification)
        self.notify_tokens: dict[tuple[int, int], str] = {}

    def end(self, ending: Ending) -> None:
        """The first reason to end wins; it stops the receive loop (or reconnecting)."""
        if self.ending is None:
            self.ending = ending
            log.info("Worker is stopping (%s)", ending.reason)
        self.receive_scope.cancel()

    async def run(self) -> int:
        async with trio.open_nursery() as services:
            services.start_soon(self._send_updates)
            services.start_soon(self._report_starts)
            services.start_soon(self._heartbeat)
            await services.start(self._watch_signals)
            await services.start(self.notifier.run)
            if self.config.time_limit is not None:
                services.start_soon(self._time_limit, self.config.time_limit)
            async with trio.open_nursery() as tasks:
                self.task_nursery = tasks
                while True:
                    with self.receive_scope:
                        await self._receive_loop(tasks)
                    if self.ending is None and self.reconnecting:
                        reconnected = False
                        self.receive_scope = trio.CancelScope()
                        with self.receive_scope:
                            reconnected = await self._reconnect()
                        if reconnected:
                            self.receive_scope = trio.CancelScope()
                            continue
                        if self.ending is None:
                            log.error("Could not reconnect to the server")
                    break
                ending = self.ending or Ending("server-lost", 1, True)
                self.ending = ending
                if ending.reason == "server-lost":
                    log.error("Connection to the server was lost")
                if ending.kill_tasks:
                    tasks.cancel_scope.cancel()
                elif self.task_scopes:
                    log.info("Waiting for %d running task(s) to finish", len(self.task_scopes))
            await self._close_connection()
            services.cancel_scope.cancel()
        return self.ending.exit_code if self.ending else 1

    # --- receiving -------------------------------------------------------------------
    async def _receive_loop(self, tasks: trio.Nursery) -> None:
        while True:
            try:
                message = await self.peer.recv()
            except (
                ConnectionClosed,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                ProtocolError,
            ) as error:
                log.debug("Receive failed: %s", error)
                self.connected = False
                if not self.reconnecting:
                    policy = self.config.on_server_lost
                    self.end(Ending("server-lost", 1, kill_tasks=policy == "stop"))
                return
            if not isinstance(message, dict):
                continue
            op = message.get("op")
            if op == "compute":
                self._start_tasks(tasks, message)
            elif op == "cancel":
                self._cancel(message.get("tasks", ()))
            elif op == "stop":
                reason = message.get("reason", "stopped")
                self.end(Ending(reason, 0, kill_tasks=True))
                return

    def _cancel(self, items: Any) -> None:
        for job, task, instance in items:
            slot = self.task_scopes.get((job, task))
            if slot is not None and slot[0] == instance:
                slot[1].cancel()

    def _start_tasks(self, tasks: trio.Nursery, message: dict[str, Any]) -> None:
        descs: dict[str, dict[str, Any]] = message.get("descs", {})
        for item in message.get("tasks", ()):
            spec = self._spec(item, descs[item["desc"]])
            scope = trio.CancelScope()
            self.task_scopes[(spec.job_id, spec.task_id)] = (spec.instance, scope)
            tasks.start_soon(self._run_one, spec, scope)

    def _spec(self, item: dict[str, Any], desc: dict[str, Any]) -> TaskLaunchSpec:
        program = desc["program"]
        allocation = Allocation.from_wire(item["allocation"])
        stdout = program.get("stdout")
        stderr = program.get("stderr")
        env = dict(program.get("env", {}))
        access = self.notifier.register(item["job"], item["task"], item["instance"])
        if access is not None:
            self.notify_tokens[(item["job"], item["task"])] = access[0]
            env[ACCESS_KEY_VAR] = access[1]
        return TaskLaunchSpec(
            job_id=item["job"],
            task_id=item["task"],
            instance=item["instance"],
            argv=list(program["args"]),
            env=env,
            cwd=program["cwd"],
            stdout=stdout["path"] if stdout else None,
            stderr=stderr["path"] if stderr else None,
            stdout_rm_if_finished=bool(stdout and stdout.get("rm_if_finished")),
            stderr_rm_if_finished=bool(stderr and stderr.get("rm_if_finished")),
            submit_dir=desc["submit_dir"],
            server_uid=self.server_uid,
            work_dir=self.config.work_dir,
            stdin=desc.get("stdin"),
            task_dir=bool(desc.get("task_dir")),
            pin=desc.get("pin"),
            time_limit=desc.get("time_limit"),
            entry=item.get("entry"),
            resource_env=allocation.env(),
            cpu_labels=allocation.cpu_labels(),
            cpus_whole=allocation.whole_cpu_count() is not None,
            hq_executable=self.hq,
            base_env=self.base_env,
            on_process=self.guardian.track,
            programs=self.programs,
        )

    async def _run_one(self, spec: TaskLaunchSpec, scope: trio.CancelScope) -> None:
        key = (spec.job_id, spec.task_id)
        outcome: TaskOutcome | None = None
        try:
            with scope:
                if self.started_delay:
                    self.unreported[key] = (spec.instance, time.monotonic())
                    self._unreported_added.set()
                else:
                    await self.updates_send.send(
                        ["started", *key, spec.instance, 0.0, time.monotonic()]
                    )
                outcome = await run_task(spec)
        finally:
            slot = self.task_scopes.get(key)
            if slot is not None and slot[1] is scope:
                del self.task_scopes[key]
            unreported = self.unreported.pop(key, None)
            token = self.notify_tokens.pop(key, None)
            if token is not None:
                self.notifier.revoke(token)
        if outcome is None:
            return  # canceled: the server already knows
        # Not reported as started yet: the end carries how long it ran, so that the
        # server records the start at the right moment.
        ended = time.monotonic()
        ran_for = ended - unreported[1] if unreported is not None else None
        key_instance = (spec.job_id, spec.task_id, spec.instance)
        if outcome.error is None:
            update = ["finished", *key_instance, ran_for, ended]
        else:
            update = ["failed", *key_instance, outcome.error, ran_for, ended]
        with trio.CancelScope(shield=True):
            await self.updates_send.send(update)

    async def _forward_notification(
        self, job_id: int, task_id: int, instance: int, message: bytes
    ) -> None:
        # The updates channel keeps a task's messages in order with its other reports.
        await self.updates_send.send(
            ["notify", job_id, task_id, instance, message, time.monotonic()]
        )

    async def _report_starts(self) -> None:
        """Report the starts of tasks still running `started_delay` after they began."""
        while True:
            if not self.unreported:
                await self._unreported_added.wait()
                self._unreported_added = trio.Event()
                continue
            oldest = min(start for _instance, start in self.unreported.values())
            await trio.sleep(max(oldest + self.started_delay - time.monotonic(), 0.0))
            now = time.monotonic()
            due = [
                (key, instance, start)
                for key, (instance, start) in self.unreported.items()
                if now - start >= self.started_delay
            ]
            # Take them all out before anything yields: a task may end meanwhile (and
            # then reports its start with its end). Queue without yielding where there is
            # room, so that each start goes before its task's end.
            for key, _instance, _start in due:
                del self.unreported[key]
            for key, instance, start in due:
                update = ["started", *key, instance, now - start, now]
                try:
                    self.updates_send.send_nowait(update)
                except trio.WouldBlock:
                    await self.updates_send.send(update)

    # --- sending ---------------------------------------------------------------------
    async def _send_updates(self) -> None:
        async for first in self.updates_recv:
            self.unsent.append(first)
            # Whatever runners queued before this task woke goes along (tasks that end
            # together report together). No extra yield or delay: with few CPUs, a round
            # of latency here leaves a CPU idle.
            while True:
                try:
                    self.unsent.append(self.updates_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._flush_unsent()

    async def _flush_unsent(self) -> None:
        if not self.connected:
            if not self.reconnecting:
                self.unsent.clear()  # nobody to tell; finish-running tasks just drain
            return
        batch, self.unsent = self.unsent, []
        if not batch:
            return
        try:
            await self.peer.send({"op": "updates", "items": _on_the_wire(batch)})
        except SEND_ERRORS:
            self.connected = False
            if self.reconnecting:
                # Maybe delivered, maybe not: the server ignores a repeated report.
                self.unsent[:0] = batch

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat)
            if not self.connected:
                continue
            try:
                await self.peer.send({"op": "heartbeat"})
            except SEND_ERRORS:
                self.connected = False

    # --- reconnecting ----------------------------------------------------------------
    def _known_tasks(self) -> list[list[int]]:
        known = {(job, task): instance for (job, task), (instance, _s) in self.task_scopes.items()}
        for item in self.unsent:
            known.setdefault((item[1], item[2]), item[3])
        return [[job, task, instance] for (job, task), instance in sorted(known.items())]

    async def _reconnect(self) -> bool:
        log.warning("Connection to the server was lost; reconnecting (running tasks continue)")
        with trio.move_on_after(RECONNECT_LIMIT):
            delay = 0.1
            while True:
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                try:
                    endpoint = await self.load_endpoint()
                    resume = {
                        "worker_id": self.worker_id,
                        "server_uid": self.server_uid,
                        "known": self._known_tasks(),
                    }
                    peer, reply = await register(self.conn_nursery, endpoint, self.config, resume)
                except (
                    OSError,
                    HandshakeError,
                    HqError,
                    ConnectionClosed,
                    ProtocolError,
                    trio.TooSlowError,
                    trio.BrokenResourceError,
                ) as error:
                    log.debug("Reconnect attempt failed: %s", error)
                    continue
                self._cancel(reply.get("drop", ()))
                dropped = {(job, task) for job, task, _i in reply.get("drop", ())}
                self.unsent = [u for u in self.unsent if (u[1], u[2]) not in dropped]
                new_id = reply["worker"]["id"]
                if new_id != self.worker_id:
                    log.warning(
                        "The server did not know this worker; continuing as worker %d", new_id
                    )
                self.worker_id = new_id
                self.server_uid = reply["server_uid"]
                self.peer = peer
                self.connected = True
                log.info("Reconnected to the server as worker %d", new_id)
                await self._flush_unsent()
                return True
        return False

    # --- services --------------------------------------------------------------------
    async def _watch_signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(*WORKER_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                log.info("Received %s", signal.Signals(signum).name)
                if self.ending is not None:
                    # A second signal while finishing running tasks: kill them now.
                    self.task_nursery.cancel_scope.cancel()
                self.end(Ending("signal", 0, kill_tasks=True))

    async def _time_limit(self, seconds: float) -> None:
        await trio.sleep(seconds)
        log.info("Worker time limit reached")
        if self.connected:
            with trio.move_on_after(2):
                try:
                    await self.peer.send({"op": "goodbye", "reason": "TimeLimitReached"})
                except SEND_ERRORS:
                    pass
        self.end(Ending("time-limit", 0, kill_tasks=True))

    async def _close_connection(self) -> None:
        if self.connected:
            await self.peer.close("worker stopping")
            self.connected = False


async def run_worker(
    config: WorkerConfig,
    endpoint: Endpoint,
    load_endpoint: EndpointLoader,
    announce: Callable[[dict[str, Any]], None],
) -> int:
    """Connect, register, announce (print the info table), then serve until the end."""
    guardian = Guardian()
    try:
        async with trio.open_nursery() as connections:
            peer, reply = await register(connections, endpoint, config)
            announce(reply["worker"])
            runtime = WorkerRuntime(config, connections, peer, reply, guardian, load_endpoint)
            code = await runtime.run()
            connections.cancel_scope.cancel()
        return code
    finally:
        guardian.close()

"""The worker program: connection, task runners, heartbeats, and how it ends.

worker nursery
├── update sender     batches task state updates into one message
├── heartbeat         keeps the server from declaring us lost
├── signal watcher    SIGINT/SIGTERM/SIGTSTP → stop (exit 0)
├── time limit        the worker's own lifetime → goodbye (exit 0)
└── task nursery      one runner per task; cancelling a runner kills its process group
The receive loop runs in the main task. Whatever ends the worker (server's stop, time
limit, signal, server lost) goes through `end()`, which decides the exit code and
whether running tasks are killed or allowed to finish.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from hyperq.common.resources import Allocation
from hyperq.transport.codec import ProtocolError
from hyperq.transport.peer import PeerConnection
from hyperq.worker.config import WorkerConfig
from hyperq.worker.guardian import Guardian
from hyperq.worker.launcher import TaskLaunchSpec, TaskOutcome, run_task

log = logging.getLogger(__name__)

# Updates queued between task runners and the sender. The sender drains everything queued
# into one message, so this bounds memory, not throughput; runners wait when it is full.
UPDATE_QUEUE_SIZE = 4096
WORKER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGTSTP)


@dataclass
class Ending:
    reason: str  # "stopped", "idle-timeout", "time-limit", "signal", "server-lost"
    exit_code: int
    kill_tasks: bool


def hq_executable() -> str | None:
    """The absolute path of `hq` for tasks' $HQ."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "hq" and os.path.exists(argv0):
        return os.path.abspath(argv0)
    candidate = os.path.join(os.path.dirname(sys.executable), "hq")
    return candidate if os.path.exists(candidate) else None


class WorkerRuntime:
    def __init__(
        self,
        config: WorkerConfig,
        peer: PeerConnection,
        worker_id: int,
        server_uid: str,
        guardian: Guardian,
    ) -> None:
        self.guardian = guardian
        # Copying os.environ per task costs more than the rest of preparing it.
        self.base_env = dict(os.environ)
        self.config = config
        self.peer = peer
        self.worker_id = worker_id
        self.server_uid = server_uid
        self.hq = hq_executable()
        self.ending: Ending | None = None
        self.receive_scope = trio.CancelScope()
        self.task_scopes: dict[tuple[int, int], tuple[int, trio.CancelScope]] = {}
        self.updates_send, self.updates_recv = trio.open_memory_channel[list[Any]](
            UPDATE_QUEUE_SIZE
        )
        self.connected = True

    def end(self, ending: Ending) -> None:
        """The first reason to end wins; it stops the receive loop."""
        if self.ending is None:
            self.ending = ending
            log.info("Worker is stopping (%s)", ending.reason)
        self.receive_scope.cancel()

    async def run(self) -> int:
        async with trio.open_nursery() as services:
            services.start_soon(self._send_updates)
            services.start_soon(self._heartbeat)
            await services.start(self._watch_signals)
            if self.config.time_limit is not None:
                services.start_soon(self._time_limit, self.config.time_limit)
            async with trio.open_nursery() as tasks:
                self.task_nursery = tasks
                with self.receive_scope:
                    await self._receive_loop(tasks)
                ending = self.ending or Ending("server-lost", 1, True)
                if ending.reason == "server-lost":
                    log.error("Connection to the server was lost")
                if ending.kill_tasks:
                    tasks.cancel_scope.cancel()
                elif self.task_scopes:
                    log.info("Waiting for %d running task(s) to finish", len(self.task_scopes))
            await self._close_connection()
            services.cancel_scope.cancel()
        assert self.ending is not None or True
        return (self.ending or Ending("server-lost", 1, True)).exit_code

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
                policy = self.config.on_server_lost
                self.end(Ending("server-lost", 1, kill_tasks=policy == "stop"))
                return
            if not isinstance(message, dict):
                continue
            op = message.get("op")
            if op == "compute":
                self._start_tasks(tasks, message)
            elif op == "cancel":
                for job, task, instance in message.get("tasks", ()):
                    slot = self.task_scopes.get((job, task))
                    if slot is not None and slot[0] == instance:
                        slot[1].cancel()
            elif op == "stop":
                reason = message.get("reason", "stopped")
                self.end(Ending(reason, 0, kill_tasks=True))
                return

    def _start_tasks(self, tasks: trio.Nursery, message: dict[str, Any]) -> None:
        descs: dict[Any, dict[str, Any]] = message.get("descs", {})
        for item in message.get("tasks", ()):
            desc = descs[item["desc"]]
            spec = self._spec(item, desc)
            scope = trio.CancelScope()
            self.task_scopes[(spec.job_id, spec.task_id)] = (spec.instance, scope)
            tasks.start_soon(self._run_one, spec, scope)

    def _spec(self, item: dict[str, Any], desc: dict[str, Any]) -> TaskLaunchSpec:
        program = desc["program"]
        allocation = Allocation.from_wire(item["allocation"])
        stdout = program.get("stdout")
        stderr = program.get("stderr")
        whole = allocation.whole_cpu_count()
        return TaskLaunchSpec(
            job_id=item["job"],
            task_id=item["task"],
            instance=item["instance"],
            argv=list(program["args"]),
            env=dict(program.get("env", {})),
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
            cpus_whole=whole is not None,
            hq_executable=self.hq,
            base_env=self.base_env,
            on_process=self.guardian.track,
        )

    async def _run_one(self, spec: TaskLaunchSpec, scope: trio.CancelScope) -> None:
        key = (spec.job_id, spec.task_id)
        outcome: TaskOutcome | None = None
        try:
            with scope:
                await self.updates_send.send(["started", spec.job_id, spec.task_id, spec.instance])
                outcome = await run_task(spec)
        finally:
            slot = self.task_scopes.get(key)
            if slot is not None and slot[1] is scope:
                del self.task_scopes[key]
        if outcome is None:
            return  # canceled: the server already knows
        if outcome.error is None:
            update = ["finished", spec.job_id, spec.task_id, spec.instance]
        else:
            update = ["failed", spec.job_id, spec.task_id, spec.instance, outcome.error]
        with trio.CancelScope(shield=True):
            await self.updates_send.send(update)

    # --- services --------------------------------------------------------------------
    async def _send_updates(self) -> None:
        async for first in self.updates_recv:
            batch = [first]
            while True:
                try:
                    batch.append(self.updates_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            if not self.connected:
                continue  # nobody to tell; finish-running tasks just drain
            try:
                await self.peer.send({"op": "updates", "items": batch})
            except (
                ConnectionClosed,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
            ):
                self.connected = False

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat)
            if not self.connected:
                return
            try:
                await self.peer.send({"op": "heartbeat"})
            except (
                ConnectionClosed,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
            ):
                self.connected = False
                return

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
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        self.end(Ending("time-limit", 0, kill_tasks=True))

    async def _close_connection(self) -> None:
        if self.connected:
            await self.peer.close("worker stopping")
            self.connected = False


async def run_worker(
    config: WorkerConfig, host: str, port: int, key: bytes | None, announce: Any
) -> int:
    """Connect, register, announce (print the info table), then serve until the end."""
    guardian = Guardian()
    try:
        return await _serve(config, host, port, key, announce, guardian)
    finally:
        guardian.close()


async def _serve(
    config: WorkerConfig, host: str, port: int, key: bytes | None, announce: Any, guardian: Guardian
) -> int:
    from hyperq.worker.connection import open_server_connection

    async with open_server_connection(host, port, key) as peer:
        await peer.send({"op": "register", "configuration": config.to_json(), "pid": os.getpid()})
        reply = await peer.recv()
        if not isinstance(reply, dict) or "error" in reply:
            from hyperq.common.errors import HqError

            message = reply.get("error") if isinstance(reply, dict) else "invalid reply"
            raise HqError(f"Server refused the worker: {message}")
        worker = reply["worker"]
        announce(worker)
        runtime = WorkerRuntime(config, peer, worker["id"], reply["server_uid"], guardian)
        return await runtime.run()

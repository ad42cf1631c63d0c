"""The worker program: connection, task runners, heartbeats, and how it ends.

worker nursery
├── update sender     batches task state updates into one message
├── heartbeat         keeps the server from declaring us lost
├── signal watcher    SIGINT/SIGTERM/SIGTSTP → stop (exit 0)
├── time limit        the worker's own lifetime → goodbye (exit 0)
├── give back         returns tasks queued behind a running one for too long (queued)
└── task nursery      cancelling it kills every task's process group
    ├── reaper        waits for the tasks spawned where they arrive (launcher.launch)
    └── runners       one per task with stdin, or streaming into a file not yet open
                      (launcher.run_task)
The receive loop runs in the main task. Whatever ends the worker (server's stop, time
limit, signal, server lost) goes through `end()`, which decides the exit code and
whether running tasks are killed or allowed to finish. With `--on-server-lost
reconnect` a lost server is not an end: tasks keep running, their reports wait, and the
worker retries the server directory until the server is back or the limit runs out.

Nothing one task does, and nothing one message says, ends the worker: a message from
the server that does not fit its declared type (`schemas`) is logged and skipped, and
anything that goes wrong while preparing, spawning, watching or reaping one task ends
that task as failed (`internal error: ...` for our own bugs, traceback in the log).
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

from hyperq.common import queueing
from hyperq.common.access import Endpoint
from hyperq.common.errors import HqError
from hyperq.common.idrange import ordered_runs
from hyperq.common.notify import ACCESS_KEY_VAR
from hyperq.common.resources import Allocation
from hyperq.transport import schemas
from hyperq.transport.codec import ProtocolError
from hyperq.transport.link import LinkClosed
from hyperq.transport.peer import PeerConnection
from hyperq.transport.schemas import (
    Cancel,
    Compute,
    ComputeRows,
    ComputeRuns,
    OverviewRequest,
    SchemaError,
    Stop,
)
from hyperq.worker.config import WorkerConfig
from hyperq.worker.connection import connect_server
from hyperq.worker.guardian import Guardian, NoGuardian
from hyperq.worker.launcher import (
    LaunchTemplate,
    ProgramCache,
    Reaper,
    RunningTask,
    TaskLaunchSpec,
    TaskOutcome,
    can_launch,
    failed,
    fast_path_available,
    launch,
    run_task,
)
from hyperq.worker.notify import NotifyService
from hyperq.worker.queued import Queued, TaskQueue
from hyperq.worker.streaming import StreamFiles, attach_stream

log = logging.getLogger(__name__)

# Updates queued between task runners and the sender. The sender drains everything queued
# into one message, so this bounds memory, not throughput; runners wait when it is full.
UPDATE_QUEUE_SIZE = 4096
WORKER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGTSTP)
# A task's start is reported this long after it (or with its end, if that comes first):
# short tasks then cost the server one report instead of two. Workers that may
# reconnect report at once, so that a restored server knows what they run.
STARTED_REPORT_DELAY = 0.02
# Overviews while a dashboard watches a worker started without --overview-interval.
TEMPORARY_OVERVIEW_INTERVAL = 2.0
# `--on-server-lost reconnect`: how long the worker keeps trying, and how often.
RECONNECT_LIMIT = 600.0
RECONNECT_MAX_DELAY = 5.0
SEND_ERRORS = (
    LinkClosed,
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
        elif fields[0] != "returned":  # nothing happened to it, and nothing to date
            fields.append(age)
        wire.append(fields)
    return _as_ranges(wire)


def _as_ranges(wire: list[list[Any]]) -> list[list[Any]]:
    """Runs of consecutive `finished` reports of one job and instance, alike in their
    times, as one `finished-ids` item (schemas.FinishedIds) each: a zero-worker's batch
    of 128 tasks is one item, not 128. Order is kept, so the server sees the same."""
    out: list[list[Any]] = []
    index = 0
    count = len(wire)
    while index < count:
        item = wire[index]
        end = index + 1
        if item[0] == "finished":
            _kind, job, _task, instance, ran_for, age = item
            while end < count:
                other = wire[end]
                if (
                    other[0] != "finished"
                    or other[1] != job
                    or other[3] != instance
                    or other[4] != ran_for
                    or other[5] != age
                ):
                    break
                end += 1
        if end - index < 2:
            out.append(item)
        else:
            ids = [other[2] for other in wire[index:end]]
            out.append(["finished-ids", item[1], item[3], ordered_runs(ids), *item[4:]])
        index = end
    return out


def _internal_error(error: BaseException) -> str:
    return f"internal error: {type(error).__name__}: {error}"


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
    try:
        schemas.convert(reply, schemas.RegisterReply)
        if not isinstance(reply["worker"].get("id"), int):
            raise SchemaError("worker.id: expected an integer")
    except SchemaError as error:
        await peer.close()
        raise HqError(f"Server sent an invalid register reply: {error.message}") from None
    return peer, reply


class WorkerRuntime:
    def __init__(
        self,
        config: WorkerConfig,
        nursery: trio.Nursery,
        peer: PeerConnection,
        reply: dict[str, Any],
        guardian: Guardian | NoGuardian,
        load_endpoint: EndpointLoader,
        zero: bool = False,
    ) -> None:
        self.config = config
        # How long a task's end waits for the ends of other running tasks to share its
        # report (hyperq.common.queueing: 5 ms, 10 ms with at most two CPUs), as the
        # server expects: it queues tasks behind the running ones as deep as the same
        # rule says, so a CPU does not idle meanwhile. Nothing waits when nothing else
        # runs, so a lone task's end, and a job's last, go at once.
        cpus = config.resources.get("cpus") if config.resources is not None else None
        self.report_window = queueing.report_window(cpus.unit_count() if cpus else 0)
        # Zero-worker mode: every task finishes at once, nothing is spawned.
        self.zero = zero
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
        self._allocations: dict[str, tuple[dict[str, str], list[str], bool]] = {}
        self._templates: dict[tuple[Any, ...], tuple[schemas.LaunchDesc, LaunchTemplate]] = {}
        # Launch descriptions the server put in numbered slots (schemas.SlotDesc), for
        # this connection only: a new one starts with them all empty.
        self.desc_slots: dict[int, schemas.LaunchDesc] = {}
        self.stream_files = StreamFiles(self.server_uid, self.worker_id)
        self.ending: Ending | None = None
        self.receive_scope = trio.CancelScope()
        # Running tasks: (instance, what cancels it: a runner's scope or a RunningTask).
        self.task_scopes: dict[tuple[int, int], tuple[int, trio.CancelScope | RunningTask]] = {}
        # Never entered: holds a task's place in task_scopes while `_launch` spawns it.
        self._launching = trio.CancelScope()
        # Tasks given with `after`, not started yet: not in task_scopes nor task_cpus.
        self.queue = TaskQueue()
        self.reaper: Reaper | None = (
            None if zero or not fast_path_available() else Reaper(self._launched_ended)
        )
        # Updates that found the queue full, in order (`_queue`).
        self._overflow: list[list[Any]] = []
        self.task_nursery: trio.Nursery | None = None
        self.updates_send, self.updates_recv = trio.open_memory_channel[list[Any]](
            UPDATE_QUEUE_SIZE
        )
        self.unsent: list[list[Any]] = []
        # Set when the last running task has ended while a report waits for more ends.
        self._all_ended: trio.Event | None = None
        self.connected = True
        self.reconnecting = config.on_server_lost == "reconnect"
        # Running tasks whose start is not reported yet: key -> (instance, monotonic start).
        self.unreported: dict[tuple[int, int], tuple[int, float]] = {}
        self.started_delay = 0.0 if self.reconnecting else STARTED_REPORT_DELAY
        self._unreported_added = trio.Event()
        self.temporary_overviews: trio.CancelScope | None = None
        # CPU labels of each running task, for the dashboard's per-CPU view (overviews).
        self.task_cpus: dict[tuple[int, int], list[str]] = {}
        # The guardian removes the socket's directory also when this worker is killed.
        self.notifier = NotifyService(
            self._forward_notification, lambda path: self.guardian.remove_at_exit(path)
        )
        self.notify_tokens: dict[tuple[int, int], str] = {}

    def end(self, ending: Ending) -> None:
        """The first reason to end wins; it stops the receive loop (or reconnecting)."""
        if self.ending is None:
            self.ending = ending
            log.info("Worker is stopping (%s)", ending.reason)
        # Whatever the ending, a task not started yet never starts: the server makes
        # every task of a lost or stopped worker waiting again.
        self._drop_queued()
        self.receive_scope.cancel()

    async def run(self) -> int:
        async with trio.open_nursery() as services:
            services.start_soon(self._send_updates)
            services.start_soon(self._report_starts)
            services.start_soon(self._heartbeat)
            await services.start(self._watch_signals)
            if not self.zero:  # nothing runs that could notify
                await services.start(self.notifier.run)
            await services.start(self.stream_files.run)
            if self.config.time_limit is not None:
                services.start_soon(self._time_limit, self.config.time_limit)
            if self.config.overview_interval:
                services.start_soon(self._overview, self.config.overview_interval)
            if not self.zero:  # it finishes tasks in order, `after` or not
                services.start_soon(self.queue.give_back, self._give_back)
            async with trio.open_nursery() as tasks:
                self.task_nursery = tasks
                if self.reaper is not None:
                    tasks.start_soon(self.reaper.run)
                while True:
                    with self.receive_scope:
                        await self._receive_loop(tasks)
                    if self.ending is None and self.reconnecting:
                        # The new connection is told only what runs; the server places
                        # the queued tasks again, so they must never start here.
                        self._drop_queued()
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
                self._drop_queued()
                if ending.reason == "server-lost":
                    log.error("Connection to the server was lost")
                if ending.kill_tasks:
                    tasks.cancel_scope.cancel()
                elif self.task_scopes:
                    log.info("Waiting for %d running task(s) to finish", len(self.task_scopes))
                if self.reaper is not None:
                    self.reaper.close_when_idle()
            self.stream_files.close()
            self.programs.close()
            await self._close_connection()
            services.cancel_scope.cancel()
        return self.ending.exit_code if self.ending else 1

    # --- receiving -------------------------------------------------------------------
    async def _receive_loop(self, tasks: trio.Nursery) -> None:
        while True:
            try:
                message = await self.peer.recv()
            except (
                LinkClosed,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                ProtocolError,
            ) as error:
                if isinstance(error, ProtocolError):
                    # The server's frame itself was bad: say why the connection ends.
                    log.error("Closing the connection to the server: %s", error)
                else:
                    log.debug("Receive failed: %s", error)
                self.connected = False
                if not self.reconnecting:
                    policy = self.config.on_server_lost
                    self.end(Ending("server-lost", 1, kill_tasks=policy == "stop"))
                return
            if self.handle_message(tasks, message):
                return

    def handle_message(self, tasks: trio.Nursery, message: Any) -> bool:
        """One message from the server; True if it ends the receive loop (a stop)."""
        try:
            typed = schemas.convert_message(message, schemas.SERVER_MESSAGES)
        except SchemaError as error:
            log.warning("Skipping a message from the server: %s", error.message)
            # It may have filled slots that later messages name: rather than run what a
            # slot held before, tasks that name one fail until the server fills it again.
            self.desc_slots.clear()
            return False
        if isinstance(typed, Compute | ComputeRows | ComputeRuns):
            for defined in typed.slots:
                self.desc_slots[defined.slot] = defined.desc
            self._start_tasks(tasks, typed)
        elif isinstance(typed, Cancel):
            self._cancel(typed.tasks)
        elif isinstance(typed, OverviewRequest):
            self._temporary_overviews(typed.enabled)
        else:
            assert isinstance(typed, Stop)
            self.end(Ending(typed.reason, 0, kill_tasks=True))
            return True
        return False

    def _cancel(self, items: Any) -> None:
        for job, task, instance in items:
            key = (job, task)
            slot = self.task_scopes.get(key)
            if slot is not None:
                if slot[0] == instance:
                    slot[1].cancel()
                continue
            queued = self.queue.tasks.get(key)
            if queued is not None and queued.spec.instance == instance:
                # Dropped unreported, like a cancelled task that ran: the server knows.
                self.queue.drop(key)
                self._forget(queued)

    def _start_tasks(
        self, tasks: trio.Nursery, message: Compute | ComputeRows | ComputeRuns
    ) -> None:
        if self.zero:
            self._finish_at_once(tasks, message)
            return
        if self.task_nursery is None:
            self.task_nursery = tasks  # driven without `run` (tests)
        queued = self.queue.tasks
        for item in message.tasks:
            key = (item.job, item.task)
            if queued and key in queued:
                # Sent again (a server's slip): one copy only, never two.
                self._forget(self.queue.drop(key))
            ref = item.desc
            desc = self.desc_slots.get(ref) if type(ref) is int else message.descs.get(ref)
            try:
                if desc is None:
                    if type(ref) is int:
                        raise ValueError(f"the server named description slot {ref}, which is empty")
                    raise ValueError(f"the server sent no description {ref!r}")
                spec = self._spec(item, desc)
            except Exception as error:
                # The task cannot even be described: it fails, the worker goes on.
                log.exception("Cannot prepare task %d/%d", item.job, item.task)
                scope = trio.CancelScope()
                self.task_scopes[key] = (item.instance, scope)
                tasks.start_soon(self._fail_one, item, _internal_error(error), scope)
                continue
            after = item.after
            if after is not None:
                waits_for = (item.job, after)
                # Prepared now: the description's slot may hold another one by its start.
                if waits_for != key and (waits_for in self.task_scopes or waits_for in queued):
                    self.queue.add(spec, waits_for)
                    log.debug("Task %d/%d queued behind task %d", item.job, item.task, after)
                    continue
            self._begin(spec)

    def _begin(self, spec: TaskLaunchSpec) -> None:
        """Start a prepared task: spawned here if the reaper can wait for it, else by a
        runner task of its own."""
        key = (spec.job_id, spec.task_id)
        self.task_cpus[key] = spec.cpu_labels
        reaper = self.reaper
        if reaper is not None and reaper.running and can_launch(spec):
            # Held by a placeholder until the spawn (synchronous: nothing can cancel it
            # meanwhile), then by its RunningTask; a scope of its own costs more.
            self.task_scopes[key] = (spec.instance, self._launching)
            self._launch(reaper, spec, self._launching)
        else:
            scope = trio.CancelScope()
            self.task_scopes[key] = (spec.instance, scope)
            assert self.task_nursery is not None
            self.task_nursery.start_soon(self._run_one, spec, scope)

    def _release(self, key: tuple[int, int]) -> None:
        """`key` ended: the tasks queued behind it start now, on its allocation (in the
        same wake-up, so that its CPUs do not idle)."""
        for queued in self.queue.ended(key):
            if self.ending is None:
                self._begin(queued.spec)
            else:
                self._forget(queued)

    def _forget(self, queued: Queued | None) -> None:
        """A queued task that will not start: what preparing it registered goes."""
        if queued is None:
            return
        token = self.notify_tokens.pop(queued.key, None)
        if token is not None:
            self.notifier.revoke(token)

    def _drop_queued(self) -> None:
        for queued in self.queue.clear():
            self._forget(queued)

    def _give_back(self, queued: Queued) -> None:
        spec = queued.spec
        log.debug("Task %d/%d waited too long; giving it back", spec.job_id, spec.task_id)
        self._forget(queued)
        self._queue(["returned", spec.job_id, spec.task_id, spec.instance, time.monotonic()])

    def _launch(self, reaper: Reaper, spec: TaskLaunchSpec, scope: trio.CancelScope) -> None:
        """`_run_one` without a task of its own: spawn now, the reaper reports the end."""
        key = (spec.job_id, spec.task_id)
        self._task_started(key, spec.instance)
        started: RunningTask | TaskOutcome | None = None
        try:
            started = launch(spec)
            if isinstance(started, RunningTask):
                reaper.watch(started)
                slot = self.task_scopes.get(key)
                if slot is not None and slot[1] is scope:
                    self.task_scopes[key] = (spec.instance, started)
                return
            outcome = started
        except Exception as error:
            log.exception("Task %d/%d: internal error", spec.job_id, spec.task_id)
            outcome = failed(_internal_error(error))
            if isinstance(started, RunningTask):  # spawned, but nobody would wait for it
                if started.child is not None:
                    started.child.signal_group(signal.SIGKILL)
                started.release()
            if spec.stream is not None and spec.stream.opened:
                # Its pipes go (END may land after this report: our bug's price).
                spec.stream.finish(lambda _error: None)
        self._task_ended(key, spec.instance, scope, outcome)

    def _launched_ended(self, task: RunningTask, outcome: TaskOutcome | None) -> None:
        spec = task.spec
        try:
            self._task_ended((spec.job_id, spec.task_id), spec.instance, task, outcome)
        except Exception:
            log.exception("Task %d/%d: internal error on its end", spec.job_id, spec.task_id)

    def _finish_at_once(
        self, tasks: trio.Nursery, message: Compute | ComputeRows | ComputeRuns
    ) -> None:
        """Zero-worker mode: the message's tasks end now (the sender sends them together)."""
        now = time.monotonic()
        if isinstance(message, ComputeRuns):
            updates = [
                ["finished", run.job, task, run.instance, 0.0, now]
                for run in message.runs
                for task in range(run.task, run.task + len(run.labels) // run.per_task)
            ]
        else:
            updates = [["finished", t.job, t.task, t.instance, 0.0, now] for t in message.tasks]
        for index, update in enumerate(updates):
            try:
                self.updates_send.send_nowait(update)
            except trio.WouldBlock:
                tasks.start_soon(self._queue_updates, updates[index:])
                return

    async def _queue_updates(self, updates: list[list[Any]]) -> None:
        for update in updates:
            await self.updates_send.send(update)

    def _spec(
        self, item: schemas.LaunchItem | schemas.LaunchRow, desc: schemas.LaunchDesc
    ) -> TaskLaunchSpec:
        allocation_key = repr(item.allocation)
        env = desc.program.env
        access = self.notifier.register(item.job, item.task, item.instance)
        if access is not None:
            self.notify_tokens[(item.job, item.task)] = access[0]
            env = {**env, ACCESS_KEY_VAR: access[1]}
        template = self._template(desc, item, allocation_key, access is not None)
        shared = template.spec
        if shared is None:
            shared = template.spec = self._shared_spec(item, desc, allocation_key, template)
        spec = shared.for_task(item.job, item.task, item.instance, item.entry, item.nodes, env)
        return attach_stream(spec, desc.stream_dir, self.stream_files)

    def _shared_spec(
        self,
        item: schemas.LaunchItem | schemas.LaunchRow,
        desc: schemas.LaunchDesc,
        allocation_key: str,
        template: LaunchTemplate,
    ) -> TaskLaunchSpec:
        """What the tasks of `template` share (its key says they share all of it); the
        per-task fields are placeholders that `for_task` replaces."""
        program = desc.program
        resource_env, cpu_labels, cpus_whole = self._allocation(item.allocation, allocation_key)
        stdout = program.stdout
        stderr = program.stderr
        return TaskLaunchSpec(
            job_id=item.job,
            task_id=-1,
            instance=-1,
            # Shared with the description, the allocation cache and the template: a
            # launch only reads them.
            argv=program.args,
            env=program.env,
            cwd=program.cwd,
            stdout=stdout.path if stdout else None,
            stderr=stderr.path if stderr else None,
            stdout_rm_if_finished=bool(stdout and stdout.rm_if_finished),
            stderr_rm_if_finished=bool(stderr and stderr.rm_if_finished),
            submit_dir=desc.submit_dir,
            server_uid=self.server_uid,
            work_dir=self.config.work_dir,
            stdin=desc.stdin,
            task_dir=desc.task_dir,
            pin=desc.pin,
            time_limit=desc.time_limit,
            resource_env=resource_env,
            cpu_labels=cpu_labels,
            cpus_whole=cpus_whole,
            hq_executable=self.hq,
            base_env=self.base_env,
            on_process=self.guardian.track,
            programs=self.programs,
            template=template,
        )

    def _template(
        self,
        desc: schemas.LaunchDesc,
        item: schemas.LaunchItem | schemas.LaunchRow,
        allocation_key: str,
        access: bool,
    ) -> LaunchTemplate:
        """The launch template of the tasks like `item`: same description object, job,
        allocation, and with (or without) an array entry and an access key alike."""
        # The entry keeps `desc` alive, so no other description can take its id.
        key = (id(desc), item.job, allocation_key, item.entry is None, access)
        known = self._templates.get(key)
        if known is None:
            if len(self._templates) >= 256:
                self._templates.clear()
            template = LaunchTemplate(ACCESS_KEY_VAR if access else None)
            known = self._templates[key] = (desc, template)
        return known[1]

    def _allocation(self, wire: list[Any], key: str) -> tuple[dict[str, str], list[str], bool]:
        """What a task's allocation means for its launch: resource variables, CPU labels,
        whether it has whole CPUs. A worker sees the same few allocations again and
        again, so they are remembered by their text, `key` (parsing one costs ~20 µs)."""
        known = self._allocations.get(key)
        if known is None:
            allocation = Allocation.from_wire(wire)
            known = (
                allocation.env(),
                allocation.cpu_labels(),
                allocation.whole_cpu_count() is not None,
            )
            if len(self._allocations) >= 4096:
                self._allocations.clear()
            self._allocations[key] = known
        return known

    async def _run_one(self, spec: TaskLaunchSpec, scope: trio.CancelScope) -> None:
        key = (spec.job_id, spec.task_id)
        outcome: TaskOutcome | None = None
        try:
            with scope:
                self._task_started(key, spec.instance)
                try:
                    outcome = await run_task(spec)
                except Exception as error:
                    # Our bug, not the task's: it fails with the reason, the worker and
                    # its other tasks go on.
                    log.exception("Task %d/%d: internal error", spec.job_id, spec.task_id)
                    outcome = failed(_internal_error(error))
        finally:
            self._task_ended(key, spec.instance, scope, outcome)

    def _task_started(self, key: tuple[int, int], instance: int) -> None:
        if self.started_delay:
            self.unreported[key] = (instance, time.monotonic())
            self._unreported_added.set()
        else:
            self._queue(["started", *key, instance, 0.0, time.monotonic()])

    def _task_ended(
        self,
        key: tuple[int, int],
        instance: int,
        handle: trio.CancelScope | RunningTask,
        outcome: TaskOutcome | None,
    ) -> None:
        """A task's end: its bookkeeping goes, and its result is queued (None: it was
        cancelled, and the server already knows)."""
        slot = self.task_scopes.get(key)
        held = slot is not None and slot[1] is handle
        if held:
            del self.task_scopes[key]
            self.task_cpus.pop(key, None)
        unreported = self.unreported.pop(key, None)
        token = self.notify_tokens.pop(key, None)
        if token is not None:
            self.notifier.revoke(token)
        if outcome is not None:
            # Not reported as started yet: the end carries how long it ran, so that the
            # server records the start at the right moment.
            ended = time.monotonic()
            ran_for = ended - unreported[1] if unreported is not None else None
            if outcome.error is None:
                self._queue(["finished", *key, instance, ran_for, ended])
            else:
                self._queue(["failed", *key, instance, outcome.error, ran_for, ended])
        if held and self.queue.behind:
            self._release(key)
        self._wake_if_all_ended()

    def _queue(self, update: list[Any]) -> None:
        """Queue an update for the sender without waiting; when the queue is full, a
        task of the nursery queues the overflow in order as room frees up."""
        if not self._overflow:
            try:
                self.updates_send.send_nowait(update)
                return
            except trio.WouldBlock:
                pass
        self._overflow.append(update)
        if len(self._overflow) == 1:
            assert self.task_nursery is not None
            self.task_nursery.start_soon(self._drain_overflow)

    async def _drain_overflow(self) -> None:
        with trio.CancelScope(shield=True):
            while self._overflow:
                await self.updates_send.send(self._overflow[0])
                del self._overflow[0]

    async def _fail_one(
        self,
        item: schemas.LaunchItem | schemas.LaunchRow,
        error: str,
        scope: trio.CancelScope,
    ) -> None:
        """Report a task that could not be prepared as failed (it never ran)."""
        key = (item.job, item.task)
        slot = self.task_scopes.get(key)
        held = slot is not None and slot[1] is scope
        if held:
            del self.task_scopes[key]
        with trio.CancelScope(shield=True):
            update = ["failed", item.job, item.task, item.instance, error, None]
            await self.updates_send.send([*update, time.monotonic()])
        if held:
            self._release(key)  # after its end, as `_task_ended` reports them
        self._wake_if_all_ended()

    def _wake_if_all_ended(self) -> None:
        """Nothing runs any more: a report waiting for more ends goes now."""
        if not self.task_scopes and self._all_ended is not None:
            self._all_ended.set()

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
            # together report together).
            self._take_queued_updates()
            if self.report_window and self.task_scopes:
                # Other tasks still run: wait a moment for their ends to go along. One
                # report (and one `compute` back) for several short tasks is far less
                # CPU on both sides; the freed CPUs idle at most this long. Nothing
                # waits when nothing else runs (a lone task's end goes at once), and
                # the wait ends when the last running task has ended. The updates are
                # taken after it in one go: a wake-up per update cost more than a task.
                self._all_ended = trio.Event()
                with trio.move_on_after(self.report_window):
                    await self._all_ended.wait()
                self._all_ended = None
                self._take_queued_updates()
            await self._flush_unsent()

    def _take_queued_updates(self) -> None:
        while True:
            try:
                self.unsent.append(self.updates_recv.receive_nowait())
            except trio.WouldBlock:
                return

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
                # Given back while away: the server places every task it is not told of
                # (the queued ones were dropped) again, so these need not go.
                self.unsent = [u for u in self.unsent if u[0] != "returned"]
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
                    HqError,
                    LinkClosed,
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
                self.desc_slots.clear()
                self._templates.clear()  # their specs hold the server's uid
                self.connected = True
                log.info("Reconnected to the server as worker %d", new_id)
                # The new connection says again whether a dashboard watches.
                self._temporary_overviews(False)
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
                if self.ending is not None and self.task_nursery is not None:
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

    def _temporary_overviews(self, enabled: bool) -> None:
        """A dashboard watches (or stopped watching): without an interval of our own,
        send overviews every TEMPORARY_OVERVIEW_INTERVAL meanwhile."""
        if self.config.overview_interval:
            return
        if self.temporary_overviews is not None:
            self.temporary_overviews.cancel()
            self.temporary_overviews = None
        if enabled:
            scope = trio.CancelScope()
            self.temporary_overviews = scope

            async def run() -> None:
                with scope:
                    await self._overview(TEMPORARY_OVERVIEW_INTERVAL)

            self.conn_nursery.start_soon(run)

    async def _overview(self, interval: float) -> None:
        """Every interval (the first one interval after start) one hardware overview."""
        from hyperq.common.resources import GPUS_AMD, GPUS_NVIDIA
        from hyperq.worker.hwmonitor import HwMonitor, overview_state, sample_proc

        names = self.config.resources.names()
        monitor = HwMonitor(nvidia=GPUS_NVIDIA in names, amd=GPUS_AMD in names)
        # The baseline, so that the first overview's CPU usage covers its own interval.
        monitor.previous = (await trio.to_thread.run_sync(sample_proc)).cpu
        next_at = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_at)
            next_at = max(next_at + interval, trio.current_time())
            state, cost = await overview_state(monitor)
            log.debug("Overview took %.3f ms of CPU", cost * 1000)
            if not self.connected:
                continue
            try:
                tasks = [[job, task, cpus] for (job, task), cpus in self.task_cpus.items()]
                await self.peer.send({"op": "overview", "hw_state": state, "tasks": tasks})
            except SEND_ERRORS:
                self.connected = False

    async def _close_connection(self) -> None:
        if self.connected:
            await self.peer.close("worker stopping")
            self.connected = False


async def run_worker(
    config: WorkerConfig,
    endpoint: Endpoint,
    load_endpoint: EndpointLoader,
    announce: Callable[[dict[str, Any]], None],
    zero: bool = False,
) -> int:
    """Connect, register, announce (print the info table), then serve until the end.

    `zero`: finish every task at once without running it (HQ_ZERO_WORKER, benchmarks)."""
    guardian = NoGuardian() if zero else Guardian()
    try:
        async with trio.open_nursery() as connections:
            peer, reply = await register(connections, endpoint, config)
            announce(reply["worker"])
            if zero:
                log.warning(
                    "Zero-worker mode (HQ_ZERO_WORKER): every task is reported finished "
                    "at once and nothing is run"
                )
            runtime = WorkerRuntime(
                config, connections, peer, reply, guardian, load_endpoint, zero=zero
            )
            code = await runtime.run()
            connections.cancel_scope.cancel()
        return code
    finally:
        guardian.close()

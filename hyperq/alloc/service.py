"""The allocator: a service in the server's nursery tree (alloc.md §2, §5, §6).

It sleeps until something changes (a submit, a worker from an allocation connecting or
leaving, a queue added or resumed) or one of its timers fires, then runs a scheduling
pass: the pure decisions of `decisions` say how many allocations of what size each
queue may submit, and this service carries them out with the manager tools
(`managers`), one subprocess at a time, each with a timeout. Durable facts go into the
server model as journal events through the host's `commit`; the live part (limiters,
pause, status error counters) lives here.

It never imports the server's edge: the server hands it a `Host` (its core).
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import trio

from hyperq.alloc import decisions, managers
from hyperq.alloc.queue import (
    ENDED,
    QUEUED,
    RUNNING,
    Allocation,
    ParamError,
    Queue,
    QueueParams,
)
from hyperq.alloc.scripts import script, worker_command
from hyperq.common.errors import HqError
from hyperq.server.model.events import (
    AutoallocAllocationFinished,
    AutoallocAllocationQueued,
    AutoallocAllocationStarted,
    AutoallocQueueCreated,
    AutoallocQueueRemoved,
    Event,
)
from hyperq.server.model.state import Model

log = logging.getLogger(__name__)

# Directories of failed submissions kept for the user to look at (the newest ones).
KEEP_FAILED_DIRS = 20


class Host(Protocol):
    """What the allocator needs from the server (its core)."""

    model: Model

    def commit(self, events: Iterable[Event]) -> None: ...

    async def durable(self) -> None: ...

    def now(self) -> float: ...

    @property
    def changed(self) -> Any: ...


def _env_ms(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return int(raw) / 1000 if raw else default
    except ValueError:
        return default


class Timing:
    """alloc.md §5.1; tests set the intervals to 100 ms through the environment."""

    def __init__(self) -> None:
        self.tick = _env_ms("HQ_AUTOALLOC_SCHEDULE_TICK_INTERVAL_MS", 5.0)
        self.max_delay = _env_ms("HQ_AUTOALLOC_MAX_SCHEDULE_DELAY_MS", 30.0)
        self.refresh = _env_ms("HQ_AUTOALLOC_REFRESH_INTERVAL_MS", 30 * 60.0)
        raw = os.environ.get("HQ_AUTOALLOC_MAX_ALLOCATION_FAILS")
        try:
            self.max_alloc_fails = int(raw) if raw else 3
        except ValueError:
            self.max_alloc_fails = 3
        self.command_timeout = managers.command_timeout()


def hq_command() -> str:
    """How an allocation starts this very `hq`: its absolute path, or the interpreter
    with `-m hyperq` when the server runs as a module."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or argv0.endswith("__main__.py") or argv0 == "-m":
        return f"{shlex.quote(sys.executable)} -m hyperq"
    path = argv0 if os.sep in argv0 else (shutil.which(argv0) or argv0)
    return shlex.quote(os.path.abspath(path))


class SubmitError(HqError):
    """A submission failed; `script_path` is set when a script was written."""

    def __init__(self, message: str, script_path: str | None = None) -> None:
        super().__init__(message)
        self.script_path = script_path


class Allocator:
    def __init__(self, host: Host, server_dir: str) -> None:
        self.host = host
        self.server_dir = server_dir
        self.timing = Timing()
        self.hq = hq_command()
        self.queues: dict[int, Queue] = {}
        self.owner: dict[str, int] = {}  # allocation id → queue id
        self.next_queue_id = 1
        self._lock = trio.Lock()
        self._wanted = False
        self._activity = trio.Event()
        self._queue_added = trio.Event()
        self._tracked: dict[int, str] = {}  # worker id → allocation id
        self._seen_worker = 0
        self._failed_dirs: deque[str] = deque()
        self._base: str | None = None

    # --- where allocations live --------------------------------------------------------
    @property
    def base(self) -> str:
        """The server's run directory (what `hq-current` points at), symlinks resolved."""
        if self._base is None:
            link = os.path.join(self.server_dir, "hq-current")
            self._base = os.path.realpath(link if os.path.isdir(link) else self.server_dir)
        return self._base

    # --- restore ----------------------------------------------------------------------
    def restore(self) -> None:
        """Queues and unfinished allocations from the journal (alloc.md §6)."""
        records = self.host.model.autoalloc
        self.next_queue_id = records.max_queue_id + 1
        for queue_id, record in sorted(records.queues.items()):
            try:
                params = QueueParams.from_wire(record.params)
            except ParamError as error:
                log.warning("Allocation queue %d cannot be restored: %s", queue_id, error)
                continue
            self.queues[queue_id] = Queue(queue_id, params, known_resources=record.known_resources)
        for allocation_id, record in records.allocations.items():
            queue = self.queues.get(record.queue_id)
            if queue is None:
                continue
            # Beyond the original: an allocation still in the batch system is tracked
            # again; the first status refresh tells whether it is still there.
            allocation = Allocation(
                allocation_id,
                queue.id,
                record.worker_count,
                record.queued_at,
                workdir="",
                state=RUNNING if record.started_at is not None else QUEUED,
                started_at=record.started_at,
            )
            queue.allocations[allocation_id] = allocation
            self.owner[allocation_id] = queue.id
            log.info("Allocation %s of queue %d restored", allocation_id, queue.id)
        self._seen_worker = self.host.model.max_worker_id

    # --- the service ------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.restore()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_changes)
            task_status.started()
            await self._timers()

    def request_pass(self) -> None:
        self._wanted = True
        self._activity.set()

    async def _watch_changes(self) -> None:
        while True:
            if not self.queues:
                # A server without queues pays nothing per change: wait for the first
                # queue, and from then on look only at workers that connect later.
                self._queue_added = trio.Event()
                await self._queue_added.wait()
                self._seen_worker = self.host.model.max_worker_id
                continue
            await self.host.changed.wait()
            self._sync_workers()
            if self.host.model.ready:
                self.request_pass()

    async def _timers(self) -> None:
        last_pass = -math.inf
        next_refresh = trio.current_time()
        while True:
            if not any(not q.paused for q in self.queues.values()):
                # Nothing to do (and, as in the original, nothing refreshed) until a
                # queue is added or resumed.
                self._activity = trio.Event()
                await self._activity.wait()
                continue
            await trio.sleep(self.timing.tick)
            now = trio.current_time()
            if now >= next_refresh:
                async with self._lock:
                    await self.refresh()
                next_refresh = now + self.timing.refresh
            if self._wanted or now - last_pass >= self.timing.max_delay:
                self._wanted = False
                last_pass = now
                async with self._lock:
                    await self.scheduling_pass()

    # --- workers of allocations -------------------------------------------------------
    def _sync_workers(self) -> None:
        model = self.host.model
        for worker_id in range(self._seen_worker + 1, model.max_worker_id + 1):
            worker = model.workers.get(worker_id)
            if worker is not None:
                self._worker_connected(worker_id, worker.configuration)
        self._seen_worker = max(self._seen_worker, model.max_worker_id)
        for worker_id, allocation_id in list(self._tracked.items()):
            worker = model.workers.get(worker_id)
            if worker is None or worker.lost_reason is not None:
                del self._tracked[worker_id]
                ended = worker.ended_at if worker and worker.ended_at else self.host.now()
                lifetime = ended - worker.started_at if worker else 0.0
                reason = worker.lost_reason if worker and worker.lost_reason else "ConnectionLost"
                self._worker_lost(worker_id, allocation_id, reason, lifetime)

    def _find(self, allocation_id: str) -> tuple[Queue, Allocation] | None:
        queue = self.queues.get(self.owner.get(allocation_id, -1))
        if queue is None or allocation_id not in queue.allocations:
            return None
        return queue, queue.allocations[allocation_id]

    def _worker_connected(self, worker_id: int, configuration: Any) -> None:
        allocation_id = configuration.get("manager_job_id")
        if not configuration.get("manager") or not isinstance(allocation_id, str):
            return
        found = self._find(allocation_id)
        if found is None:
            log.warning(
                "Worker %d connected from an unknown allocation %s", worker_id, allocation_id
            )
            return
        queue, allocation = found
        log.info("Worker %d connected from allocation %s", worker_id, allocation_id)
        queue.known_resources = decisions.known_resources_of(configuration)
        self._tracked[worker_id] = allocation_id
        self._apply(
            queue, allocation, decisions.worker_connected(allocation, worker_id, self.host.now())
        )
        self.request_pass()

    def _worker_lost(
        self, worker_id: int, allocation_id: str, reason: str, lifetime: float
    ) -> None:
        found = self._find(allocation_id)
        if found is None:
            return
        queue, allocation = found
        change = decisions.worker_lost(allocation, reason, lifetime, self.host.now())
        self._apply(queue, allocation, change)
        self.request_pass()

    def _apply(self, queue: Queue, allocation: Allocation, change: decisions.Change) -> None:
        now = self.host.now()
        if change.warning:
            log.warning("%s", change.warning)
        if change.started:
            self.host.commit([AutoallocAllocationStarted(now, queue.id, allocation.id)])
        if change.finished:
            self.host.commit([AutoallocAllocationFinished(now, queue.id, allocation.id)])
        if change.outcome == "fail":
            queue.limiter.allocation_failed()
        elif change.outcome == "success":
            queue.limiter.allocation_succeeded()

    # --- scheduling -------------------------------------------------------------------
    def _auto_pause(self) -> None:
        for queue in self.queues.values():
            if queue.paused:
                continue
            reason = queue.limiter.pause_reason(queue.id, self.timing.max_alloc_fails)
            if reason is not None:
                log.error("%s", reason)
                queue.paused = True

    async def scheduling_pass(self) -> None:
        self._auto_pause()
        active = [q for _, q in sorted(self.queues.items()) if not q.paused]
        if not any(q.has_space() for q in active):
            return
        demands = decisions.demand(self.host.model, active)
        now = trio.current_time()
        for queue in active:
            if queue.id not in self.queues:
                continue
            need = demands[queue.id]
            if need.sn_workers == 0 and need.mn_allocs == 0:
                continue
            sizes = decisions.permit(queue, need)
            if not sizes or not queue.limiter.may_submit(now):
                continue
            queue.limiter.attempt(now)
            for workers in sizes:
                try:
                    allocation = await self._submit(queue, workers)
                except SubmitError as error:
                    log.error("Failed to submit allocation into queue %d: %s", queue.id, error)
                    queue.limiter.submit_failed()
                    break
                log.info(
                    "Queued %d worker(s) into queue %d: allocation ID %s",
                    workers,
                    queue.id,
                    allocation.id,
                )
                queue.allocations[allocation.id] = allocation
                self.owner[allocation.id] = queue.id
                self.host.commit(
                    [
                        AutoallocAllocationQueued(
                            allocation.queued_at, queue.id, allocation.id, workers
                        )
                    ]
                )
                queue.limiter.submit_succeeded()
                # A job in the batch system that the journal does not know of would be
                # orphaned by a crash: one fsync per submission is cheap.
                await self.host.durable()
        self._auto_pause()

    async def _submit(self, queue: Queue, workers: int) -> Allocation:
        queue.counter += 1
        number = queue.counter
        workdir = os.path.join(self.base, "autoalloc", queue.dir_name(), f"{number:03}")
        try:
            await trio.to_thread.run_sync(lambda: os.makedirs(workdir, exist_ok=True))
        except OSError as error:
            raise SubmitError(str(error)) from None
        try:
            job_id = await self._submit_in(
                queue.params, queue.job_name(number), workdir, workers, trial=False
            )
        except SubmitError:
            self._failed_dirs.append(workdir)
            raise
        return Allocation(job_id, queue.id, workers, self.host.now(), workdir)

    async def _submit_in(
        self, params: QueueParams, job_name: str, workdir: str, workers: int, trial: bool
    ) -> str:
        command = worker_command(params, self.hq, self.base, os.environ.get("RUST_LOG"))
        text = script(params, workers, job_name, workdir, command, trial)
        path = os.path.join(workdir, "hq-submit.sh")

        def write() -> None:
            with open(path, "w") as file:
                file.write(text)

        try:
            await trio.to_thread.run_sync(write)
        except OSError as error:
            raise SubmitError(str(error)) from None
        try:
            job_id = await managers.submit(
                params.manager, path, workdir, self.timing.command_timeout
            )
        except managers.ManagerError as error:
            raise SubmitError(error.message, path) from None

        def write_id() -> None:
            with open(os.path.join(workdir, "jobid"), "w") as file:
                file.write(job_id)

        try:
            await trio.to_thread.run_sync(write_id)
        except OSError:
            pass  # the job exists; the id file is only for the user
        return job_id

    # --- status refresh ---------------------------------------------------------------
    async def refresh(self) -> None:
        for queue in list(self.queues.values()):
            active = queue.active()
            if not active:
                continue
            statuses = await managers.statuses(
                queue.params.manager, active, self.timing.command_timeout
            )
            if queue.id not in self.queues:
                continue
            now = self.host.now()
            for allocation in active:
                status = statuses.get(allocation.id)
                if isinstance(status, decisions.Status):
                    change = decisions.status_changed(allocation, status, now)
                else:
                    log.warning(
                        "Cannot get the status of allocation %s: %s",
                        allocation.id,
                        status.message if isinstance(status, HqError) else "no answer",
                    )
                    change = decisions.status_failed(allocation, now)
                self._apply(queue, allocation, change)
                if change.finished:
                    self.request_pass()
        await self._prune_failed_dirs()

    async def _prune_failed_dirs(self) -> None:
        while len(self._failed_dirs) > KEEP_FAILED_DIRS:
            path = self._failed_dirs.popleft()
            await trio.to_thread.run_sync(lambda p=path: shutil.rmtree(p, ignore_errors=True))

    # --- stopping ---------------------------------------------------------------------
    async def _cancel(self, queue: Queue, allocation: Allocation) -> None:
        try:
            await managers.cancel(
                queue.params.manager, allocation.id, allocation.workdir, self.timing.command_timeout
            )
            log.info("Allocation %s was removed", allocation.id)
        except managers.ManagerError as error:
            log.error("Failed to remove allocation %s: %s", allocation.id, error.message)

    async def shutdown(self) -> None:
        """Server stop: cancel every queued and running allocation (paused queues too).

        Not under the lock: a pass stuck on a hanging tool must not use up the stop's
        grace period."""
        for queue in list(self.queues.values()):
            for allocation in queue.active():
                await self._cancel(queue, allocation)

    # --- client requests --------------------------------------------------------------
    async def add_queue(self, params: QueueParams, dry_run: bool) -> int:
        if dry_run:
            await self.trial(params)
        queue_id = self.next_queue_id
        self.next_queue_id += 1
        self.queues[queue_id] = Queue(queue_id, params)
        self._queue_added.set()
        self.host.commit([AutoallocQueueCreated(self.host.now(), queue_id, params.to_wire())])
        await self.host.durable()
        self.request_pass()
        return queue_id

    async def trial(self, params: QueueParams) -> None:
        """Submit one held/cancelled allocation to see that submitting works (§2.3)."""
        try:
            workdir = await trio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="hq"))
        except OSError as error:
            raise HqError(f"Could not submit allocation: {error}") from None
        job_name = f"{params.name}-1" if params.name else "hq-0-1"
        try:
            job_id = await self._submit_in(
                params, job_name, workdir, params.max_workers_per_alloc, trial=True
            )
        except SubmitError as error:
            message = f"Could not submit allocation: {error.message}"
            if error.script_path:
                message += f"\nYou can find the submitted script at {error.script_path}"
            raise HqError(message) from None
        try:
            await managers.cancel(params.manager, job_id, workdir, self.timing.command_timeout)
        except managers.ManagerError as error:
            raise HqError(f"Could not cancel allocation {job_id}: {error.message}") from None
        await trio.to_thread.run_sync(lambda: shutil.rmtree(workdir, ignore_errors=True))

    def queue(self, queue_id: int) -> Queue | None:
        return self.queues.get(queue_id)

    async def remove_queue(self, queue_id: int, force: bool) -> None:
        async with self._lock:
            queue = self.queues.get(queue_id)
            if queue is None:
                raise HqError("Allocation queue not found")
            if not force and any(a.state == RUNNING for a in queue.allocations.values()):
                raise HqError(
                    "Allocation queue has running jobs, so it will not be removed. "
                    "Use `--force` if you want to remove the queue anyway"
                )
            for allocation in queue.active():
                await self._cancel(queue, allocation)
            del self.queues[queue_id]
            for allocation_id in queue.allocations:
                self.owner.pop(allocation_id, None)
            self.host.commit([AutoallocQueueRemoved(self.host.now(), queue_id)])
            await self.host.durable()

    def pause(self, queue_id: int) -> None:
        queue = self.queues.get(queue_id)
        if queue is None:
            raise HqError(f"Queue {queue_id} that should have been paused was not found")
        queue.paused = True

    def resume(self, queue_id: int) -> None:
        queue = self.queues.get(queue_id)
        if queue is None:
            raise HqError(f"Queue {queue_id} that should have been resumed was not found")
        queue.paused = False
        self.request_pass()

    def find_allocation(self, allocation_id: str) -> Allocation | None:
        for queue in self.queues.values():
            if allocation_id in queue.allocations:
                return queue.allocations[allocation_id]
        return None


# ---------------------------------------------------------------------------------------
# Client ops (one handler per op; every field checked, errors name the field)

Op = Callable[[dict[str, Any]], Awaitable[Any]]


def _int_field(request: dict[str, Any], name: str) -> int:
    value = request.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HqError(f"malformed request: field {name}")
    return value


def _bool_field(request: dict[str, Any], name: str) -> bool:
    value = request.get(name, False)
    if not isinstance(value, bool):
        raise HqError(f"malformed request: field {name}")
    return value


def _str_field(request: dict[str, Any], name: str, allowed: tuple[str, ...] | None = None) -> str:
    value = request.get(name)
    if not isinstance(value, str) or (allowed is not None and value not in allowed):
        raise HqError(f"malformed request: field {name}")
    return value


def _params(request: dict[str, Any]) -> QueueParams:
    try:
        return QueueParams.from_wire(request.get("params"))
    except ParamError as error:
        raise HqError(f"malformed request: {error}") from None


def queue_wire(queue: Queue) -> dict[str, Any]:
    return {
        "id": queue.id,
        "state": "Paused" if queue.paused else "Active",
        "params": queue.params.to_wire(),
        "known_worker_resources": queue.known_resources,
    }


def allocation_wire(allocation: Allocation) -> dict[str, Any]:
    return {
        "id": allocation.id,
        "status": allocation.status(),
        "target_worker_count": allocation.target_worker_count,
        "queued_at": allocation.queued_at,
        "started_at": allocation.started_at,
        "ended_at": allocation.ended_at,
        "workdir": allocation.workdir,
        # Ended by the batch system's word, not by its workers: no start/end in JSON.
        "ended_unexpectedly": allocation.state == ENDED,
    }


def client_ops(allocator: Allocator) -> dict[str, Op]:
    async def add(request: dict[str, Any]) -> Any:
        params = _params(request)
        dry_run = not _bool_field(request, "no_dry_run")
        return {"id": await allocator.add_queue(params, dry_run), "trial": dry_run}

    async def dry_run(request: dict[str, Any]) -> Any:
        await allocator.trial(_params(request))
        return {}

    async def list_queues(request: dict[str, Any]) -> Any:
        return [queue_wire(q) for _, q in sorted(allocator.queues.items())]

    async def info(request: dict[str, Any]) -> Any:
        queue_id = _int_field(request, "queue_id")
        queue = allocator.queue(queue_id)
        if queue is None:
            raise HqError(f"Queue {queue_id} not found")
        return [allocation_wire(a) for _, a in sorted(queue.allocations.items())]

    async def log_path(request: dict[str, Any]) -> Any:
        allocation_id = _str_field(request, "allocation_id")
        _str_field(request, "stream", ("stdout", "stderr"))
        allocation = allocator.find_allocation(allocation_id)
        if allocation is None:
            raise HqError(f"Allocation {allocation_id} not found")
        return {"workdir": allocation.workdir}

    async def pause(request: dict[str, Any]) -> Any:
        allocator.pause(_int_field(request, "queue_id"))
        await allocator.host.durable()
        return {}

    async def resume(request: dict[str, Any]) -> Any:
        allocator.resume(_int_field(request, "queue_id"))
        await allocator.host.durable()
        return {}

    async def remove(request: dict[str, Any]) -> Any:
        await allocator.remove_queue(_int_field(request, "queue_id"), _bool_field(request, "force"))
        return {}

    return {
        "alloc-add": add,
        "alloc-dry-run": dry_run,
        "alloc-list": list_queues,
        "alloc-info": info,
        "alloc-log": log_path,
        "alloc-pause": pause,
        "alloc-resume": resume,
        "alloc-remove": remove,
    }


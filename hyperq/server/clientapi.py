"""Answers client requests: one handler task per client connection.

A request is a map with an `op`; the reply is `{"ok": value}` or `{"error": message}`.
Each op has a declared type (`hyperq.transport.schemas.CLIENT_REQUESTS`): the request is
converted to it before its handler runs, so a value of the wrong shape costs one error
reply naming the field, and handlers work with typed values. Submits are then checked
against the CLI's own rules (`submitcheck`), since the CLI is not the only client.
Requests that change state call a pure model command and commit its events through the
core; queries read model views and shape them with `replies`. Long answers yield to the
event loop between chunks, so one large job never stalls heartbeats. A malformed
request gets an error reply, never an exception that escapes the handler.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from hyperq.common.errors import HqError, describe_exception
from hyperq.server.core import ServerCore
from hyperq.server.graphapi import job_notifications, submit_graph, task_explain
from hyperq.server.info import ServerInfo
from hyperq.server.lifecycle import StopRequest
from hyperq.server.model.jobs import JobState, TaskState
from hyperq.server.model.state import NotFound, WrongState
from hyperq.server.model.taskids import TaskIdSet, ids_to_items
from hyperq.server.replies import (
    job_detail_wire,
    job_info_wire,
    task_info_wire,
    task_wire,
    worker_wire,
)
from hyperq.server.submitcheck import check_items, check_job_open, check_submit
from hyperq.transport import schemas
from hyperq.transport.peer import PeerConnection
from hyperq.transport.schemas import SchemaError, Selector

log = logging.getLogger(__name__)

# A handler gets its op's typed request (schemas.CLIENT_REQUESTS); an op without a
# declared type there gets the raw map and must check every field itself.
Op = Callable[[Any], Awaitable[Any]]
StreamOp = Callable[[Any, PeerConnection], Awaitable[None]]

# Items handled between yields to the event loop in long answers.
CHUNK = 5_000
# A selector range larger than this is matched against existing IDs only (no per-ID
# "not found" lines for a million missing IDs).
MAX_EXPANDED_IDS = 100_000
# Progress streams send at most this many updates per second.
PROGRESS_RATE = 10


class RequestError(HqError):
    """A request we refuse; its message goes back to the client as the error."""


def _id_set(ranges: list[schemas.IdItem] | None, field: str = "selector.ranges") -> TaskIdSet:
    """A client's ID ranges as the model's compact ID set (never expanded)."""
    if ranges is None:
        raise RequestError("malformed selector")
    # Overlapping ranges are expanded by the ID set: bounded before it sees them.
    check_items(field, ranges)
    try:
        return TaskIdSet.build(ranges)
    except (TypeError, ValueError):
        raise RequestError("malformed selector") from None


def parse_request(op: str, request: Any) -> Any:
    """The typed request of `op` (SchemaError if it does not fit); raw if `op` has none."""
    kind = schemas.CLIENT_REQUESTS.get(op) or schemas.ALLOC_REQUESTS.get(op)
    if kind is None:
        return request
    return schemas.convert(request, kind)


def select_ids(
    selector: Selector, existing: list[int], last: int | None, all_ids: list[int]
) -> list[int]:
    """IDs named by a selector: `last`, `all` (the command's own meaning) or ranges.

    Missing IDs are kept (the command reports them) unless the range is huge.
    """
    if selector.kind == "last":
        return [] if last is None or last == 0 else [last]
    if selector.kind == "all":
        return list(all_ids)
    ids = _id_set(selector.ranges)
    if len(ids) <= MAX_EXPANDED_IDS:
        return list(ids)
    return [i for i in existing if i in ids]


def _states(values: list[str] | None, enum: type[TaskState] | type[JobState]) -> list[Any] | None:
    if values is None:
        return None
    try:
        return [enum(v) for v in values]
    except ValueError as error:
        raise RequestError(f"unknown state: {error}") from None


def _plain(handler: Op) -> Op:
    async def op(request: Any) -> Any:
        return await handler(schemas.to_wire(request))

    return op


class ClientApi:
    def __init__(self, stop: StopRequest, core: ServerCore, info: ServerInfo) -> None:
        self.stop = stop
        self.core = core
        self.info = info
        self.ops: dict[str, Op] = {
            "server-info": self._server_info,
            "server-stop": self._server_stop,
            "debug-dump": self._debug_dump,
            "submit": self._submit,
            "job-open": self._job_open,
            "job-close": self._job_close,
            "job-list": self._job_list,
            "job-summary": self._job_summary,
            "job-info": self._job_info,
            "job-cancel": self._job_cancel,
            "job-forget": self._job_forget,
            "job-wait": self._job_wait,
            "job-task-ids": self._job_task_ids,
            "task-list": self._task_list,
            "task-info": self._task_info,
            "worker-list": self._worker_list,
            "worker-info": self._worker_info,
            "worker-stop": self._worker_stop,
        }
        self.stream_ops: dict[str, StreamOp] = {
            "job-progress": self._job_progress,
            "journal-stream": self._journal_stream,
        }
        self.ops["submit-graph"] = self._submit_graph
        self.ops["task-explain"] = self._task_explain
        self.stream_ops["job-notifications"] = self._job_notifications
        self.ops["journal-flush"] = self._journal_flush
        self.ops["journal-prune"] = self._journal_prune

    @property
    def model(self) -> Any:
        return self.core.model

    async def handle_connection(self, peer: PeerConnection) -> None:
        while True:
            try:
                request = await peer.recv()
            except ConnectionClosed:
                return
            op = request.get("op") if isinstance(request, dict) else None
            if isinstance(op, str) and op in self.stream_ops:
                try:
                    await self.stream_ops[op](parse_request(op, request), peer)
                except SchemaError as error:
                    await peer.send({"error": f"Invalid {op} request: {error.message}"})
                except HqError as error:
                    await peer.send({"error": error.message})
                continue
            reply = await self.dispatch(request)
            await peer.send_large(reply)
            if op == "server-stop":
                self.stop.request("hq server stop")

    def add_plain_ops(self, ops: dict[str, Op]) -> None:
        """Ops of a capability below the transport layer (the allocator): each is typed
        in schemas.ALLOC_REQUESTS and converted before it runs, then handed over as the
        plain values of its validated request."""
        for name, handler in ops.items():
            if name not in schemas.ALLOC_REQUESTS:
                raise ValueError(f"op {name!r} has no request type")
            self.ops[name] = _plain(handler)

    async def dispatch(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"error": "malformed request"}
        name = request["op"]
        op = self.ops.get(name)
        if op is None:
            return {"error": f"unknown request {name!r}"}
        try:
            typed = parse_request(name, request)
        except SchemaError as error:
            log.debug("Refused %s request: %s", name, error.message)
            return {"error": f"Invalid {name} request: {error.message}"}
        try:
            return {"ok": await op(typed)}
        except HqError as error:
            return {"error": error.message}
        except (KeyError, TypeError, ValueError) as error:
            # Only ops without a declared type can get here with a bad shape.
            log.debug("Malformed %s request: %s: %s", name, type(error).__name__, error)
            return {"error": f"malformed {name} request"}
        except Exception as error:
            # A bug of ours in one handler costs this one reply, not the connection.
            reason = describe_exception(error)
            log.error("Error in %s request: %s", name, reason, exc_info=error)
            return {"error": f"Internal error: {reason}"}

    async def shutdown(self) -> None:
        """Graceful part of the stop, before the tree is cancelled.

        Workers are not told anything: their connection closes with the server, which is
        how they learn it is gone and apply their --on-server-lost policy.
        """

    # --- server -----------------------------------------------------------------------
    async def _server_info(self, request: Any) -> Any:
        return self.info.to_wire()

    async def _server_stop(self, request: Any) -> Any:
        return None

    async def _debug_dump(self, request: Any) -> Any:
        model = self.model
        return {
            "tako": {
                "workers": {str(w): worker_wire(model.worker_info(w)) for w in model.worker_ids()},
                "jobs": [job_info_wire(model.job_info(j)) for j in model.job_ids()],
                "task_records": model.record_count(),
            },
            "journal": None
            if self.core.journal is None
            else {
                "fsyncs": self.core.journal.fsyncs,
                "batch_sizes": self.core.journal.batch_sizes[-1000:],
                "fsync_seconds": self.core.journal.fsync_times[-1000:],
            },
            "server": self.info.to_wire(),
        }

    # --- jobs: changes ----------------------------------------------------------------
    async def _submit(self, request: schemas.SubmitRequest) -> Any:
        check_submit(request)
        core = self.core
        job_desc = request.job_desc or schemas.JobDesc()
        job_id = request.job
        desc = schemas.to_wire(request.submit_desc)
        if desc.get("on_notify") is None:
            desc.pop("on_notify", None)
        target = job_id if job_id is not None else self.model.next_job_id
        resolved = core.resolve_submit(desc, target)
        events = self.model.submit(
            resolved,
            now=core.now(),
            job_id=job_id,
            name=job_desc.name,
            max_fails=job_desc.max_fails,
        )
        core.commit(events)
        await core.durable()
        return {"job": events[0].job}

    async def _submit_graph(self, request: schemas.SubmitGraphRequest) -> Any:
        job_desc = request.job_desc
        return await submit_graph(
            self.core,
            {
                "job": request.job,
                "job_desc": schemas.to_wire(job_desc) if job_desc is not None else {},
                "submit_desc": request.submit_desc,
            },
        )

    async def _task_explain(self, request: schemas.TaskExplainRequest) -> Any:
        return await task_explain(self.core, {"job": request.job, "task": request.task})

    async def _job_notifications(
        self, request: schemas.JobNotificationsRequest, peer: PeerConnection
    ) -> None:
        await job_notifications(self.core, {"job": request.job}, peer)

    async def _job_open(self, request: schemas.JobOpenRequest) -> Any:
        check_job_open(request)
        core = self.core
        events = self.model.open_job(now=core.now(), name=request.name, max_fails=request.max_fails)
        core.commit(events)
        await core.durable()
        return {"job": events[0].job_id}

    def _job_ids(self, selector: Selector, all_ids: list[int]) -> list[int]:
        model = self.model
        return select_ids(selector, model.job_ids(), model.max_job_id, all_ids)

    async def _job_close(self, request: schemas.SelectorRequest) -> Any:
        core = self.core
        model = self.model
        open_ids = [j for j in model.job_ids() if model.jobs[j].is_open]
        ids = self._job_ids(request.selector, open_ids)
        results = []
        for job_id in ids:
            try:
                core.commit(model.close_job(job_id, now=core.now()))
                results.append({"id": job_id, "status": "closed"})
            except NotFound:
                results.append({"id": job_id, "status": "missing"})
            except WrongState:
                results.append({"id": job_id, "status": "already-closed"})
        await core.durable()
        return {"results": results, "nothing": not ids}

    async def _job_cancel(self, request: schemas.JobCancelRequest) -> Any:
        core = self.core
        model = self.model
        active = [
            j
            for j in model.job_ids()
            if model.jobs[j].job_state() in (JobState.WAITING, JobState.RUNNING)
        ]
        ids = self._job_ids(request.selector, active)
        results = []
        for job_id in ids:
            try:
                result = model.cancel_job(job_id, now=core.now(), reason=request.reason)
            except NotFound:
                results.append({"id": job_id, "status": "missing", "canceled": 0, "finished": 0})
                continue
            except WrongState:
                results.append(
                    {"id": job_id, "status": "all-finished", "canceled": 0, "finished": 0}
                )
                continue
            for index, event in enumerate(result.events):
                core.commit([event])
                if index % 16 == 15:
                    await trio.sleep(0)
            results.append(
                {
                    "id": job_id,
                    "status": "canceled",
                    "canceled": result.canceled,
                    "finished": result.already_finished,
                }
            )
        await core.durable()
        return {"results": results}

    async def _job_forget(self, request: schemas.StatesRequest) -> Any:
        core = self.core
        model = self.model
        ids = self._job_ids(request.selector, model.job_ids())
        states = _states(request.states, JobState)
        result = model.forget_jobs(ids, now=core.now(), states=states)
        core.commit(result.events)
        await core.durable()
        return {"forgotten": result.forgotten, "ignored": result.ignored}

    # --- jobs: queries ----------------------------------------------------------------
    async def _job_list(self, request: Any) -> Any:
        model = self.model
        jobs = []
        for index, job_id in enumerate(model.job_ids()):
            jobs.append(job_info_wire(model.job_info(job_id)))
            if index % CHUNK == CHUNK - 1:
                await trio.sleep(0)
        return {"jobs": jobs, "total": len(jobs)}

    async def _job_summary(self, request: Any) -> Any:
        counts = self.model.job_summary()
        return {"counts": {str(state): n for state, n in counts.items()}}

    async def _job_info(self, request: schemas.JobInfoRequest) -> Any:
        model = self.model
        ids = self._job_ids(request.selector, model.job_ids())
        jobs, missing = [], []
        for job_id in ids:
            detail = job_detail_wire(model, job_id, request.with_tasks)
            if detail is None:
                missing.append(job_id)
            else:
                jobs.append(detail)
            await trio.sleep(0)
        return {"jobs": jobs, "missing": missing, "worker_names": self._worker_names()}

    def _worker_names(self) -> dict[str, str]:
        model = self.model
        return {str(w): model.hostname(w) or "" for w in model.worker_ids()}

    def _is_done(self, job_id: int, without_close: bool) -> bool:
        job = self.model.jobs.get(job_id)
        if job is None:
            return True
        if without_close:
            return job.active_count == 0
        return job.is_completed

    async def _job_wait(self, request: schemas.JobWaitRequest) -> Any:
        core = self.core
        model = self.model
        ids = [j for j in self._job_ids(request.selector, model.job_ids()) if j in model.jobs]
        without_close = request.without_close
        while True:
            if all(self._is_done(j, without_close) for j in ids):
                break
            await core.changed.wait()
        return {"jobs": [job_info_wire(model.job_info(j)) for j in ids if j in model.jobs]}

    async def _job_progress(self, request: schemas.SelectorRequest, peer: PeerConnection) -> None:
        core = self.core
        model = self.model
        ids = [j for j in self._job_ids(request.selector, model.job_ids()) if j in model.jobs]

        def snapshot() -> dict[str, Any]:
            return {"jobs": [job_info_wire(model.job_info(j)) for j in ids if j in model.jobs]}

        def all_done() -> bool:
            return all(self._is_done(j, False) for j in ids)

        first = True
        while True:
            # The state sent and the decision to stop come from the same moment: a job
            # finishing during the send still gets its final snapshot out.
            changed = core.changed.armed()
            snap = snapshot()
            done = all_done()
            await peer.send({"ok": snap} if first else snap)
            if done:
                return
            first = False
            # Progress goes out at most PROGRESS_RATE times a second, the end of the jobs
            # at once: a client waiting for one short job would otherwise always wait a
            # whole interval after its submit (the Python API's submit + wait).
            next_at = trio.current_time() + 1 / PROGRESS_RATE
            await changed.wait()
            while not all_done() and trio.current_time() < next_at:
                changed = core.changed.armed()
                with trio.move_on_at(next_at):
                    await changed.wait()

    async def _job_task_ids(self, request: schemas.StatesRequest) -> Any:
        model = self.model
        ids = self._job_ids(request.selector, model.job_ids())
        states = _states(request.states, TaskState)
        jobs: dict[str, Any] = {}
        missing = []
        for job_id in ids:
            if job_id not in model.jobs:
                missing.append(job_id)
                continue
            if states is None:
                jobs[str(job_id)] = [list(item) for item in model.job_task_items(job_id)]
            else:
                jobs[str(job_id)] = ids_to_items(
                    v.task_id for v in model.iter_tasks(job_id, states=states)
                )
            await trio.sleep(0)
        return {"jobs": jobs, "missing": missing}

    # --- tasks ------------------------------------------------------------------------
    def _task_views(self, job_id: int, task_items: Any, states: list[Any] | None) -> Iterator[Any]:
        model = self.model
        if task_items is None:
            return model.iter_tasks(job_id, states=states)
        return model.iter_tasks(job_id, iter(_id_set(task_items, "tasks")), states=states)

    async def _task_list(self, request: schemas.TaskListRequest) -> Any:
        model = self.model
        ids = self._job_ids(request.selector, model.job_ids())
        states = _states(request.states, TaskState)
        jobs: dict[str, Any] = {}
        missing = []
        for job_id in ids:
            if job_id not in model.jobs:
                missing.append(job_id)
                continue
            submits = model.job_submits(job_id)
            tasks = []
            for index, view in enumerate(self._task_views(job_id, request.tasks, states)):
                tasks.append(task_wire(view, submits[view.submit_index]))
                if index % CHUNK == CHUNK - 1:
                    await trio.sleep(0)
            jobs[str(job_id)] = tasks
        return {"jobs": jobs, "missing": missing, "worker_names": self._worker_names()}

    async def _task_info(self, request: schemas.TaskInfoRequest) -> Any:
        core = self.core
        model = self.model
        ids = self._job_ids(request.selector, model.job_ids())
        if not ids or ids[0] not in model.jobs:
            return {
                "job": ids[0] if ids else None,
                "found": False,
                "tasks": [],
                "missing_tasks": [],
                "worker_names": {},
            }
        job_id = ids[0]
        submits = model.job_submits(job_id)
        tasks, missing = [], []
        for task_id in itertools.islice(_id_set(request.tasks, "tasks"), MAX_EXPANDED_IDS):
            view = model.task(job_id, task_id)
            if view is None:
                missing.append(task_id)
            else:
                tasks.append(
                    task_info_wire(view, submits[view.submit_index], job_id, core.server_uid)
                )
        return {
            "job": job_id,
            "found": True,
            "tasks": tasks,
            "missing_tasks": missing,
            "worker_names": self._worker_names(),
        }

    # --- journal ----------------------------------------------------------------------
    async def _journal_flush(self, request: Any) -> Any:
        await self.core.durable()
        return None

    async def _journal_prune(self, request: Any) -> Any:
        from hyperq.server.journal.prune import prune_file

        core = self.core
        journal = core.journal
        if journal is None:
            return None
        model = self.model
        async with journal.lock:
            await journal.flush_locked()
            live_jobs = {j for j, job in model.jobs.items() if not job.is_completed}
            live_workers = {w for w, worker in model.workers.items() if worker.is_connected}
            before, after = await trio.to_thread.run_sync(
                prune_file, journal.path, live_jobs, live_workers
            )
            await journal.replace_file(after)
        log.info("Journal pruned from %d to %d bytes", before, after)
        return {"before": before, "after": after}

    async def _journal_stream(
        self, request: schemas.JournalStreamRequest, peer: PeerConnection
    ) -> None:
        """History first (the journal file, or events rebuilt from the state), then,
        with `follow`, every new persisted event until the server stops."""
        from hyperq.server.journal.format import read_journal
        from hyperq.server.journal.reconstruct import reconstruct
        from hyperq.server.model.events import (
            Event,
            ServerStop,
            WorkerOverview,
            WorkerOverviewTemporary,
            expand,
            expand_all,
            from_record,
            to_export_json,
        )

        wants_overviews = request.overviews

        def shown(event: Event) -> bool:
            # Clients never see the stop of the server they talk to, nor events that
            # HyperQueue does not have (`exported`); temporary overviews go only to the
            # streams that asked for them (the dashboard).
            if isinstance(event, WorkerOverviewTemporary) and not wants_overviews:
                return False
            return event.exported and not isinstance(event, ServerStop)

        def export(event: Event) -> dict[str, Any]:
            line = to_export_json(event)
            if wants_overviews and isinstance(event, WorkerOverview) and event.running_cpus:
                # Beside the event, not in it: the dashboard's per-CPU view (cluster.md §4).
                line["running_cpus"] = [[j, t, list(c)] for j, t, c in event.running_cpus]
            return line

        core = self.core
        subscription = core.subscribe()
        if wants_overviews:
            core.add_overview_watcher(+1)
        try:
            journal = core.journal
            if journal is not None:
                await journal.sync()
                cut = journal.synced
                records, _report = await trio.to_thread.run_sync(read_journal, journal.path)
                events = (from_record(value) for seq, value in records if seq <= cut)
                # Range events are shown as the per-task events they stand for.
                history = [event for event in expand_all(events) if event.exported]
            else:
                cut = None
                history = reconstruct(self.model, core.started_at)
            await peer.send({"ok": None})
            for start in range(0, len(history), 1000):
                batch = [export(event) for event in history[start : start + 1000]]
                # One event can be huge (a cancel of a million-task array lists every
                # task): parts the client reassembles, not one frame over the limit.
                await peer.send_large({"events": batch})
            if not request.follow:
                await peer.send({"end": True})
                return
            if request.live_marker:
                # The dashboard's boundary between history and live events (cluster.md §7).
                await peer.send({"live": True, "journal": journal is not None})

            def live(seq: int | None, event: Event) -> bool:
                # Events up to `cut` were in the history already.
                return shown(event) and (cut is None or seq is None or seq > cut)

            async for seq, event in subscription.receive:
                if not live(seq, event):
                    continue
                batch = [export(one) for one in expand(event)]
                while True:
                    try:
                        seq, event = subscription.receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if live(seq, event):
                        batch.extend(export(one) for one in expand(event))
                await peer.send_large({"events": batch})
            if subscription.overflowed:
                await peer.send({"error": "the event stream fell too far behind; reconnect"})
        finally:
            core.unsubscribe(subscription)
            if wants_overviews:
                core.add_overview_watcher(-1)

    # --- workers ----------------------------------------------------------------------
    def _worker_ids(self, selector: Selector, all_ids: list[int]) -> list[int]:
        model = self.model
        existing = model.worker_ids()
        return select_ids(selector, existing, existing[-1] if existing else None, all_ids)

    async def _worker_list(self, request: Any) -> Any:
        model = self.model
        return {"workers": [worker_wire(model.worker_info(w)) for w in model.worker_ids()]}

    async def _worker_info(self, request: schemas.SelectorRequest) -> Any:
        model = self.model
        ids = self._worker_ids(request.selector, model.worker_ids())
        workers, missing = [], []
        for worker_id in ids:
            view = model.worker_info(worker_id)
            if view is None:
                missing.append(worker_id)
            else:
                workers.append(worker_wire(view))
        return {"workers": workers, "missing": missing}

    async def _worker_stop(self, request: schemas.SelectorRequest) -> Any:
        core = self.core
        model = self.model
        running = [w for w in model.worker_ids() if model.workers[w].is_connected]
        ids = self._worker_ids(request.selector, running)
        results = []
        stopped = []
        for worker_id in ids:
            try:
                core.commit(model.stop_worker(worker_id, now=core.now()))
            except NotFound:
                results.append({"id": worker_id, "status": "missing"})
                continue
            except WrongState:
                results.append({"id": worker_id, "status": "already-stopped"})
                continue
            stopped.append(worker_id)
            results.append({"id": worker_id, "status": "stopped"})
        # Durable before the workers hear of it: a crash in between must not leave a
        # stopped worker that a restore would still wait for.
        await core.durable()
        for worker_id in stopped:
            link = core.links.get(worker_id)
            if link is not None:
                link.stop_reason = "stopped"
                link.poke()
        return {"results": results}

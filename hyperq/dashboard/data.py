"""What the dashboard knows: built only from event JSON lines (the same objects as
`hq journal export`/`stream`), each view evaluated "as of" a moment. Pure: no Textual,
no I/O, no clock (the caller passes the times)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hyperq.common.resources import ResourceRequest

END_STATES = {
    "task-finished": "finished",
    "task-failed": "failed",
    "task-canceled": "canceled",
    "task-aborted": "aborted",
}
LOST_TEXT = {
    "Stopped": "stopped",
    "ConnectionLost": "lost",
    "HeartbeatLost": "lost",
    "IdleTimeout": "timeout",
    "TimeLimitReached": "time-limit",
}
SPARK = " ▁▂▃▄▅▆▇█"


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Overview:
    time: float
    cpu: list[float]
    mem_total: int
    mem_free: int
    gpu: list[float]
    # Node CPU numbers held by running tasks; None when the overview does not say.
    assigned: set[int] | None = None

    @property
    def cpu_avg(self) -> float:
        return sum(self.cpu) / len(self.cpu) if self.cpu else 0.0

    @property
    def mem_percent(self) -> float:
        return 100.0 * (self.mem_total - self.mem_free) / self.mem_total if self.mem_total else 0.0

    @property
    def gpu_avg(self) -> float:
        return sum(self.gpu) / len(self.gpu) if self.gpu else 0.0


@dataclass
class WorkerRecord:
    id: int
    connected: float
    configuration: Mapping[str, Any]
    lost: float | None = None
    lost_reason: str | None = None
    overviews: list[Overview] = field(default_factory=list)

    @property
    def hostname(self) -> str:
        return str(self.configuration.get("hostname", ""))

    def online_at(self, t: float) -> bool:
        return self.connected <= t and (self.lost is None or self.lost > t)

    def status_at(self, t: float) -> str:
        if self.online_at(t):
            return "online"
        reason = LOST_TEXT.get(self.lost_reason or "", "lost")
        return f"offline: {reason}"

    def overview_at(self, t: float) -> Overview | None:
        times = [o.time for o in self.overviews]
        index = bisect.bisect_right(times, t)
        return self.overviews[index - 1] if index else None

    def cpu_ids(self) -> list[int]:
        """The node's CPU numbers this worker manages (its `cpus` labels that are numbers)."""
        labels: list[Any] = []
        for item in (self.configuration.get("resources") or {}).get("resources", []):
            if item.get("name") != "cpus":
                continue
            kind = item.get("kind")
            if kind == "range":
                labels = list(range(int(item.get("start", 0)), int(item.get("end", -1)) + 1))
            elif kind == "list":
                labels = list(item.get("values", []))
            elif kind == "groups":
                labels = [label for group in item.get("groups", []) for label in group]
        ids = []
        for label in labels:
            try:
                ids.append(int(label))
            except (TypeError, ValueError):
                continue
        return ids


@dataclass
class TaskRecord:
    job: int
    task: int
    worker: int | None = None
    start: float | None = None
    end: float | None = None
    final: str | None = None

    def state_at(self, t: float) -> str:
        if self.end is not None and self.end <= t and self.final is not None:
            return self.final
        if self.start is not None and self.start <= t:
            return "running"
        return "waiting"


@dataclass
class JobRecord:
    id: int
    name: str
    created: float
    max_fails: int | None
    task_descs: list[Mapping[str, Any]] = field(default_factory=list)
    completed: float | None = None
    n_tasks: int = 0


def count_ids(ids: Any) -> int:
    if isinstance(ids, Mapping):
        return sum(int(r.get("count", 0)) for r in ids.get("ranges", []))
    return 0


def resources_text(task_desc: Mapping[str, Any]) -> str:
    """`cpus=2 compact, gpus=1 compact OR cpus=4 compact` (variants joined by OR)."""
    variants = []
    for raw in task_desc.get("resources") or []:
        try:
            request = ResourceRequest.from_json(raw)
        except (KeyError, TypeError, ValueError):
            continue
        if request.n_nodes:
            variants.append(f"nodes={request.n_nodes}")
        else:
            variants.append(", ".join(f"{e.name}={e.text()}" for e in request.entries))
    return " OR ".join(variants)


@dataclass
class QueueRecord:
    id: int
    created: float
    params: Mapping[str, Any]
    removed: float | None = None


@dataclass
class AllocationRecord:
    queue: int
    id: str
    workers: int
    queued: float
    started: float | None = None
    finished: float | None = None

    def status_at(self, t: float) -> str:
        if self.finished is not None and self.finished <= t:
            return "finished"
        if self.started is not None and self.started <= t:
            return "running"
        return "queued"


class DashboardData:
    def __init__(self) -> None:
        self.queues: dict[int, QueueRecord] = {}
        self.allocations: dict[tuple[int, str], AllocationRecord] = {}
        self.workers: dict[int, WorkerRecord] = {}
        self.jobs: dict[int, JobRecord] = {}
        self.tasks: dict[tuple[int, int], TaskRecord] = {}
        self.job_tasks: dict[int, dict[int, TaskRecord]] = {}  # the same records, by job
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0

    def add_all(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in sorted(events, key=lambda e: parse_time(str(e.get("time", "")))):
            self.add(event)

    def add(self, line: Mapping[str, Any]) -> None:
        """One export line {"time": ..., "event": {"type": ...}}; unknown kinds are kept
        out silently (the server may know more kinds than this dashboard)."""
        try:
            t = parse_time(str(line["time"]))
            event = line["event"]
            kind = event["type"]
        except (KeyError, TypeError, ValueError):
            return
        self.count += 1
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)
        if kind == "worker-connected":
            self.workers[int(event["id"])] = WorkerRecord(
                int(event["id"]), t, event.get("configuration") or {}
            )
        elif kind == "worker-lost":
            worker = self.workers.get(int(event["id"]))
            if worker is not None:
                worker.lost, worker.lost_reason = t, str(event.get("reason"))
        elif kind == "worker-overview":
            worker = self.workers.get(int(event["id"]))
            state = (event.get("hw-state") or {}).get("state") or {}
            if worker is not None:
                overview = _overview(t, state)
                overview.assigned = _assigned(line.get("running_cpus"))
                worker.overviews.append(overview)
        elif kind == "job-created":
            self._job_created(t, event)
        elif kind == "job-completed":
            job = self.jobs.get(int(event["job"]))
            if job is not None:
                job.completed = t
        elif kind == "task-started":
            record = self._task(int(event["job"]), int(event["task"]))
            workers = event.get("workers") or [event.get("worker")]
            record.worker = workers[0] if workers and workers[0] is not None else None
            record.start, record.end, record.final = t, None, None
        elif kind in ("task-finished", "task-failed"):
            record = self._task(int(event["job"]), int(event["task"]))
            record.end, record.final = t, END_STATES[kind]
        elif kind in ("task-canceled", "task-aborted"):
            for ref in event.get("tasks", []):
                record = self._task(int(ref["job_id"]), int(ref["job_task_id"]))
                record.end, record.final = t, END_STATES[kind]
        elif kind.startswith("autoalloc-"):
            self._autoalloc(kind, t, event)

    def _autoalloc(self, kind: str, t: float, event: Mapping[str, Any]) -> None:
        """Allocation queues and allocations (alloc.md §6 event fields)."""
        try:
            queue = int(event["queue-id"])
            if kind == "autoalloc-queue-created":
                self.queues[queue] = QueueRecord(queue, t, event.get("params") or {})
            elif kind == "autoalloc-queue-removed":
                if queue in self.queues:
                    self.queues[queue].removed = t
            elif kind == "autoalloc-allocation-queued":
                key = (queue, str(event["allocation-id"]))
                workers = int(event.get("worker-count", 1))
                self.allocations[key] = AllocationRecord(queue, key[1], workers, t)
            elif kind in ("autoalloc-allocation-started", "autoalloc-allocation-finished"):
                allocation = self.allocations.get((queue, str(event["allocation-id"])))
                if allocation is not None and kind.endswith("started"):
                    allocation.started = t
                elif allocation is not None:
                    allocation.finished = t
        except (KeyError, TypeError, ValueError):
            return

    def _job_created(self, t: float, event: Mapping[str, Any]) -> None:
        job_id = int(event["job"])
        desc = event.get("job_desc") or {}
        job = self.jobs.get(job_id)
        if job is None:
            job = JobRecord(job_id, str(desc.get("name", "")), t, desc.get("max_fails"))
            self.jobs[job_id] = job
        task_desc = (event.get("submit_desc") or {}).get("task_desc") or {}
        job.task_descs.append(task_desc)
        job.n_tasks += count_ids(task_desc.get("ids")) or int(task_desc.get("n_tasks", 0) or 0)

    def _task(self, job: int, task: int) -> TaskRecord:
        record = self.tasks.get((job, task))
        if record is None:
            record = self.tasks[(job, task)] = TaskRecord(job, task)
            self.job_tasks.setdefault(job, {})[task] = record
        return record

    # --- views "as of" t ---------------------------------------------------------------
    def jobs_at(self, t: float) -> list[JobRecord]:
        return [j for j in sorted(self.jobs.values(), key=lambda j: j.id) if j.created <= t]

    def tasks_of(self, job_id: int, t: float) -> list[TaskRecord]:
        """Tasks of a job known at t, running first, then by ID."""
        tasks = [
            r
            for r in self.job_tasks.get(job_id, {}).values()
            if (r.start is not None and r.start <= t) or (r.end is not None and r.end <= t)
        ]
        return sorted(tasks, key=lambda r: (r.state_at(t) != "running", r.task))

    def task_count_series(self, job_id: int, moments: Sequence[float]) -> dict[str, list[int]]:
        """Task counts per state at each moment: sorted times and bisection, so a chart of
        a big array costs O(tasks log tasks), not O(tasks x points)."""
        records = self.job_tasks.get(job_id, {}).values()
        starts = sorted(r.start for r in records if r.start is not None)
        started_ends = sorted(
            r.end for r in records if r.start is not None and r.end is not None and r.final
        )
        ends: dict[str, list[float]] = {state: [] for state in END_STATES.values()}
        for r in records:
            if r.end is not None and r.final is not None:
                ends[r.final].append(r.end)
        for times in ends.values():
            times.sort()
        series: dict[str, list[int]] = {"running": []}
        series.update({state: [] for state in ends})
        for t in moments:
            running = bisect.bisect_right(starts, t) - bisect.bisect_right(started_ends, t)
            series["running"].append(running)
            for state, times in ends.items():
                series[state].append(bisect.bisect_right(times, t))
        return series

    def task_counts(self, job_id: int, t: float) -> dict[str, int]:
        return {state: values[0] for state, values in self.task_count_series(job_id, [t]).items()}

    def running_by_worker(self, t: float) -> dict[int, int]:
        counts: dict[int, int] = {}
        for record in self.tasks.values():
            if record.worker is not None and record.state_at(t) == "running":
                counts[record.worker] = counts.get(record.worker, 0) + 1
        return counts

    def workers_at(self, t: float) -> list[WorkerRecord]:
        """Workers connected by t: online ones first, then by ID."""
        known = [w for w in self.workers.values() if w.connected <= t]
        return sorted(known, key=lambda w: (not w.online_at(t), w.id))

    def running_tasks_on(self, worker_id: int, t: float) -> list[TaskRecord]:
        return [
            r for r in self.tasks.values() if r.worker == worker_id and r.state_at(t) == "running"
        ]

    def tasks_on(self, worker_id: int, t: float) -> list[TaskRecord]:
        tasks = [
            r
            for r in self.tasks.values()
            if r.worker == worker_id and r.start is not None and r.start <= t
        ]
        return sorted(tasks, key=lambda r: (r.state_at(t) != "running", r.job, r.task))

    def queues_at(self, t: float) -> list[QueueRecord]:
        return [q for q in sorted(self.queues.values(), key=lambda q: q.id) if q.created <= t]

    def allocations_of(self, queue: int, t: float) -> list[AllocationRecord]:
        return sorted(
            (a for a in self.allocations.values() if a.queue == queue and a.queued <= t),
            key=lambda a: a.queued,
        )

    def online_count(self, t: float) -> int:
        return sum(1 for w in self.workers.values() if w.online_at(t))


def _overview(t: float, state: Mapping[str, Any]) -> Overview:
    cpu = [float(v) for v in (state.get("cpu_usage") or {}).get("cpu_per_core_percent_usage", [])]
    memory = state.get("memory_usage") or {}
    gpus: list[float] = []
    for family in ("nvidia_gpus", "amd_gpus"):
        for gpu in (state.get(family) or {}).get("gpus", []):
            gpus.append(float(gpu.get("processor_usage", 0.0)))
    return Overview(
        t, cpu, int(memory.get("total", 0) or 0), int(memory.get("free", 0) or 0), gpus
    )


def _assigned(value: Any) -> set[int] | None:
    if not isinstance(value, list):
        return None
    cpus: set[int] = set()
    for item in value:
        try:
            cpus.update(int(label) for label in item[2])
        except (TypeError, ValueError, IndexError):
            continue
    return cpus


def samples(start: float, end: float, count: int) -> list[float]:
    """`count` moments spread over [start, end], both included."""
    if count <= 1:
        return [end]
    step = (end - start) / (count - 1)
    return [start + i * step for i in range(count)]


def sparkline(values: Sequence[float], top: float | None = None) -> str:
    """One character per value, scaled to `top` (default: the largest value)."""
    top = max(values, default=0.0) if top is None else top
    if top <= 0:
        return SPARK[0] * len(values)
    last = len(SPARK) - 1
    return "".join(SPARK[max(0, min(last, round(v / top * last)))] for v in values)


def load_color(percent: float) -> str:
    """Green up to 50 %, yellow up to 70 %, red above."""
    if percent <= 50:
        return "green"
    if percent <= 70:
        return "yellow"
    return "red"


def bar(percent: float, width: int = 10) -> str:
    """A utilization bar with Rich markup, e.g. `[green]███░░░░░░░[/] 30%`."""
    filled = max(0, min(width, round(percent / 100 * width)))
    color = load_color(percent)
    return f"[{color}]{'█' * filled}{'░' * (width - filled)}[/] {percent:3.0f}%"


@dataclass
class TimeWindow:
    """The window every view is evaluated in. Live windows end now; fixed ones never
    end in the future."""

    end: float
    length: float
    live: bool

    MIN_LENGTH = 60.0
    MAX_LENGTH = 7 * 24 * 3600.0

    @property
    def start(self) -> float:
        return self.end - self.length

    def follow(self, now: float) -> None:
        if self.live:
            self.end = now

    def earlier(self) -> None:
        self.live = False
        self.end -= max(self.length / 4, 1.0)

    def later(self, now: float) -> None:
        if self.live:
            return
        self.end = min(self.end + max(self.length / 4, 1.0), now)

    def zoom_in(self) -> None:
        self.length = max(self.length / 2, self.MIN_LENGTH)

    def zoom_out(self) -> None:
        self.length = min(self.length * 2, self.MAX_LENGTH)

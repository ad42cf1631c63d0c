"""Journal events → the report's numbers. Pure: the events and the window come in, plain
data comes out; the clock is the events' own times."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hyperq.common.duration import format_duration
from hyperq.common.errors import HqError
from hyperq.common.resources import (
    CPUS,
    AllocationPolicy,
    ResourceDescriptor,
    ResourceRequest,
    format_amount,
)
from hyperq.server.model.events import (
    Event,
    JobCreated,
    ServerStart,
    ServerStop,
    TaskAborted,
    TaskCanceled,
    TaskFailed,
    TaskFinished,
    TaskStarted,
    WorkerConnected,
    WorkerLost,
    export_payload,
)

Point = tuple[float, float]


@dataclass(frozen=True)
class Window:
    """Offsets (seconds) from the first event; None = unbounded."""

    start: float | None = None
    end: float | None = None

    def card(self) -> str | None:
        """The `Time filtering` card's text, or None when there is no filter."""
        if self.start is not None and self.end is not None:
            return f"between {format_duration(self.start)} and {format_duration(self.end)}"
        if self.end is not None:
            return f"upto {format_duration(self.end)}"
        if self.start is not None:
            return f"since {format_duration(self.start)}"
        return None


@dataclass
class ReportData:
    server_started: float
    window: Window
    x_range: tuple[float, float]
    # name -> step points (x = seconds since the first event), in insertion order.
    worker_series: dict[str, list[Point]] = field(default_factory=dict)
    # request label (`T1`, ...) -> its text.
    requests: dict[str, str] = field(default_factory=dict)
    finished: dict[str, list[float]] = field(default_factory=dict)  # label -> durations
    failed: dict[str, list[float]] = field(default_factory=dict)


def request_text(request: ResourceRequest) -> str:
    if request.n_nodes > 0:
        text = f"nodes: {request.n_nodes}"
    else:
        text = ", ".join(f"{e.name}: {e.text()}" for e in request.entries)
    if request.min_time > 0:
        text += f", min_time: {format_duration(request.min_time)}"
    return text


def worker_signature(descriptor: ResourceDescriptor) -> tuple[str, dict[str, int]]:
    """(`cpus:4, mem:1024`, capacities ×10 000 by name), `cpus` first."""
    items = sorted(descriptor.items, key=lambda i: (i.name != CPUS, i.name))
    capacities = {item.name: item.capacity() for item in items}
    text = ", ".join(f"{item.name}:{format_amount(item.capacity())}" for item in items)
    return text, capacities


@dataclass
class _Worker:
    signature: str
    capacities: dict[str, int]


@dataclass
class _Running:
    started: float
    workers: tuple[int, ...]
    label: str
    # (series name, amount added) per change this task made to the alloc series.
    shares: list[tuple[str, float]]


class _Builder:
    def __init__(self, first: float, window: Window) -> None:
        self.t0 = first
        self.lo = first + (window.start or 0.0)
        self.hi = first + window.end if window.end is not None else math.inf
        self.values: dict[str, float] = {}
        self.points: dict[str, list[Point]] = {}
        self.workers: dict[int, _Worker] = {}
        self.submits: dict[int, list[tuple[Any, ResourceRequest]]] = {}
        self.running: dict[tuple[int, int], _Running] = {}
        self.labels: dict[str, str] = {}  # request text -> label
        self.queued: dict[tuple[str, str], int] = {}  # allocation -> its worker count
        self.finished: dict[str, list[float]] = {}
        self.failed: dict[str, list[float]] = {}
        self.last_time = first

    # --- series ----------------------------------------------------------------------
    def _add(self, name: str, delta: float, time: float) -> None:
        self._set(name, self.values.get(name, 0.0) + delta, time)

    def _set(self, name: str, value: float, time: float) -> None:
        # Rounding keeps sums of fractions from drifting to -1e-17.
        value = round(value, 9)
        if name in self.points and self.values.get(name) == value:
            return  # a step line only needs its changes
        self.values[name] = value
        x = max(time, self.lo) - self.t0
        points = self.points.setdefault(name, [])
        if points and points[-1][0] == x:
            points[-1] = (x, value)  # changes before the window fold into its start
        else:
            points.append((x, value))

    # --- events ----------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        time = event.time
        self.last_time = max(self.last_time, time)
        if isinstance(event, WorkerConnected):
            self._connected(event)
        elif isinstance(event, WorkerLost):
            worker = self.workers.pop(event.id, None)
            if worker is not None:
                for key in [k for k, r in self.running.items() if event.id in r.workers]:
                    self._release(self.running.pop(key), time)
                self._add(f"Running workers {worker.signature}", -1, time)
        elif isinstance(event, ServerStop):
            for key in list(self.running):
                self._release(self.running.pop(key), time)
            self.workers.clear()
            for name in list(self.values):
                self._set(name, 0.0, time)
        elif isinstance(event, JobCreated):
            self._job_created(event)
        elif isinstance(event, TaskStarted):
            self._started(event)
        elif isinstance(event, TaskFinished | TaskFailed):
            running = self.running.pop((event.job, event.task), None)
            if running is not None:
                self._release(running, time)
                if time >= self.lo:
                    into = self.finished if isinstance(event, TaskFinished) else self.failed
                    into.setdefault(running.label, []).append(max(time - running.started, 0.0))
        elif event.kind.startswith("autoalloc-allocation-"):
            self._allocation(event)
        elif isinstance(event, TaskCanceled | TaskAborted):
            for job, items in event.tasks:
                for start, last, step in items:
                    for task in range(start, last + 1, step):
                        running = self.running.pop((job, task), None)
                        if running is not None:
                            self._release(running, time)

    def _allocation(self, event: Event) -> None:
        """`Queued workers`: workers of allocations queued and not yet started or ended.
        Read through the export form, whose field names alloc.md §6 fixes."""
        payload = export_payload(event)

        def field(name: str) -> Any:
            return payload.get(name, payload.get(name.replace("-", "_")))

        key = (str(field("queue-id")), str(field("allocation-id")))
        if event.kind == "autoalloc-allocation-queued":
            try:
                count = int(field("worker-count") or 1)
            except (TypeError, ValueError):
                count = 1
            self.queued[key] = count
            self._add("Queued workers", count, event.time)
        elif key in self.queued:
            self._add("Queued workers", -self.queued.pop(key), event.time)

    def _connected(self, event: WorkerConnected) -> None:
        try:
            descriptor = ResourceDescriptor.from_json(event.configuration["resources"])
        except (KeyError, TypeError, ValueError):
            return
        signature, capacities = worker_signature(descriptor)
        worker = _Worker(signature, capacities)
        self.workers[event.id] = worker
        self._add(f"Running workers {signature}", 1, event.time)
        for name in capacities:
            series = f"{name} alloc on {signature}"
            self._add(series, 0.0, event.time)

    def _job_created(self, event: JobCreated) -> None:
        desc = event.submit_desc
        try:
            request = ResourceRequest.from_wire(desc["resources"])
        except (KeyError, TypeError, ValueError):
            return
        ids = (desc.get("tasks") or {}).get("ids") or ()
        self.submits.setdefault(event.job, []).append((ids, request))
        text = request_text(request)
        self.labels.setdefault(text, f"T{len(self.labels) + 1}")

    def _request_of(self, job: int, task: int) -> ResourceRequest | None:
        submits = self.submits.get(job) or []
        for ids, request in submits:
            for item in ids:
                start, last, step = item[0], item[1], item[2]
                if start <= task <= last and (task - start) % max(step, 1) == 0:
                    return request
        return submits[-1][1] if submits else None

    def _started(self, event: TaskStarted) -> None:
        request = self._request_of(event.job, event.task)
        if request is None:
            return
        label = self.labels.setdefault(request_text(request), f"T{len(self.labels) + 1}")
        shares: list[tuple[str, float]] = []
        for worker_id in event.workers:
            worker = self.workers.get(worker_id)
            if worker is None:
                continue
            for name, capacity in worker.capacities.items():
                if request.n_nodes > 0:
                    fraction = 1.0
                else:
                    entry = request.get(name)
                    if entry is None:
                        continue
                    if entry.policy == AllocationPolicy.ALL:
                        fraction = 1.0
                    else:
                        fraction = entry.amount / capacity if capacity else 0.0
                shares.append((f"{name} alloc on {worker.signature}", fraction))
        for series, fraction in shares:
            self._add(series, fraction, event.time)
        self.running[(event.job, event.task)] = _Running(
            event.time, tuple(event.workers), label, shares
        )

    def _release(self, running: _Running, time: float) -> None:
        for series, fraction in running.shares:
            self._add(series, -fraction, time)


def build_report(events: Sequence[Event], window: Window = Window()) -> ReportData:
    if not events:
        raise HqError("Empty journal")
    first = events[0]
    if not isinstance(first, ServerStart):
        raise HqError("Journal does not start with server start event")
    builder = _Builder(first.time, window)
    for event in events:
        if event.time > builder.hi:
            break
        builder.apply(event)
    end = min(builder.last_time, builder.hi) if builder.hi != math.inf else builder.last_time
    x_lo = builder.lo - first.time
    x_hi = max(end - first.time, x_lo)
    series: dict[str, list[Point]] = {}
    for name, points in builder.points.items():
        if points:
            # Extend each step line to the end of the window.
            series[name] = [*points, (x_hi, points[-1][1])] if points[-1][0] < x_hi else points
    labels = {label: text for text, label in builder.labels.items()}
    return ReportData(
        server_started=first.time,
        window=window,
        x_range=(x_lo, x_hi),
        worker_series=series,
        requests=dict(sorted(labels.items(), key=lambda kv: int(kv[0][1:]))),
        finished=builder.finished,
        failed=builder.failed,
    )


def quartiles(values: Iterable[float]) -> tuple[float, float, float, float, float]:
    """(min, q1, median, q3, max) with linear interpolation."""
    data = sorted(values)

    def at(q: float) -> float:
        position = (len(data) - 1) * q
        low = math.floor(position)
        high = min(low + 1, len(data) - 1)
        return data[low] + (data[high] - data[low]) * (position - low)

    return data[0], at(0.25), at(0.5), at(0.75), data[-1]

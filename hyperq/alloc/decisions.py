"""The allocator's decisions (alloc.md §4, §5.3, §5.4): pure functions of the model and
the queues. No trio, no subprocess, no clock: the service passes `now` in and carries
the decisions out. The import-linter contract "allocation decisions are pure" holds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperq.alloc.queue import (
    CRASH_WINDOW,
    ENDED,
    FINISHED,
    QUEUED,
    RUNNING,
    Allocation,
    Queue,
)
from hyperq.common.resources import AllocationPolicy, ResourceDescriptor, ResourceRequest
from hyperq.server.model.state import Model

# A capacity of None means "unlimited" (a resource the queue's workers were not told of).
Capacity = dict[str, int | None]


@dataclass(frozen=True)
class Demand:
    """How many workers a queue could use now."""

    sn_workers: int = 0
    mn_allocs: int = 0
    mn_per_alloc: int = 0


def waiting_groups(
    model: Model,
) -> tuple[list[tuple[ResourceRequest, int]], dict[ResourceRequest, int]]:
    """Waiting, unplaced tasks: single-node (request, count) in ready order, and
    multi-node counts by request."""
    single: dict[ResourceRequest, int] = {}
    multi: dict[ResourceRequest, int] = {}
    for submit in model.ready.values():
        count = submit.pristine_left + len(submit.requeued)
        if count <= 0:
            continue
        target = multi if submit.request.n_nodes > 0 else single
        target[submit.request] = target.get(submit.request, 0) + count
    return list(single.items()), multi


def worker_capacity(queue: Queue) -> tuple[Capacity, bool]:
    """Resources of one imagined worker of the queue, and whether unlisted resource
    kinds are unlimited (no known resources)."""
    if queue.known_resources is not None:
        try:
            descriptor = ResourceDescriptor.from_json(queue.known_resources)
            return {item.name: item.capacity() for item in descriptor.items}, False
        except (ValueError, KeyError, TypeError):
            pass
    if queue.params.cli_resource_descriptor is not None:
        try:
            descriptor = ResourceDescriptor.from_json(queue.params.cli_resource_descriptor)
            return {item.name: item.capacity() for item in descriptor.items}, True
        except (ValueError, KeyError, TypeError):
            pass
    return {}, True


def _fit_count(
    request: ResourceRequest, free: Capacity, full: Capacity, unlisted_unlimited: bool
) -> float:
    """How many tasks of `request` still fit into `free` (math.inf if unbounded)."""
    fits = math.inf
    for entry in request.entries:
        if entry.name in free:
            have = free[entry.name]
        elif unlisted_unlimited:
            have = None
        else:
            return 0
        if have is None:
            continue
        if entry.policy == AllocationPolicy.ALL:
            # `all` takes the whole pool: one such task per untouched worker.
            fits = min(fits, 1 if have == full.get(entry.name) and have > 0 else 0)
        elif entry.amount > 0:
            fits = min(fits, have // entry.amount)
    return fits


def _take(request: ResourceRequest, free: Capacity, count: int) -> None:
    for entry in request.entries:
        have = free.get(entry.name)
        if have is None:
            continue
        if entry.policy == AllocationPolicy.ALL:
            free[entry.name] = 0
        else:
            free[entry.name] = have - entry.amount * count


def single_node_demand(
    groups: Sequence[tuple[ResourceRequest, int]], queues: Sequence[Queue]
) -> dict[int, int]:
    """sn_workers per queue (§5.3): distribute the waiting tasks over `backlog ×
    max_workers_per_alloc` imagined workers of each queue, earlier queues first."""
    left = [count for _, count in groups]
    demand: dict[int, int] = {}
    for queue in queues:
        full, unlimited = worker_capacity(queue)
        used_workers = 0
        for _ in range(queue.params.backlog * queue.params.max_workers_per_alloc):
            if not any(left):
                break
            free: Capacity = dict(full)
            took = False
            for i, (request, _count) in enumerate(groups):
                if left[i] == 0 or request.min_time > queue.params.timelimit:
                    continue
                fits = _fit_count(request, free, full, unlimited)
                if fits <= 0:
                    continue
                n = left[i] if fits == math.inf else min(left[i], int(fits))
                left[i] -= n
                _take(request, free, n)
                took = True
            if not took:
                break
            if _meets_utilization(queue, full, free):
                used_workers += 1
        demand[queue.id] = used_workers
    return demand


def _meets_utilization(queue: Queue, full: Capacity, free: Capacity) -> bool:
    wanted = queue.params.min_utilization
    total = full.get("cpus")
    if wanted <= 0 or not total:
        return True
    used = total - (free.get("cpus") or 0)
    return used / total >= wanted


def multi_node_demand(
    multi: Mapping[ResourceRequest, int], queues: Sequence[Queue]
) -> dict[int, tuple[int, int]]:
    """(mn_allocs, mn_per_alloc) per queue: each group of equal multi-node requests goes
    to the first queue whose allocations are big and long enough."""
    out: dict[int, tuple[int, int]] = {}
    for request, count in multi.items():
        for queue in queues:
            if (
                queue.params.max_workers_per_alloc >= request.n_nodes
                and queue.params.timelimit >= request.min_time
            ):
                current = out.get(queue.id)
                if current is None or current[1] < request.n_nodes:
                    out[queue.id] = (count, request.n_nodes)
                break
    return out


def demand(model: Model, queues: Sequence[Queue]) -> dict[int, Demand]:
    single, multi = waiting_groups(model)
    sn = single_node_demand(single, queues)
    mn = multi_node_demand(multi, queues)
    return {q.id: Demand(sn.get(q.id, 0), *mn.get(q.id, (0, 0))) for q in queues}


def permit(queue: Queue, need: Demand) -> list[int]:
    """Worker counts of the allocations to submit now (§5.4)."""
    params = queue.params
    if params.max_worker_count is None:
        remaining: float = math.inf
    else:
        remaining = params.max_worker_count - queue.active_workers()
    if remaining <= 0:
        return []
    mn, sn = need.mn_allocs, need.sn_workers
    queued = queue.queued()
    for allocation in queued:
        w = allocation.target_worker_count
        if mn > 0 and need.mn_per_alloc <= w:
            mn -= 1
            w -= need.mn_per_alloc
        sn = max(0, sn - w)
    per = params.max_workers_per_alloc
    sizes = [need.mn_per_alloc] * mn + [per] * (sn // per) + ([sn % per] if sn % per else [])
    sizes = sizes[: max(0, params.backlog - len(queued))]
    out = []
    for size in sizes:
        n = int(min(size, remaining))
        if n <= 0:
            break
        remaining -= n
        out.append(n)
    return out


# ---------------------------------------------------------------------------------------
# State changes (§4). Each returns what the service must journal / tell the limiter.


@dataclass(frozen=True)
class Change:
    """`started`/`finished`: journal that event; `outcome`: 'success', 'fail' or None
    for the limiter; `warning`: a line for the server log."""

    started: bool = False
    finished: bool = False
    outcome: str | None = None
    warning: str | None = None


def worker_connected(allocation: Allocation, worker_id: int, now: float) -> Change:
    if allocation.state == QUEUED:
        allocation.state = RUNNING
        allocation.started_at = now
        allocation.status_errors = 0
        allocation.connected = {worker_id}
        return Change(started=True)
    if allocation.state == RUNNING:
        allocation.connected.add(worker_id)
        if len(allocation.connected) > allocation.target_worker_count:
            return Change(
                warning=f"Allocation {allocation.id} has more workers than its target "
                f"({allocation.target_worker_count})"
            )
        return Change()
    return Change(warning=f"Worker {worker_id} connected to an ended allocation {allocation.id}")


def crashed(reason: str, lifetime: float) -> bool:
    return reason in ("ConnectionLost", "HeartbeatLost") and lifetime <= CRASH_WINDOW


def worker_lost(allocation: Allocation, reason: str, lifetime: float, now: float) -> Change:
    if allocation.state == QUEUED:
        return Change(warning=f"Worker from queued allocation {allocation.id} was lost")
    if allocation.state != RUNNING:
        return Change()
    allocation.lost.append(crashed(reason, lifetime))
    if len(allocation.lost) < allocation.target_worker_count:
        return Change()
    allocation.state = FINISHED
    allocation.ended_at = now
    allocation.failed = all(allocation.lost)
    return Change(finished=True, outcome="fail" if allocation.failed else "success")


@dataclass(frozen=True)
class Status:
    """What the manager says of one job: queued | running | finished | failed."""

    state: str
    started_at: float | None = None
    ended_at: float | None = None


def status_changed(allocation: Allocation, status: Status, now: float) -> Change:
    if status.state == "queued" or not allocation.is_active:
        return Change()
    if status.state == "running":
        if allocation.state == QUEUED:
            allocation.state = RUNNING
            allocation.started_at = status.started_at or now
            allocation.status_errors = 0
            # Journaled here too: its workers may connect only later (or after a server
            # restart), and a restored allocation must come back as running.
            return Change(started=True)
        return Change()
    allocation.state = ENDED
    allocation.failed = status.state == "failed"
    if allocation.started_at is None and status.started_at is not None:
        allocation.started_at = status.started_at
    allocation.ended_at = status.ended_at if status.ended_at is not None else now
    return Change(finished=True, outcome="fail" if allocation.failed else "success")


# After this many failed status queries an allocation is given up on.
MAX_STATUS_ERRORS = 10


def status_failed(allocation: Allocation, now: float) -> Change:
    if not allocation.is_active:
        return Change()
    allocation.status_errors += 1
    if allocation.status_errors <= MAX_STATUS_ERRORS:
        return Change()
    was_running = allocation.state == RUNNING
    allocation.state = ENDED
    allocation.ended_at = now
    # A running allocation we lost track of is not counted as failed (§4).
    allocation.failed = not was_running
    return Change(finished=True)


def known_resources_of(configuration: Mapping[str, Any]) -> dict[str, Any] | None:
    resources = configuration.get("resources")
    return dict(resources) if isinstance(resources, Mapping) else None

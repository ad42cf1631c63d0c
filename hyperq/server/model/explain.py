"""`hq task explain` (graphs.md §3): could a waiting task ever run on each worker?

Static capacity only (a worker's total resources and lifetime, not what is free now),
per connected worker and per resource variant. Pure: time comes in as `now`.
"""

from __future__ import annotations

from typing import Any

from hyperq.common.errors import HqError
from hyperq.common.resources import AMOUNT_SCALE, AllocationPolicy, ResourceRequest
from hyperq.server.model.jobs import ACTIVE, TaskState
from hyperq.server.model.state import Model
from hyperq.server.model.workers import Worker


def _duration(seconds: float) -> dict[str, int]:
    whole = int(seconds)
    return {"secs": whole, "nanos": round((seconds - whole) * 1e9)}


def _items(model: Model, worker: Worker, request: ResourceRequest, now: float) -> list[Any]:
    """The checks of one variant on one worker, each with whether it blocks."""
    items: list[tuple[dict[str, Any], bool]] = []
    if request.min_time > 0:
        life = worker.remaining_lifetime(now)
        item = {"Time": {"min_time": _duration(request.min_time),
                         "remaining_time": None if life is None else _duration(life)}}  # fmt: skip
        items.append((item, life is not None and request.min_time > life))
    if request.n_nodes > 0:
        group = worker.configuration.get("group")
        size = sum(
            1
            for other in model.workers.values()
            if other.is_connected and other.configuration.get("group") == group
        )
        item = {"WorkerGroup": {"n_nodes": request.n_nodes, "group_size": size}}
        items.append((item, request.n_nodes > size))
        return items
    # cpus first, as in the original's resource index; then in request order.
    entries = sorted(request.entries, key=lambda entry: entry.name != "cpus")
    for entry in entries:
        amount = AMOUNT_SCALE if entry.policy == AllocationPolicy.ALL else entry.amount
        pool = worker.descriptor.get(entry.name) if worker.descriptor is not None else None
        provided = pool.capacity() if pool is not None else 0
        item = {"Resources": {"resource": entry.name, "request_amount": amount,
                              "worker_amount": provided}}  # fmt: skip
        items.append((item, amount > provided))
    return items


def explain_task(model: Model, job_id: int, task_id: int, now: float) -> dict[str, Any]:
    """The explanation (JSON shape of graphs.md §3.3, `enabled` flags added per variant
    for the table); raises HqError with the original's messages."""
    job = model.jobs.get(job_id)
    if job is None:
        raise HqError("Job not found")
    found = job.locate(task_id)
    if found is None:
        raise HqError("Task not found")
    state = job.state_of(task_id)
    if state not in ACTIVE:
        raise HqError("Explain command works only for tasks in WAITING or RUNNING state")
    submit = found[0]
    workers = []
    for worker_id in sorted(model.workers):
        worker = model.workers[worker_id]
        if not worker.is_connected:
            continue
        variants = [_items(model, worker, request, now) for request in submit.variants]
        workers.append(
            {
                "worker_id": worker_id,
                "variants": [[item for item, _ in variant] for variant in variants],
                "enabled": [not any(blocks for _, blocks in variant) for variant in variants],
            }
        )
    return {
        "task_id": {"job_id": job_id, "job_task_id": task_id},
        "explanation": {
            "n_task_deps": submit.n_deps,
            "n_waiting_deps": submit.waiting_deps if state == TaskState.WAITING else 0,
            "workers": workers,
        },
    }

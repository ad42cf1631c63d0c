"""Model views turned into the reply shapes of the client contract.

The shapes follow the JSON of jobs.md §10 and worker.md §7, with epoch floats for
timestamps (the client's JSON renderer formats them) and string keys in maps.
No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperq.common.resources import ResourceRequest
from hyperq.server.model.state import JobInfo, Model, TaskView, WorkerView

LOST_STATES = {
    None: "RUNNING",
    "Stopped": "STOPPED",
    "IdleTimeout": "IDLE TIMEOUT",
    "TimeLimitReached": "TIME LIMIT REACHED",
    "ConnectionLost": "CONNECTION LOST",
    "HeartbeatLost": "HEARTBEAT LOST",
}


def job_info_wire(info: JobInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "task_count": info.task_count,
        "is_open": info.is_open,
        "cancel_reason": info.cancel_reason,
        "task_stats": dict(info.task_stats),
        "state": str(info.state),
    }


def _output_path(stream: Any) -> str | None:
    if not stream:
        return None
    return str(stream["path"])


def task_desc_json(desc: Mapping[str, Any]) -> dict[str, Any]:
    """TASK_DESC of jobs.md §10, from a stored submit description."""
    program = desc["program"]
    variants = desc.get("variants") or [desc["resources"]]
    pin = desc.get("pin")
    return {
        "program": {
            "args": list(program["args"]),
            "env": dict(program.get("env", {})),
            "cwd": program["cwd"],
            "stdout": _output_path(program.get("stdout")),
            "stderr": _output_path(program.get("stderr")),
        },
        "resources": [ResourceRequest.from_wire(v).to_json() for v in variants],
        "pin_mode": "openmp" if pin == "omp" else pin,
        "priority": int(desc.get("priority", 0)),
        "time_limit": desc.get("time_limit"),
        "task_dir": bool(desc.get("task_dir")),
        "crash_limit": desc.get("crash_limit", 5),
    }


def task_wire(view: TaskView, desc: Mapping[str, Any]) -> dict[str, Any]:
    program = desc["program"]
    return {
        "id": view.task_id,
        "state": str(view.state),
        "cwd": program["cwd"],
        "stdout": _output_path(program.get("stdout")),
        "stderr": _output_path(program.get("stderr")),
        "instance": view.instance,
        "started_at": view.started_at,
        "finished_at": view.finished_at,
        "workers": list(view.workers),
        "error": view.error,
        "crash_count": view.crash_count,
        "submit_dir": desc["submit_dir"],
    }


def task_info_wire(
    view: TaskView, desc: Mapping[str, Any], job_id: int, server_uid: str
) -> dict[str, Any]:
    """A TASK plus what `task info` shows about how it runs."""
    wire = task_wire(view, desc)
    td = task_desc_json(desc)
    wire.update(
        {
            "job_id": job_id,
            "program": td["program"],
            "resources": td["resources"],
            "priority": td["priority"],
            "pin": desc.get("pin"),
            "time_limit": td["time_limit"],
            "task_dir": td["task_dir"],
            "crash_limit": td["crash_limit"],
            "deps": list(desc.get("deps") or ()),
            "entry": view.entry,
            "submit_dir": desc["submit_dir"],
            "server_uid": server_uid,
        }
    )
    return wire


def job_detail_wire(model: Model, job_id: int, with_tasks: bool) -> dict[str, Any] | None:
    info = model.job_info(job_id)
    if info is None:
        return None
    submits = model.job_submits(job_id)
    failed, failed_count = model.failed_tasks(job_id, 5)
    tasks = []
    if with_tasks:
        tasks = [task_wire(view, submits[view.submit_index]) for view in model.iter_tasks(job_id)]
    return {
        "info": job_info_wire(info),
        "state": str(info.state),
        "max_fails": info.max_fails,
        "started_at": info.submitted_at,
        "finished_at": info.completed_at,
        **_submits_wire(submits),
        "tasks": tasks,
        "workers": list(info.workers),
        "failed_tasks": [task_wire(view, submits[view.submit_index]) for view in failed],
        "failed_count": failed_count,
    }


def _submits_wire(submits: list[Mapping[str, Any]]) -> dict[str, Any]:
    """`submits` of jobs.md §10: `{"array": …}` per array submit, `{"graph": [TASK_DESC…]}`
    per graph submit (the model keeps one description per graph task; `graph` in it
    numbers the user's submits within the job)."""
    out: list[dict[str, Any]] = []
    dirs: list[str] = []
    ids: list[list[list[int]]] = []
    group: Any = None
    for desc in submits:
        if "graph" in desc:
            items = [[desc["id"], desc["id"], 1]]
        else:
            items = [list(item) for item in desc["tasks"]["ids"]]
        if "graph" not in desc:
            group = None
            out.append({"array": task_desc_json(desc)})
            dirs.append(desc["submit_dir"])
            ids.append(items)
            continue
        if group is None or desc["graph"] != group:
            group = desc["graph"]
            out.append({"graph": []})
            dirs.append(desc["submit_dir"])
            ids.append([])
        out[-1]["graph"].append(task_desc_json(desc))
        ids[-1].extend(items)
    for items in ids:
        items.sort()
    return {"submits": out, "submit_dirs": dirs, "submit_ids": ids}


def worker_wire(view: WorkerView) -> dict[str, Any]:
    config = dict(view.configuration)
    manager = config.pop("manager", None)
    manager_job_id = config.pop("manager_job_id", None)
    pid = config.pop("pid", None)
    config.pop("overview_interval", None)
    last = view.last_task_started
    return {
        "id": view.id,
        "configuration": config,
        "allocation": {"manager": manager, "id": manager_job_id} if manager else None,
        "runtime_info": (
            {
                "SingleNodeTasks": {
                    "assigned_tasks": view.assigned_tasks,
                    "running_tasks": view.running_tasks,
                    "is_reserved": False,
                }
            }
            if view.is_running
            else None
        ),
        "last_task_started": (
            None
            if last is None
            else {"task_id": {"job_id": last[0], "job_task_id": last[1]}, "time": last[2]}
        ),
        "started": view.started_at,
        "ended": None if view.ended_at is None else {"at": view.ended_at},
        "state": LOST_STATES.get(view.lost_reason, str(view.lost_reason)),
        "pid": pid,
        "overview_interval": view.configuration.get("overview_interval"),
    }

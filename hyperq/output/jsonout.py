"""Machine output: exactly one pretty-printed JSON value per command (`json` mode).

The shapes are those of jobs.md §10 and worker.md §7, key for key: the wire forms the
server sends carry epoch floats and a few extra fields, which are turned into RFC3339
strings and dropped here, so the two forms can evolve apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyperq.common.duration import format_timestamp
from hyperq.common.errors import HqError
from hyperq.output.base import Output, Progress, Task, TaskOutput, print_json, task_paths
from hyperq.server.info import ServerInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hyperq.common.idrange import IdRanges
    from hyperq.common.resources import ResourceDescriptor


class JsonOutput(Output):
    mode = "json"

    def job_submitted(self, job_id: int) -> None:
        print_json({"id": job_id})

    def job_opened(self, job_id: int) -> None:
        print_json({"id": job_id})

    def server_info(self, info: ServerInfo, server_dir: Path | None) -> None:
        print_json(
            {
                "server_dir": str(server_dir) if server_dir is not None else None,
                "server_uid": info.server_uid,
                "worker_host": info.worker_host,
                "client_host": info.client_host,
                "client_port": info.client_port,
                "worker_port": info.worker_port,
                "pid": info.pid,
                "start_date": format_timestamp(info.start_time),
                "version": info.version,
                "journal_path": info.journal_path,
            }
        )

    def generated_access(self, path: Path) -> None:
        print_json({})

    def nothing(self) -> None:
        print_json({})

    # Jobs and tasks

    def job_list(self, jobs: Sequence[Mapping[str, Any]], total: int, verbose: bool) -> None:
        print_json([job_info_json(job) for job in jobs])

    def job_summary(self, counts: Mapping[str, int]) -> None:
        out = {
            name.capitalize(): int(counts.get(name, 0))
            for name in ("running", "waiting", "finished", "failed", "aborted", "canceled")
        }
        if counts.get("opened", 0) > 0:
            out["Opened"] = int(counts["opened"])
        print_json(out)

    def job_details(
        self, jobs: Sequence[Mapping[str, Any]], worker_names: Mapping[int, str]
    ) -> None:
        print_json([job_detail_json(job) for job in jobs])

    def task_ids(self, jobs: Mapping[int, IdRanges]) -> None:
        print_json({str(job_id): list(jobs[job_id]) for job_id in sorted(jobs)})

    def task_list(
        self,
        jobs: Mapping[int, Sequence[Task]],
        worker_names: Mapping[int, str],
        verbose: bool,
    ) -> None:
        print_json(
            {
                str(job_id): [task_json(task, job_id) for task in _by_id(jobs[job_id])]
                for job_id in sorted(jobs)
            }
        )

    def task_info(
        self, job_id: int, tasks: Sequence[Task], worker_names: Mapping[int, str], verbose: bool
    ) -> None:
        print_json([task_json(task, job_id) for task in tasks])

    def task_explanation(self, data: Mapping[str, Any]) -> None:
        explanation = data["explanation"]
        workers = [
            {"worker_id": w["worker_id"], "variants": w["variants"]} for w in explanation["workers"]
        ]
        print_json(
            {
                "task_id": data["task_id"],
                "explanation": {
                    "n_task_deps": explanation["n_task_deps"],
                    "n_waiting_deps": explanation["n_waiting_deps"],
                    "workers": workers,
                },
            }
        )

    def job_progress(self, progress: Progress, final: bool) -> None:
        # The command prints its one value (`{}`) when it ends.
        pass

    def job_output(
        self, job_id: int, tasks: Sequence[TaskOutput], stream: str, header: bool
    ) -> None:
        raise HqError("JSON output mode doesn't support job output")

    # Workers

    def worker_list(self, workers: Sequence[Mapping[str, Any]]) -> None:
        print_json([worker_json(worker, runtime=False) for worker in workers])

    def worker_info(self, workers: Sequence[Mapping[str, Any]]) -> None:
        print_json([worker_json(worker, runtime=True) for worker in workers])

    def worker_address(self, hostname: str) -> None:
        print_json(hostname)

    def hwdetect(self, descriptor: ResourceDescriptor) -> None:
        print_json(descriptor.to_json())


def _ts(value: float | None) -> str | None:
    return format_timestamp(value) if value is not None else None


def _by_id(tasks: Sequence[Task]) -> list[Task]:
    return sorted(tasks, key=lambda task: task["id"])


def job_info_json(job: Mapping[str, Any]) -> dict[str, Any]:
    """JOB_INFO (jobs.md §10)."""
    stats = job.get("task_stats") or {}
    return {
        "id": job["id"],
        "name": job.get("name", ""),
        "task_count": job.get("task_count", 0),
        "is_open": bool(job.get("is_open", False)),
        "cancel_reason": job.get("cancel_reason"),
        "task_stats": {
            name: int(stats.get(name, 0))
            for name in ("running", "finished", "failed", "canceled", "aborted", "waiting")
        },
    }


def task_desc_json(desc: Mapping[str, Any]) -> dict[str, Any]:
    """TASK_DESC (jobs.md §10), stage-1 paths as submitted."""
    program = desc.get("program") or {}
    return {
        "program": {
            "args": [str(arg) for arg in program.get("args") or []],
            "env": dict(program.get("env") or {}),
            "cwd": program.get("cwd"),
            "stdout": program.get("stdout"),
            "stderr": program.get("stderr"),
        },
        "resources": list(desc.get("resources") or []),
        "pin_mode": "openmp" if desc.get("pin_mode") in ("omp", "openmp") else desc.get("pin_mode"),
        "priority": desc.get("priority", 0),
        "time_limit": desc.get("time_limit"),
        "task_dir": bool(desc.get("task_dir", False)),
        "crash_limit": desc.get("crash_limit"),
    }


def job_detail_json(job: Mapping[str, Any]) -> dict[str, Any]:
    """JOB_DETAIL (jobs.md §10) from the job-info reply's JOB_DETAIL."""
    info = job.get("info") or {}
    job_id = int(info["id"])
    submits: list[dict[str, Any]] = []
    for submit in job.get("submits") or []:
        if "graph" in submit:
            submits.append({"graph": [task_desc_json(d) for d in submit["graph"]]})
        else:
            submits.append({"array": task_desc_json(submit.get("array") or {})})
    return {
        "info": job_info_json(info),
        "max_fails": job.get("max_fails"),
        "started_at": _ts(job.get("started_at")),
        "finished_at": _ts(job.get("finished_at")),
        "submits": submits,
        "tasks": [task_json(task, job_id) for task in _by_id(job.get("tasks") or [])],
    }


def task_json(task: Task, job_id: int) -> dict[str, Any]:
    """TASK (jobs.md §10): only the fields its state has; paths resolved once started."""
    state = str(task.get("state", ""))
    out: dict[str, Any] = {"id": task["id"], "state": state}
    paths = task_paths(task, job_id)
    if paths is not None:
        out["cwd"], out["stdout"], out["stderr"] = paths
    started = task.get("started_at")
    if state in ("running", "finished", "failed") and started is not None:
        out["started_at"] = format_timestamp(started)
        workers = [int(w) for w in task.get("workers") or []]
        if len(workers) == 1:
            out["worker"] = workers[0]
        else:
            out["workers"] = workers
    if state in ("finished", "failed") and task.get("finished_at") is not None:
        out["finished_at"] = format_timestamp(task["finished_at"])
    if state == "failed":
        out["error"] = task.get("error") or ""
    return out


_CONFIGURATION_KEYS = (
    "heartbeat_interval",
    "idle_timeout",
    "time_limit",
    "work_dir",
    "hostname",
    "group",
    "listen_address",
    "on_server_lost",
    "min_utilization",
    "resources",
)


def worker_json(worker: Mapping[str, Any], *, runtime: bool) -> dict[str, Any]:
    """The worker object of worker.md §7 (`runtime_info` only for `worker info`)."""
    from hyperq.output.base import manager_info

    configuration = worker.get("configuration") or {}
    manager = manager_info(worker)
    last = worker.get("last_task_started")
    ended = worker.get("ended")
    return {
        "id": worker["id"],
        "configuration": {key: configuration.get(key) for key in _CONFIGURATION_KEYS},
        "allocation": {"manager": manager[0], "id": manager[1]} if manager else None,
        "runtime_info": worker.get("runtime_info") if runtime else None,
        "last_task_started": (
            {"task_id": dict(last.get("task_id") or {}), "time": _ts(last.get("time"))}
            if last
            else None
        ),
        "started": _ts(worker.get("started")),
        "ended": {"at": _ts(ended.get("at"))} if ended else None,
    }

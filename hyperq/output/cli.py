"""Human tables: the `cli` output mode.

Row labels, column names and cell texts are what scripts and the original's tests parse
(jobs.md §8–§9, worker.md §6), so they are fixed; colour only when enabled. The clock is
read only for "until now" durations of things still running.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hyperq.common import log
from hyperq.common.duration import (
    format_date,
    format_duration,
    format_elapsed,
    format_local,
    format_timestamp,
)
from hyperq.output.base import (
    Output,
    Progress,
    Task,
    job_state,
    manager_info,
    task_paths,
)
from hyperq.output.table import color_state, paint, render_horizontal, render_vertical
from hyperq.server.info import ServerInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hyperq.common.idrange import IdRanges
    from hyperq.common.resources import ResourceDescriptor

PROGRESS_WIDTH = 40
MAX_NAME = 50
MAX_DISPLAYED_WORKERS = 2
SHOWN_FAILED_TASKS = 5
ERROR_CUT_LIST = 16
ERROR_CUT_INFO = 237


class CliOutput(Output):
    mode = "cli"

    def __init__(self, colors: bool, clock: Callable[[], float] = time.time) -> None:
        self.colors = colors
        self.clock = clock
        self._last_progress = ""

    def _state(self, state: str, *, worker: bool = False) -> str:
        return color_state(state.upper(), colors=self.colors, worker=worker)

    def job_submitted(self, job_id: int) -> None:
        print(f"Job submitted successfully, job ID: {job_id}", flush=True)

    def job_opened(self, job_id: int) -> None:
        print(f"Job {job_id} is open.", flush=True)

    def server_info(self, info: ServerInfo, server_dir: Path | None) -> None:
        rows: list[tuple[str, str]] = []
        if server_dir is not None:
            rows.append(("Server directory", str(server_dir)))
        rows += [
            ("Server UID", info.server_uid),
            ("Client host", info.client_host),
            ("Client port", str(info.client_port)),
            ("Worker host", info.worker_host),
            ("Worker port", str(info.worker_port)),
            ("Version", info.version),
            ("Pid", str(info.pid)),
            ("Start date", format_date(info.start_time)),
            ("Journal path", info.journal_path or ""),
        ]
        print(render_vertical(rows), flush=True)

    # Jobs

    def job_list(self, jobs: Sequence[Mapping[str, Any]], total: int, verbose: bool) -> None:
        header = ["ID", "Name", "State", "Tasks"]
        if verbose:
            header.append("Cancel Reason")
        rows = []
        has_open = False
        for job in jobs:
            has_open = has_open or bool(job.get("is_open"))
            row = [
                f"*{job['id']}" if job.get("is_open") else str(job["id"]),
                truncate_middle(str(job.get("name", "")), MAX_NAME),
                self._state(job_state(job)),
                str(job.get("task_count", 0)),
            ]
            if verbose:
                row.append(job.get("cancel_reason") or "")
            rows.append(row)
        lines = [render_horizontal(header, rows, right_align={0}, colors=self.colors)]
        if has_open:
            lines.append("* = Open jobs")
        if len(jobs) != total:
            verb, noun = ("is", "job") if total == 1 else ("are", "jobs")
            lines.append(f"There {verb} {total} {noun} in total. Use `--all` to display all jobs.")
        print("\n".join(lines), flush=True)

    def job_summary(self, counts: Mapping[str, int]) -> None:
        rows = [
            [self._state(state), str(counts.get(state, 0))]
            for state in ("running", "waiting", "finished", "failed", "aborted", "canceled")
        ]
        print(render_horizontal(["Status", "Count"], rows, {1}, colors=self.colors), flush=True)

    def job_details(
        self, jobs: Sequence[Mapping[str, Any]], worker_names: Mapping[int, str]
    ) -> None:
        for job in jobs:
            print(self._job_table(job, worker_names), flush=True)
            failed = self._failed_tasks(job, worker_names)
            if failed:
                print(failed, flush=True)

    def _job_table(self, job: Mapping[str, Any], worker_names: Mapping[int, str]) -> str:
        info = job.get("info") or {}
        stats = info.get("task_stats") or {}
        task_count = int(info.get("task_count", 0))
        if task_count == 1:
            state = self._state(job_state({**info, "state": job.get("state") or info.get("state")}))
        else:
            state = self._state_lines(stats, task_count)
        submits = job.get("submits") or []
        rows: list[tuple[str, str]] = [
            ("ID", str(info.get("id", ""))),
            ("Name", str(info.get("name", ""))),
            ("State", state),
            ("Cancel Reason", info.get("cancel_reason") or ""),
            (
                "Session",
                paint("open", "green", colors=self.colors) if info.get("is_open") else "closed",
            ),
            ("Tasks", _tasks_cell(task_count, submit_ids(job))),
            ("Workers", _job_workers(job.get("workers") or [], worker_names)),
        ]
        if len(submits) == 1 and "array" in submits[0]:
            rows += self._task_desc_rows(submits[0]["array"])
        started = job.get("started_at")
        rows.append(("Submission date", format_date(started) if started is not None else ""))
        if len(submits) == 1:
            rows.append(("Submission directory", submit_dirs(job)[0] or ""))
        if started is None:
            makespan = ""
        else:
            end = job.get("finished_at")
            makespan = format_elapsed((end if end is not None else self.clock()) - started)
        rows.append(("Makespan", makespan))
        return render_vertical(rows, colors=self.colors)

    def _state_lines(self, stats: Mapping[str, int], total: int) -> str:
        lines = [progress_bar(stats, total, PROGRESS_WIDTH, colors=self.colors)]
        waiting = stats.get("waiting")
        if waiting is None:
            done = sum(stats.get(s, 0) for s in ("running", "finished", "failed", "canceled"))
            waiting = max(total - done - stats.get("aborted", 0), 0)
        counts = {**stats, "waiting": waiting}
        for state in ("running", "failed", "finished", "canceled", "waiting", "aborted"):
            count = counts.get(state, 0)
            if count > 0:
                text = f"{state.upper()} ({count})"
                lines.append(paint(text, _STATE_COLOR[state], colors=self.colors))
        return "\n".join(lines)

    def _task_desc_rows(self, desc: Mapping[str, Any]) -> list[tuple[str, str]]:
        program = desc.get("program") or {}
        return [
            ("Resources", format_resources(desc.get("resources"))),
            ("Pin", pin_text(desc.get("pin_mode"))),
            ("Priority", str(desc.get("priority", 0))),
            ("Command", "\n".join(str(arg) for arg in program.get("args") or [])),
            ("Stdout", stdio_text(program.get("stdout"))),
            ("Stderr", stdio_text(program.get("stderr"))),
            ("Environment", env_text(program.get("env"))),
            ("Working directory", str(program.get("cwd") or "")),
            ("Task time limit", duration_or_none(desc.get("time_limit"))),
            ("Crash limit", str(desc.get("crash_limit", ""))),
        ]

    def _failed_tasks(self, job: Mapping[str, Any], worker_names: Mapping[int, str]) -> str:
        failed = sorted(job.get("failed_tasks") or [], key=lambda t: t["id"])[:SHOWN_FAILED_TASKS]
        if not failed:
            return ""
        rows = [
            [
                str(task["id"]),
                _task_workers(task, worker_names),
                paint(str(task.get("error") or ""), "red", colors=self.colors),
            ]
            for task in failed
        ]
        table = render_horizontal(["Task ID", "Worker", "Error"], rows, colors=self.colors)
        count = int(job.get("failed_count", len(failed)))
        if len(failed) < count:
            return f"{table}\n{count} tasks failed. ({len(failed)} shown)"
        return f"{table}\n{count} tasks failed."

    def task_ids(self, jobs: Mapping[int, IdRanges]) -> None:
        if len(jobs) == 1:
            (ranges,) = jobs.values()
            print(format_ranges(ranges), flush=True)
            return
        for job_id in sorted(jobs):
            print(f"{job_id}: {format_ranges(jobs[job_id])}", flush=True)

    def task_list(
        self,
        jobs: Mapping[int, Sequence[Task]],
        worker_names: Mapping[int, str],
        verbose: bool,
    ) -> None:
        with_job = len(jobs) != 1
        header = ["Task ID", "State", "Worker", "Makespan", "Error"]
        if with_job:
            header.insert(0, "Job ID")
        rows = []
        truncated = False
        now = self.clock()
        for job_id in sorted(jobs):
            for task in sorted(jobs[job_id], key=lambda t: t["id"]):
                error = ""
                if str(task.get("state")) == "failed":
                    error = str(task.get("error") or "")
                    if not verbose and len(error) >= ERROR_CUT_LIST:
                        error = error[:ERROR_CUT_LIST] + "..."
                        truncated = True
                    error = paint(error, "red", colors=self.colors)
                row = [
                    str(task["id"]),
                    self._state(str(task.get("state", ""))),
                    _task_workers(task, worker_names),
                    _task_makespan(task, now),
                    error,
                ]
                if with_job:
                    row.insert(0, str(job_id))
                rows.append(row)
        right = {0, 1} if with_job else {0}
        print(render_horizontal(header, rows, right, colors=self.colors), flush=True)
        if truncated:
            log.info("An error message was truncated. Use -v to display the full error.")

    def task_explanation(self, data: Mapping[str, Any]) -> None:
        from hyperq.common.idrange import format_ids

        task = data["task_id"]
        explanation = data["explanation"]
        name = f"{task['job_id']}@{task['job_task_id']}"
        n, w = explanation["n_task_deps"], explanation["n_waiting_deps"]
        # The last two conditions are swapped in the original; kept (graphs.md §3.2).
        if n == 0:
            print(f"Task {name} is ready to run because it has no dependencies.")
        elif w == n:
            print(f"Task {name} is ready to run because its all {n} dependencies are finished.")
        else:
            print(
                f"Task {name} is not ready to run, because {w}/{n} dependencies are not finished."
            )
        workers = explanation["workers"]
        runnable = [x["worker_id"] for x in workers if any(x["enabled"])]
        if runnable:
            noun = "worker" if len(runnable) == 1 else "workers"
            print(f"The task can run on {len(runnable)} {noun}: {format_ids(runnable)}")
        else:
            print("There is no worker where the task can run.")
        if not workers:
            sys.stdout.flush()
            return
        rows: list[list[str]] = []
        for worker in workers:
            enabled = worker["enabled"]
            count = sum(enabled)
            if not count:
                status = "No"
            elif len(enabled) == 1:
                status = "Yes"
            else:
                status = f"Yes ({count}/{len(enabled)})"
            first = True
            for index, items in enumerate(worker["variants"]):
                if not items:
                    continue
                texts = [_explain_item(item) for item in items]
                rows.append(
                    [
                        str(worker["worker_id"]) if first else "",
                        status if first else "",
                        str(index),
                        "\n".join(t[0] for t in texts),
                        "\n".join(t[1] for t in texts),
                        "\n".join(t[2] for t in texts),
                    ]
                )
                first = False
            if first:
                rows.append([str(worker["worker_id"]), status, "", "", "", ""])
        header = ["Worker Id", "Runnable", "Variant", "Type", "Provides", "Request"]
        print(render_horizontal(header, rows, colors=self.colors), flush=True)

    def task_info(
        self, job_id: int, tasks: Sequence[Task], worker_names: Mapping[int, str], verbose: bool
    ) -> None:
        now = self.clock()
        for task in tasks:
            paths = task_paths(task, job_id)
            cwd, stdout, stderr = (
                (paths[0], stdio_text(paths[1]), stdio_text(paths[2])) if paths else ("", "", "")
            )
            program = task.get("program") or {}
            started, finished = task.get("started_at"), task.get("finished_at")
            error = ""
            if str(task.get("state")) == "failed":
                error = str(task.get("error") or "")
                if not verbose and len(error) >= ERROR_CUT_INFO:
                    error = error[:ERROR_CUT_INFO] + "..."
                error = paint(error, "red", colors=self.colors)
            rows: list[tuple[str, str]] = [
                ("Task ID", str(task["id"])),
                ("State", self._state(str(task.get("state", "")))),
                ("Command", "\n".join(str(arg) for arg in program.get("args") or [])),
                ("Environment", env_text(program.get("env"))),
                ("Worker", _task_workers(task, worker_names)),
                ("Start", format_local(started) if started is not None else ""),
                ("End", format_local(finished) if finished is not None else ""),
                ("Makespan", _task_makespan(task, now)),
                ("Workdir", cwd),
                ("Stdout", stdout),
                ("Stderr", stderr),
                ("Time limit", duration_or_none(task.get("time_limit"))),
                ("Resources", format_resources(task.get("resources"))),
                ("Priority", str(task.get("priority", 0))),
                ("Pin", pin_text(task.get("pin"))),
                ("Task dir", "yes" if task.get("task_dir") else "no"),
                ("Crash limit", str(task.get("crash_limit", ""))),
                ("Dependencies", ",".join(str(dep) for dep in task.get("deps") or [])),
                ("Error", error),
            ]
            print(render_vertical(rows, colors=self.colors), flush=True)

    def job_progress(self, progress: Progress, final: bool) -> None:
        parts = []
        for count, name in (
            (progress.running, "RUNNING"),
            (progress.finished, "FINISHED"),
            (progress.failed, "FAILED"),
            (progress.canceled, "CANCELED"),
            (progress.aborted, "ABORTED"),
        ):
            if count > 0:
                parts.append(f"{count} {self._state(name)}")
        stats = {
            "running": progress.running,
            "finished": progress.finished,
            "failed": progress.failed,
            "canceled": progress.canceled,
            "aborted": progress.aborted,
        }
        line = (
            f"{progress_bar(stats, progress.total_tasks, PROGRESS_WIDTH, colors=self.colors)} "
            f"{progress.done_jobs}/{progress.total_jobs} jobs, "
            f"{progress.completed_tasks}/{progress.total_tasks} tasks {' '.join(parts)}"
        ).rstrip()
        if sys.stdout.isatty():
            # Redraw in place: back to column 0 and clear the line.
            sys.stdout.write(f"\r\x1b[2K{line}" + ("\n" if final else ""))
            sys.stdout.flush()
        elif line != self._last_progress:
            # A log file gets one line per visible change, not one per server message.
            print(line, flush=True)
        self._last_progress = line

    # Workers

    def worker_list(self, workers: Sequence[Mapping[str, Any]]) -> None:
        from hyperq.common.resources import ResourceDescriptor

        rows = []
        for worker in workers:
            configuration = worker.get("configuration") or {}
            manager = manager_info(worker)
            rows.append(
                [
                    str(worker["id"]),
                    self._state(str(worker.get("state", "")), worker=True),
                    str(configuration.get("hostname", "")),
                    ResourceDescriptor.from_json(configuration["resources"]).summary_line()
                    if configuration.get("resources")
                    else "",
                    _manager_name(manager),
                    manager[1] if manager else "N/A",
                ]
            )
        header = ["ID", "State", "Hostname", "Resources", "Manager", "Manager Job ID"]
        print(render_horizontal(header, rows, {0}, colors=self.colors), flush=True)

    def worker_info(self, workers: Sequence[Mapping[str, Any]]) -> None:
        tables = [self._worker_table(worker) for worker in workers]
        if tables:
            print("\n\n".join(tables), flush=True)

    def _worker_table(self, worker: Mapping[str, Any]) -> str:
        from hyperq.common.resources import ResourceDescriptor

        configuration = worker.get("configuration") or {}
        manager = manager_info(worker)
        resources = configuration.get("resources")
        started = worker.get("started")
        last = worker.get("last_task_started")
        last_text = ""
        if last:
            task_id = last.get("task_id") or {}
            last_text = (
                f"{task_id.get('job_id')}@{task_id.get('job_task_id')}; "
                f'Time: "{format_timestamp(last["time"])}"'
            )
        pid = worker.get("pid")
        rows: list[tuple[str, str]] = [
            ("Worker", str(worker["id"])),
            ("State", self._state(str(worker.get("state", "")), worker=True)),
            ("Hostname", str(configuration.get("hostname", ""))),
            ("Started", f'"{format_timestamp(started)}"' if started is not None else ""),
            ("Data provider", str(configuration.get("listen_address", ""))),
            ("Working directory", str(configuration.get("work_dir", ""))),
            ("Heartbeat", duration_or_none(configuration.get("heartbeat_interval"))),
            ("Idle timeout", duration_or_none(configuration.get("idle_timeout"))),
            (
                "Overview interval",
                duration_or_none(
                    worker.get("overview_interval", configuration.get("overview_interval"))
                ),
            ),
            (
                "Resources",
                ResourceDescriptor.from_json(resources).summary_lines() if resources else "",
            ),
            ("Time Limit", duration_or_none(configuration.get("time_limit"))),
            ("Process pid", str(pid) if pid is not None else "N/A"),
            ("Group", str(configuration.get("group", ""))),
            ("Manager", _manager_name(manager)),
            ("Manager Job ID", manager[1] if manager else "N/A"),
            ("Last task started", last_text),
        ]
        runtime = worker.get("runtime_info")
        if runtime and str(worker.get("state", "RUNNING")).upper() == "RUNNING":
            rows.append(("Runtime Info", runtime_text(runtime)))
        return render_vertical(rows, colors=self.colors)

    def worker_address(self, hostname: str) -> None:
        print(hostname, flush=True)

    def hwdetect(self, descriptor: ResourceDescriptor) -> None:
        print(f"Summary:\n{descriptor.summary_lines()}\n", flush=True)
        print(f"Full Description:\n{descriptor.full_description()}", flush=True)


_STATE_COLOR = {
    "running": "yellow",
    "failed": "red",
    "finished": "green",
    "canceled": "magenta",
    "waiting": "cyan",
    "aborted": "magenta",
}


def progress_bar(
    stats: Mapping[str, int], total: int, width: int = PROGRESS_WIDTH, *, colors: bool = False
) -> str:
    """`[###....]`: `#` per share of canceled, failed, finished, running, aborted tasks."""
    used = 0
    parts = ["["]
    for state in ("canceled", "failed", "finished", "running", "aborted"):
        count = stats.get(state, 0)
        # ceil(count / total * width) in integers, so 1 of 3 tasks is 14 chars, not 13.
        chars = -(-count * width // total) if total > 0 else 0
        chars = min(width - used, chars)
        parts.append(paint("#" * chars, _STATE_COLOR[state], colors=colors))
        used += chars
    parts.append("." * (width - used) + "]")
    return "".join(parts)


def truncate_middle(text: str, limit: int) -> str:
    """Names longer than `limit`: the start and the end around `...` (24 + ... + 23 for 50)."""
    if len(text) <= limit:
        return text
    keep = limit - 3
    head = (keep + 1) // 2
    return f"{text[:head]}...{text[len(text) - (keep - head) :]}"


def format_ranges(ranges: IdRanges) -> str:
    """Canonical ID list: sorted, consecutive runs collapsed, no steps (`2,7,9,20-30`)."""
    if all(step == 1 for _start, _last, step in ranges.items):
        return str(ranges)
    from hyperq.common.idrange import format_ids

    return format_ids(ranges)


def submit_dirs(job: Mapping[str, Any]) -> list[str | None]:
    """Submit directory of each submit: `submit_dirs` beside `submits`, or per submit."""
    submits = job.get("submits") or []
    dirs = job.get("submit_dirs")
    if isinstance(dirs, list) and len(dirs) == len(submits):
        return [str(d) if d is not None else None for d in dirs]
    return [submit.get("submit_dir") for submit in submits]


def submit_ids(job: Mapping[str, Any]) -> list[list[Sequence[int]]]:
    """Task ID ranges of each submit: `submit_ids` beside `submits`, or `ids` per submit."""
    submits = job.get("submits") or []
    ids = job.get("submit_ids")
    if isinstance(ids, list) and len(ids) == len(submits):
        return [list(items or []) for items in ids]
    return [list(submit.get("ids") or []) for submit in submits]


def _tasks_cell(count: int, per_submit: Sequence[Sequence[Sequence[int]]]) -> str:
    from hyperq.common.idrange import IdRanges

    items = [tuple(item) for items in per_submit for item in items]
    if not items:
        return str(count)
    try:
        ranges = IdRanges(items)  # type: ignore[arg-type]
    except ValueError:
        return str(count)
    # One array keeps its steps as submitted; several submits print the collapsed set.
    text = str(ranges) if len(per_submit) == 1 else format_ranges(ranges)
    return f"{count}; Ids: {text}"


def _job_workers(worker_ids: Sequence[int], names: Mapping[int, str]) -> str:
    ids = sorted(set(worker_ids))
    text = ", ".join(names.get(w, "N/A") for w in ids[:MAX_DISPLAYED_WORKERS])
    if len(ids) > MAX_DISPLAYED_WORKERS:
        text += f", … ({len(ids)} total)"
    return text


def _task_workers(task: Task, names: Mapping[int, str]) -> str:
    return "\n".join(names.get(int(w), "N/A") for w in task.get("workers") or [])


def _task_makespan(task: Task, now: float) -> str:
    started = task.get("started_at")
    if started is None:
        return ""
    finished = task.get("finished_at")
    return format_elapsed((finished if finished is not None else now) - started)


def _manager_name(manager: tuple[str, str] | None) -> str:
    if manager is None:
        return "None"
    return "SLURM" if manager[0].lower() == "slurm" else manager[0]


def stdio_text(value: str | None) -> str:
    if value is None:
        return "<None>"
    if value == "<pipe>":
        return "<Stream>"
    return str(value)


def env_text(env: Mapping[str, str] | None) -> str:
    """User variables as sorted `K=V` lines; HQ_* ones are ours and stay hidden."""
    return "\n".join(
        f"{key}={value}" for key, value in sorted((env or {}).items()) if not key.startswith("HQ_")
    )


def pin_text(pin: str | None) -> str:
    if not pin:
        return "none"
    return "omp" if pin in ("omp", "openmp") else str(pin)


def duration_or_none(seconds: float | None) -> str:
    return format_duration(seconds) if seconds is not None else "None"


def _explain_item(item: Mapping[str, Any]) -> tuple[str, str, str]:
    """One explain check as (Type, Provides, Request) cell lines."""
    from hyperq.common.resources import format_amount

    def seconds(duration: Mapping[str, int]) -> float:
        return duration["secs"] + duration["nanos"] / 1e9

    if "Time" in item:
        time_item = item["Time"]
        remaining = time_item["remaining_time"]
        provides = "unknown" if remaining is None else format_elapsed(seconds(remaining))
        return "time", provides, format_duration(seconds(time_item["min_time"]))
    if "WorkerGroup" in item:
        group = item["WorkerGroup"]
        return "nodes", f"group size {group['group_size']}", str(group["n_nodes"])
    res = item["Resources"]
    return (
        res["resource"],
        format_amount(res["worker_amount"]),
        format_amount(res["request_amount"]),
    )


def format_resources(variants: Any) -> str:
    """Request variants (TASK_DESC `resources`) as `name: req` lines, `# Variant i` if several."""
    from hyperq.common.resources import ResourceRequest

    if not variants:
        return ""
    if isinstance(variants, Mapping):
        variants = [variants]
    requests = []
    for variant in variants:
        if isinstance(variant, Mapping):
            requests.append(ResourceRequest.from_json(variant))
        else:
            requests.append(ResourceRequest.from_wire(variant))
    if len(requests) == 1:
        return "\n".join(requests[0].display_lines())
    return "\n\n".join(
        f"# Variant {index}\n" + "\n".join(request.display_lines())
        for index, request in enumerate(requests, 1)
    )


def runtime_text(runtime: Mapping[str, Any]) -> str:
    single = runtime.get("SingleNodeTasks")
    if single is not None:
        text = f"assigned tasks: {single.get('assigned_tasks', 0)}"
        if single.get("running_tasks", 0) > 0:
            text += f"; running tasks: {single['running_tasks']}"
        if single.get("is_reserved"):
            text += "; reserved for a multi-node task"
        return text
    multi = runtime.get("MultiNodeTask") or {}
    return "running multinode task; " + (
        "main node" if multi.get("main_node") else "secondary node"
    )

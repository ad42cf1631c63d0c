"""`hq job cat`: print tasks' stdout/stderr files, read by the client itself.

The server only says where the files are (stage-1 paths in `task-list` TASKs); the client
resolves stage 2 with each started task's instance and copies the files verbatim. It must
never ask the server for file contents, nor stop at one unreadable file.
"""

from __future__ import annotations

from typing import Any

from hyperq.cli.commandargs import (
    connect,
    output_of,
    parse_ranges,
    parse_states,
    ranges_wire,
    selector_wire,
)
from hyperq.common import log
from hyperq.common.context import Context
from hyperq.common.errors import HqError
from hyperq.common.idrange import parse_selector
from hyperq.common.states import TASK_STATES


def cat_jobs(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.output.base import TaskOutput, int_keys, task_paths

    output = output_of(ctx)
    if output.mode == "json":
        raise HqError("JSON output mode doesn't support job output")
    stream = "stdout" if args["stdout"] else "stderr"
    selector = parse_selector(args["<SELECTOR>"])
    tasks = parse_ranges(args["--tasks"])
    states = parse_states(args["--task-status"], TASK_STATES, "--task-status")
    # With explicit task IDs the state filter is applied here, so that a task filtered
    # out is not mistaken for a task that does not exist.
    server_states = states if tasks is None else None
    with connect(ctx) as session:
        reply = session.request(
            "task-list",
            selector=selector_wire(selector),
            tasks=ranges_wire(tasks) if tasks is not None else None,
            states=server_states,
        )
    jobs = int_keys(reply.get("jobs"))
    missing = {int(job_id) for job_id in reply.get("missing") or []}
    if not jobs and not missing:
        log.error("No jobs were found")
        return 0
    for job_id in sorted(set(jobs) | missing):
        if job_id not in jobs:
            log.error(f"Job {job_id} was not found")
            continue
        job_tasks = sorted(jobs[job_id], key=lambda task: task["id"])
        if tasks is not None:
            present = {task["id"] for task in job_tasks}
            for task_id in tasks:
                if task_id not in present:
                    log.warn(f"Task {task_id} of job {job_id} not found")
            if states is not None:
                job_tasks = [task for task in job_tasks if task.get("state") in states]
        if not job_tasks:
            log.warn(f"No tasks were selected for job {job_id}, there is nothing to print")
            continue
        entries = []
        for task in job_tasks:
            paths = task_paths(task, job_id)
            path = None if paths is None else paths[1 if stream == "stdout" else 2]
            entries.append(TaskOutput(task["id"], None if path == "<pipe>" else path))
        output.job_output(job_id, entries, stream, bool(args["--print-task-header"]))
    return 0

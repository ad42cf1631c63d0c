"""`hq task …`: list and info (jobs.md §9), explain and notify (graphs.md §3–§4).

Missing jobs and tasks are log lines, not errors: the command still prints what it found
and exits 0. Import only cheap modules at the top.
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
from hyperq.common.errors import UsageError
from hyperq.common.idrange import IdRanges, parse_selector
from hyperq.common.states import TASK_STATES

GROUP_USAGE = """Commands for tasks

Usage:
  hq task list <SELECTOR> [--tasks <IDS>] [--task-status <STATES>] [-v]
  hq task info <JOB> <TASK_IDS> [-v]
  hq task explain <JOB> <TASK_ID>
  hq task notify [<MESSAGE>]
"""

LIST_USAGE = """Display the tasks of jobs

Usage:
  hq task list <SELECTOR> [--tasks <IDS>] [--task-status <STATES>] [-v]

Arguments:
  <SELECTOR>   Job ID(s): last or an ID range list

Options:
  --tasks <IDS>            Only these tasks (ID range list)
  --task-status <STATES>   Only tasks in these states (comma-separated list of waiting,
                           running, finished, failed, canceled, aborted)
  -v, --verbose            Show full error messages
"""

INFO_USAGE = """Display detailed information about tasks

Usage:
  hq task info <JOB> <TASK_IDS> [-v]

Arguments:
  <JOB>        One job: last or its ID
  <TASK_IDS>   Task IDs (ID range list)

Options:
  -v, --verbose   Show full error messages
"""

EXPLAIN_USAGE = """Explain whether a task can run, and what blocks it on each worker

Usage:
  hq task explain <JOB> <TASK_ID>

Arguments:
  <JOB>       One job: last or its ID
  <TASK_ID>   One task ID
"""

NOTIFY_USAGE = """Send a notification from a running task (to `hq submit --wait --on-notify`
and `hq journal stream`)

Usage:
  hq task notify <MESSAGE>

Arguments:
  <MESSAGE>   At most 1024 bytes
"""


def list_tasks(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.output.base import int_keys

    selector = parse_selector(args["<SELECTOR>"])
    tasks = parse_ranges(args["--tasks"])
    states = parse_states(args["--task-status"], TASK_STATES, "--task-status")
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request(
            "task-list",
            selector=selector_wire(selector),
            tasks=ranges_wire(tasks) if tasks is not None else None,
            states=states,
        )
    for job_id in sorted(int(job_id) for job_id in reply.get("missing") or []):
        log.warn(f"Job {job_id} not found")
    output.task_list(
        int_keys(reply.get("jobs")), int_keys(reply.get("worker_names")), bool(args["--verbose"])
    )
    return 0


def info(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.output.base import int_keys

    selector = parse_selector(args["<JOB>"], allow_all=False)
    if selector.ids is not None and len(selector.ids) != 1:
        raise UsageError(
            f"error: invalid value '{args['<JOB>']}' for '<JOB>': expected `last` or one job ID"
        )
    tasks = IdRanges.parse(args["<TASK_IDS>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request(
            "task-info", selector=selector_wire(selector), tasks=ranges_wire(tasks)
        )
    job_id = reply.get("job")
    if job_id is None or reply.get("found") is False:
        if job_id is None and selector.ids is not None:
            job_id = selector.ids.min()
        log.error(f"Cannot find job {job_id}" if job_id is not None else "No jobs were found")
        output.task_info(0, [], {}, False)
        return 0
    for task_id in sorted(int(t) for t in reply.get("missing_tasks") or []):
        log.warn(f"Task {task_id} not found")
    found = sorted(reply.get("tasks") or [], key=lambda task: task["id"])
    output.task_info(
        int(job_id), found, int_keys(reply.get("worker_names")), bool(args["--verbose"])
    )
    return 0


def explain(ctx: Context, args: dict[str, Any]) -> int:
    job_text, task_text = args["<JOB>"], args["<TASK_ID>"]
    job: int | str = "last"
    if job_text != "last":
        if not job_text.isdigit():
            raise UsageError(
                f"error: invalid value '{job_text}' for '<JOB>': expected `last` or a job ID"
            )
        job = int(job_text)
    if not task_text.isdigit() or int(task_text) > 2**32 - 1:
        raise UsageError(
            f"error: invalid value '{task_text}' for '<TASK_ID>': invalid digit found in string"
        )
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request("task-explain", job=job, task=int(task_text))
    output.task_explanation(reply)
    return 0


def notify(ctx: Context, args: dict[str, Any]) -> int:
    import os

    from hyperq.common.notify import send_notification

    send_notification(os.fsencode(args["<MESSAGE>"]))
    return 0


COMMANDS = {
    "list": (LIST_USAGE, list_tasks, False),
    "info": (INFO_USAGE, info, False),
    "explain": (EXPLAIN_USAGE, explain, False),
    "notify": (NOTIFY_USAGE, notify, False),
}

"""`hq job …`: list, summary, info, cancel, forget, cat, wait, progress, task-ids, open, close.

Each command turns its arguments into one request of the client contract and hands the
reply to the output layer; per-item outcomes are log lines and exit 0 (jobs.md §8).
`job submit` lives in hyperq.cli.submit and is loaded only when used, so that the other
job commands never pay for (or break on) its imports. Import only cheap modules at the top.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hyperq.cli.commandargs import (
    connect,
    output_of,
    parse_states,
    selector_wire,
)
from hyperq.common.context import Context
from hyperq.common.errors import HqError, UsageError
from hyperq.common.idrange import IdRanges, parse_selector
from hyperq.common.states import JOB_STATES, TASK_STATES

CommandEntry = tuple[str, Callable[..., int | None], bool]

FORGET_STATES = ("finished", "failed", "aborted", "canceled")
MAX_CANCEL_REASON = 200

GROUP_USAGE = """Commands for jobs

Usage:
  hq job list [--all | --filter <STATES>] [--verbose]
  hq job summary
  hq job info <SELECTOR>
  hq job cancel <SELECTOR> [--reason <TEXT>]
  hq job forget <SELECTOR> [--filter <STATES>]
  hq job cat <SELECTOR> (stdout | stderr) [options]
  hq job submit [options] <COMMAND>...
  hq job submit-file <FILE> [--job <ID>]
  hq job wait <SELECTOR> [--without-close]
  hq job progress <SELECTOR>
  hq job task-ids <SELECTOR> [--filter <STATES>]
  hq job open [--name <NAME>] [--max-fails <N>]
  hq job close <SELECTOR>
"""

LIST_USAGE = """Display information about jobs

By default, only waiting and running jobs and every open job are shown.

Usage:
  hq job list [--all | --filter <STATES>] [--verbose]

Options:
  --all               Display all jobs
  --filter <STATES>   Display only jobs in these states (comma-separated list of waiting,
                      running, finished, failed, canceled, aborted, opened)
  -v, --verbose       Also display the cancel reason
"""

SUMMARY_USAGE = """Display a summary of job states

Usage:
  hq job summary
"""

INFO_USAGE = """Display detailed information about jobs

Usage:
  hq job info <SELECTOR>

Arguments:
  <SELECTOR>   Job ID(s): last, all or an ID range list such as 1-3,5
"""

CANCEL_USAGE = """Cancel jobs: their waiting and running tasks become canceled

Usage:
  hq job cancel <SELECTOR> [--reason <TEXT>]

Options:
  --reason <TEXT>   Why the job was canceled (at most 200 characters)
"""

FORGET_USAGE = """Forget completed jobs, freeing the server's memory

Usage:
  hq job forget <SELECTOR> [--filter <STATES>]

Options:
  --filter <STATES>   Forget only jobs in these states (comma-separated list of
                      finished, failed, aborted, canceled; default: all four)
"""

CAT_USAGE = """Print the stdout or stderr of the tasks of jobs

Usage:
  hq job cat <SELECTOR> (stdout | stderr) [options]

Options:
  --tasks <IDS>            Only these tasks (ID range list)
  --task-status <STATES>   Only tasks in these states (comma-separated list of waiting,
                           running, finished, failed, canceled, aborted)
  --print-task-header      Print `# Job <j>, task <t>` before each task's output
"""

SUBMIT_FILE_USAGE = """Submit a job described by a TOML job definition file

Usage:
  hq job submit-file <FILE> [--job <ID>]

Options:
  --job <ID>   Attach the tasks to this open job
"""

WAIT_USAGE = """Wait until jobs are completed

Usage:
  hq job wait <SELECTOR> [--without-close]

Options:
  --without-close   Do not wait for open jobs to be closed, only for their tasks
"""

PROGRESS_USAGE = """Show the progress of jobs until they are completed

Usage:
  hq job progress <SELECTOR>
"""

TASK_IDS_USAGE = """Print the task IDs of jobs

Usage:
  hq job task-ids <SELECTOR> [--filter <STATES>]

Options:
  --filter <STATES>   Only tasks in these states (comma-separated list of waiting, running,
                      finished, failed, canceled, aborted)
"""

OPEN_USAGE = """Open a job that tasks can be submitted into later (`hq submit --job <ID>`)

Usage:
  hq job open [--name <NAME>] [--max-fails <N>]

Options:
  --name <NAME>      Name of the job [default: job]
  --max-fails <N>    Abort the job's remaining tasks after more than N failed tasks
"""

CLOSE_USAGE = """Close open jobs: they complete once their tasks are done

Usage:
  hq job close <SELECTOR>

Arguments:
  <SELECTOR>   Job ID(s): last, all (every open job) or an ID range list
"""


# Commands


def list_jobs(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.output.base import job_state

    states = parse_states(args["--filter"], JOB_STATES)
    with connect(ctx) as session:
        reply = session.request("job-list")
    jobs = reply.get("jobs") or []
    if args["--all"]:
        shown = list(jobs)
    elif states is not None:
        shown = [job for job in jobs if job_state(job) in states]
    else:
        shown = [
            job for job in jobs if job_state(job) in ("waiting", "running") or job.get("is_open")
        ]
    shown.sort(key=lambda job: job["id"])
    output_of(ctx).job_list(shown, int(reply.get("total", len(jobs))), bool(args["--verbose"]))
    return 0


def summary(ctx: Context, args: dict[str, Any]) -> int:
    with connect(ctx) as session:
        reply = session.request("job-summary")
    output_of(ctx).job_summary(reply.get("counts") or {})
    return 0


def info(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.output.base import int_keys

    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request(
            "job-info", selector=selector_wire(selector), with_tasks=ctx.output_mode == "json"
        )
    output.jobs_not_found(reply.get("missing") or [])
    jobs = sorted(reply.get("jobs") or [], key=lambda job: job["info"]["id"])
    output.job_details(jobs, int_keys(reply.get("worker_names")))
    return 0


def cancel(ctx: Context, args: dict[str, Any]) -> int:
    reason = args["--reason"]
    if reason is not None and len(reason) > MAX_CANCEL_REASON:
        raise UsageError(
            f"error: invalid value for '--reason <TEXT>': Cancel reason must be shorter than "
            f"{MAX_CANCEL_REASON} you entered {len(reason)}."
        )
    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request("job-cancel", selector=selector_wire(selector), reason=reason)
    output.jobs_canceled(reply.get("results") or [])
    output.nothing()
    return 0


def forget(ctx: Context, args: dict[str, Any]) -> int:
    states = parse_states(args["--filter"], FORGET_STATES) or list(FORGET_STATES)
    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request("job-forget", selector=selector_wire(selector), states=states)
    output.jobs_forgotten(int(reply.get("forgotten", 0)), int(reply.get("ignored", 0)))
    output.nothing()
    return 0


def cat(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.cli.jobcat import cat_jobs

    return cat_jobs(ctx, args)


def wait(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.cli.jobwait import wait_for_jobs

    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        wait_for_jobs(ctx, session, selector, without_close=bool(args["--without-close"]))
    output.nothing()
    return 0


def progress(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.cli.jobwait import progress_of_jobs

    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        progress_of_jobs(ctx, session, selector)
    output.nothing()
    return 0


def task_ids(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.output.base import int_keys

    states = parse_states(args["--filter"], TASK_STATES)
    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request("job-task-ids", selector=selector_wire(selector), states=states)
    if reply.get("missing"):
        raise HqError("Job Id not found")
    jobs: dict[int, IdRanges] = {}
    for job_id, items in int_keys(reply.get("jobs")).items():
        try:
            jobs[job_id] = IdRanges(tuple(item) for item in items or [])
        except ValueError as error:
            raise HqError(f"Invalid reply from the server: {error}") from None
    output.task_ids(jobs)
    return 0


def open_job(ctx: Context, args: dict[str, Any]) -> int:
    name = args["--name"] or "job"
    if "\n" in name or "\t" in name:
        raise HqError("name cannot have a newline or a tab")
    max_fails = None
    if args["--max-fails"] is not None:
        try:
            max_fails = int(args["--max-fails"].replace("_", ""))
        except ValueError:
            max_fails = -1
        if max_fails < 0:
            raise UsageError(
                f"error: invalid value '{args['--max-fails']}' for '--max-fails <N>': "
                "expected a non-negative number"
            )
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request("job-open", name=name, max_fails=max_fails)
    output.job_opened(int(reply["job"]))
    return 0


def close(ctx: Context, args: dict[str, Any]) -> int:
    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request("job-close", selector=selector_wire(selector))
    output.jobs_closed(reply.get("results") or [], bool(reply.get("nothing")))
    output.nothing()
    return 0


def submit_file(ctx: Context, args: dict[str, Any]) -> int:
    import gc
    import os

    from hyperq.cli.jobfile import parse_job_file

    job: int | None = None
    if args["--job"] is not None:
        try:
            job = int(args["--job"])
        except ValueError:
            job = -1
        if job < 0:
            raise UsageError(
                f"error: invalid value '{args['--job']}' for '--job <ID>': "
                "invalid digit found in string"
            )
    path = args["<FILE>"]
    output = output_of(ctx)
    # The server first (graphs.md §1): a missing server is reported before a bad file.
    with connect(ctx) as session:
        try:
            with open(path, "rb") as file:
                text = file.read().decode("utf-8")
        except OSError as error:
            raise HqError(
                f"Cannot read {path}: {error.strerror} (os error {error.errno})"
            ) from None
        except UnicodeDecodeError as error:
            raise HqError(f"Cannot read {path}: {error}") from None
        try:
            submit_dir = os.getcwd()
        except OSError as error:
            raise HqError(f"Cannot determine the current directory: {error.strerror}") from None
        # A big file parses into as many containers as it has tasks, which the cyclic
        # collector would rescan again and again (a third of the time for 100,000 tasks);
        # parsed TOML holds no cycles, and this process ends right after.
        gc.disable()
        request = parse_job_file(text, submit_dir=submit_dir, job=job)
        submit_desc = request.submit_desc
        if request.op == "submit-graph" and "tasks" in submit_desc:
            from hyperq.client.graphwire import table_from_tasks

            # The table form costs the server a fraction of the task maps' decoding.
            submit_desc = table_from_tasks(submit_desc)
        try:
            reply = session.request(
                request.op, job_desc=request.job_desc, submit_desc=submit_desc, job=job
            )
        except HqError as error:
            if "exceeds the limit" not in error.message:
                raise
            # The request, not a reply, was too big for one frame (~100,000 tasks fit).
            raise HqError(
                f"{path} is too large to submit at once ({request.task_count} tasks); split "
                "it into several files and submit them into an open job with --job"
            ) from None
    output.job_submitted(int(reply["job"]))
    return 0


class LazyCommands(Mapping[str, CommandEntry]):
    """COMMANDS whose listed entries come from another module, imported on first use."""

    def __init__(self, eager: dict[str, CommandEntry], lazy: dict[str, tuple[str, str]]) -> None:
        self._eager = eager
        self._lazy = lazy

    def __getitem__(self, name: str) -> CommandEntry:
        if name in self._eager:
            return self._eager[name]
        module_name, command = self._lazy[name]
        module = importlib.import_module(module_name)
        return module.COMMANDS[command]

    def __contains__(self, name: object) -> bool:
        return name in self._eager or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        yield from self._eager
        yield from self._lazy

    def __len__(self) -> int:
        return len(self._eager) + len(self._lazy)


COMMANDS = LazyCommands(
    {
        "list": (LIST_USAGE, list_jobs, False),
        "summary": (SUMMARY_USAGE, summary, False),
        "info": (INFO_USAGE, info, False),
        "cancel": (CANCEL_USAGE, cancel, False),
        "forget": (FORGET_USAGE, forget, False),
        "cat": (CAT_USAGE, cat, False),
        "submit-file": (SUBMIT_FILE_USAGE, submit_file, False),
        "wait": (WAIT_USAGE, wait, False),
        "progress": (PROGRESS_USAGE, progress, False),
        "task-ids": (TASK_IDS_USAGE, task_ids, False),
        "open": (OPEN_USAGE, open_job, False),
        "close": (CLOSE_USAGE, close, False),
    },
    # `from hyperq.cli.submit import COMMANDS as SUBMIT_COMMANDS`, on first use only.
    {"submit": ("hyperq.cli.submit", "submit")},
)

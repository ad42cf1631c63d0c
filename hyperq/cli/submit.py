"""`hq submit` / `hq job submit`: the I/O around `hyperq.cli.submitdesc`.

Reads stdin for `--stdin`, logs the builder's warnings, sends one `submit` request,
prints the job ID, and for `--wait` / `--progress` keeps the same connection to follow
the job. Deciding what to submit is never done here (see submitdesc); a submit must
print exactly one stdout line in cli mode, so nothing else here writes to stdout except
the `--stdin` prompt. Heavy modules are imported inside `submit` only.
"""

from __future__ import annotations

from typing import Any

from hyperq.common.context import Context

SUBMIT_USAGE = """Submit a job to HyperQueue

Usage:
  hq submit [options] [--resource <NAME=REQ>]... [--env <KEY[=VALUE]>]...
  hq job submit [options] [--resource <NAME=REQ>]... [--env <KEY[=VALUE]>]...

Give the task's command after the options: `hq submit [options] [--] <command>...`.
The first word that is not an option (or everything after `--`) starts the command;
every later word is part of it, even when it looks like an option.

Options:
  --name <NAME>             Job name (default: basename of the command's first word)
  --max-fails <N>           Abort the job's other tasks after more than N failures
  --array <RANGES>          Task IDs, e.g. 1-10,20 (default: one task, ID 0)
  --each-line <FILE>        One task per line of FILE; the line is in HQ_ENTRY
  --from-json <FILE>        One task per element of the JSON array in FILE (HQ_ENTRY)
  --cpus <REQ>              CPUs per task: `all` or `<amount> [<policy>]` (default: 1)
  --resource <NAME=REQ>     Another resource per task (repeatable)
  --nodes <N>               Number of nodes for a multi-node task (default: 0)
  --time-request <DUR>      Minimal remaining lifetime of the worker (default: 0ms)
  --time-limit <DUR>        Run-time limit of each task
  --weight <F>              Scheduling weight, greater than 0 (default: 1)
  --priority <INT>          Higher runs first (default: 0)
  --pin <MODE>              Pin tasks to their CPUs: taskset or omp
  --cwd <PATH>              Working directory (default: %{SUBMIT_DIR})
  --stdout <SPEC>           none, <path>, <path>:rm-if-finished or :rm-if-finished
                            (default: %{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout)
  --stderr <SPEC>           As --stdout (default: %{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr)
  --env <KEY[=VALUE]>       Environment variable of the tasks (repeatable)
  --task-dir                Give each task a temporary directory (HQ_TASK_DIR)
  --crash-limit <N>         Restarts after lost workers: N > 0, never-restart or
                            unlimited (default: 5)
  --stream <DIR>            Not supported yet: stored, with a warning; outputs go
                            to the --stdout/--stderr files
  --job <ID>                Add the tasks to this open job
  --wait                    Wait until the job completes
  --progress                Show the job's progress until it completes
  --stdin                   Read stdin now and feed it to every task
  --directives <MODE>       Read #HQ directives: auto, file, stdin or off [default: auto]
  --on-notify <CMD>         With --wait: run CMD <message> for every `hq task notify`
                            of the job's tasks
"""


def submit(ctx: Context, args: dict[str, Any]) -> int:
    import os
    import sys

    from hyperq.cli.submitdesc import STDIN_PROMPT, build_submit, request_from_args
    from hyperq.common import log
    from hyperq.common.errors import HqError

    request = request_from_args(args)
    stdin: bytes | None = None
    if request.stdin:
        print(STDIN_PROMPT, flush=True)
        stdin = sys.stdin.buffer.read()
    try:
        submit_dir = os.getcwd()
    except OSError as error:
        raise HqError(f"Cannot determine the current directory: {error.strerror}") from None
    built = build_submit(request, submit_dir=submit_dir, stdin=stdin)
    for warning in built.warnings:
        log.warn(warning)

    from hyperq.client.session import connect_to_server
    from hyperq.output.modes import make_output

    with connect_to_server(ctx) as session:
        result = session.request(
            "submit", job_desc=built.job_desc, submit_desc=built.submit_desc, job=request.job
        )
        job_id = int(result["job"])
        make_output(ctx.output_mode, ctx.colors).job_submitted(job_id)
        if request.wait and request.on_notify is not None:
            from hyperq.cli.notifywait import wait_with_notifications

            wait_with_notifications(session, job_id, request.on_notify)
        if request.wait:
            from hyperq.cli.jobwait import wait_for_jobs

            # Like `hq job wait`: failed or canceled tasks do not change the exit code.
            wait_for_jobs(ctx, session, [job_id])
        elif request.progress:
            from hyperq.cli.jobwait import progress_of_jobs

            progress_of_jobs(ctx, session, [job_id])
    return 0


COMMANDS = {"submit": (SUBMIT_USAGE, submit, True)}

"""`hq alloc …`: automatic allocation queues (alloc.md §2).

The client checks and shapes a queue's parameters (worker args, the CLI resource
descriptor) and the server's allocator does the rest. Output of every mode is printed
here: the tables are the original's, JSON mode prints `{}` where there is no data and
quiet mode prints nothing.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from hyperq.cli.commandargs import connect
from hyperq.common import log
from hyperq.common.context import Context
from hyperq.common.duration import format_duration, format_timestamp, parse_duration
from hyperq.common.errors import HqError, UsageError

GROUP_USAGE = """Commands for the automatic allocation of workers

Usage:
  hq alloc list
  hq alloc info <QUEUE_ID> [--filter <FILTER>]
  hq alloc log <ALLOCATION_ID> <CHANNEL>
  hq alloc add (pbs|slurm) --time-limit <TIME_LIMIT> [options] [-- <ARGS>...]
  hq alloc dry-run (pbs|slurm) --time-limit <TIME_LIMIT> [options] [-- <ARGS>...]
  hq alloc pause <QUEUE_ID>
  hq alloc resume <QUEUE_ID>
  hq alloc remove <QUEUE_ID> [--force]
"""

_QUEUE_OPTIONS = """
Options:
  -t, --time-limit <TIME_LIMIT>       Walltime of each allocation ([[HH:]MM:]SS or humantime)
  -b, --backlog <BACKLOG>             Max number of queued allocations [default: 1]
  -m, --max-workers-per-alloc <N>     Max workers (nodes) per allocation [default: 1]
  --max-worker-count <N>              Max workers in queued and running allocations
  -n, --name <NAME>                   Name of the queue (directory and job names)
  --no-dry-run                        Do not submit a trial allocation first
  --on-server-lost <POLICY>           stop or finish-running [default: finish-running]
  --worker-start-cmd <CMD>            Shell command run before each worker
  --worker-stop-cmd <CMD>             Shell command run after each worker
  --worker-wrap-cmd <CMD>             Prefix of the worker command
  --worker-time-limit <DUR>           Time limit of the workers (default: --time-limit)
  --idle-timeout <DUR>                Idle timeout of the workers (default: 5m)
  --cpus <DEF>                        CPUs of each worker
  --resource <RESOURCE>               Resource of each worker, NAME=DEF (repeatable)
  --group <GROUP>                     Worker group
  --coupling <SPEC>                   Resource coupling
  --detect-resources <WHAT>           Resources to detect
  --no-hyper-threading                Keep one logical CPU per physical core
  --overview-interval <DUR>           Hardware overview interval of the workers
  --min-utilization <F>               Minimal utilization of the workers in [0.0, 1.0]
"""

ADD_USAGE = (
    """Create a queue of automatic allocations

Usage:
  hq alloc add (pbs|slurm) [options] [--resource <RESOURCE>]... [--] [<ARGS>...]
"""
    + _QUEUE_OPTIONS
)

DRY_RUN_USAGE = (
    """Test whether an allocation can be submitted, without creating a queue

Usage:
  hq alloc dry-run (pbs|slurm) [options] [--resource <RESOURCE>]... [--] [<ARGS>...]
"""
    + _QUEUE_OPTIONS
)

LIST_USAGE = """List allocation queues

Usage:
  hq alloc list
"""

INFO_USAGE = """Show the allocations of a queue

Usage:
  hq alloc info <QUEUE_ID> [--filter <FILTER>]

Options:
  --filter <FILTER>   queued, running, finished or failed
"""

LOG_USAGE = """Print the stdout or stderr of an allocation

Usage:
  hq alloc log <ALLOCATION_ID> <CHANNEL>
"""

PAUSE_USAGE = """Pause a queue: it submits no new allocations

Usage:
  hq alloc pause <QUEUE_ID>
"""

RESUME_USAGE = """Resume a paused queue

Usage:
  hq alloc resume <QUEUE_ID>
"""

REMOVE_USAGE = """Remove a queue (and cancel its queued allocations)

Usage:
  hq alloc remove <QUEUE_ID> [--force]

Options:
  --force   Also cancel running allocations
"""

WALLTIME_ERROR = "Could not parse PBS walltime. Use either `HH:MM:SS` or humantime format (2hours)"
IDLE_WARNING = (
    "You have set an idle timeout longer than 10 minutes. "
    "This can result in wasted allocation duration."
)
PROBING_WARNING = (
    "No worker resources were provided for this queue. Before the first worker connects "
    "from an allocation submitted by this queue, the queue will operate in probing mode."
)
TRIAL_OK = (
    "A trial allocation was submitted successfully. "
    "It was immediately canceled to avoid wasting resources."
)


# --- parsing ----------------------------------------------------------------------------


def _number(text: str, name: str, minimum: int = 0) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = -1
    if value < minimum:
        raise UsageError(f"error: invalid value '{text}' for '{name}': expected a number")
    return value


def _duration(text: str, name: str) -> float:
    try:
        return parse_duration(text)
    except HqError as error:
        raise UsageError(f"error: invalid value '{text}' for '{name}': {error.message}") from None


def _manager(args: dict[str, Any]) -> str:
    return "pbs" if args["pbs"] else "slurm"


def _shortest(value: float) -> str:
    return repr(float(value)).rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def queue_params(args: dict[str, Any]) -> dict[str, Any]:
    """The stored parameters of alloc.md §2.1 from `alloc add|dry-run` arguments."""
    if args["--time-limit"] is None:
        raise UsageError(
            "error: the following required arguments were not provided:\n"
            "  --time-limit <TIME_LIMIT>"
        )
    try:
        timelimit = parse_duration(args["--time-limit"])
    except HqError:
        raise UsageError(
            f"error: invalid value '{args['--time-limit']}' for '--time-limit <TIME_LIMIT>': "
            f"{WALLTIME_ERROR}"
        ) from None
    backlog_text = args["--backlog"]
    backlog = _number(backlog_text, "--backlog <BACKLOG>")
    if backlog < 1:
        raise UsageError(
            f"error: invalid value '{backlog_text}' for '--backlog <BACKLOG>': "
            "Backlog has to be at least 1"
        )
    per_alloc = _number(args["--max-workers-per-alloc"], "--max-workers-per-alloc <N>", 1)
    max_count = None
    if args["--max-worker-count"] is not None:
        max_count = _number(args["--max-worker-count"], "--max-worker-count <N>", 1)
    min_util = 0.0
    if args["--min-utilization"] is not None:
        try:
            min_util = float(args["--min-utilization"])
        except ValueError:
            min_util = -1.0
        if not 0.0 <= min_util <= 1.0:
            raise UsageError(
                f"error: invalid value '{args['--min-utilization']}' for "
                "'--min-utilization <F>': Minimal utilization has to be in the interval "
                "[0.0, 1.0]."
            )
    policy = args["--on-server-lost"]
    if policy not in ("stop", "finish-running"):
        raise UsageError(
            f"error: invalid value '{policy}' for '--on-server-lost <POLICY>'\n"
            "  [possible values: stop, finish-running]"
        )
    worker_limit = timelimit
    if args["--worker-time-limit"] is not None:
        worker_limit = _duration(args["--worker-time-limit"], "--worker-time-limit <DUR>")
    idle = None
    if args["--idle-timeout"] is not None:
        idle = _duration(args["--idle-timeout"], "--idle-timeout <DUR>")
    if args["--overview-interval"] is not None:
        _duration(args["--overview-interval"], "--overview-interval <DUR>")
    resources = list(args["--resource"] or [])
    worker_args: list[str] = []
    if args["--cpus"] is not None:
        worker_args += ["--cpus", f'"{args["--cpus"]}"']
    for item in resources:
        worker_args += ["--resource", f'"{item}"']
    if args["--coupling"] is not None:
        worker_args += ["--coupling", f'"{args["--coupling"]}"']
    if args["--group"] is not None:
        worker_args += ["--group", args["--group"]]
    if args["--no-hyper-threading"]:
        worker_args.append("--no-hyper-threading")
    if args["--detect-resources"] is not None:
        worker_args += ["--detect-resources", args["--detect-resources"]]
    if args["--overview-interval"] is not None:
        worker_args += ["--overview-interval", f'"{args["--overview-interval"]}"']
    if min_util > 0:
        worker_args += ["--min-utilization", _shortest(min_util)]
    worker_args += ["--on-server-lost", f'"{policy}"']
    worker_args += ["--time-limit", f'"{format_duration(worker_limit)}"']
    return {
        "manager": _manager(args),
        "backlog": backlog,
        "max_workers_per_alloc": per_alloc,
        "timelimit": timelimit,
        "name": args["--name"],
        "max_worker_count": max_count,
        "min_utilization": min_util,
        "additional_args": list(args["<ARGS>"] or []),
        "worker_start_cmd": args["--worker-start-cmd"],
        "worker_stop_cmd": args["--worker-stop-cmd"],
        "worker_wrap_cmd": args["--worker-wrap-cmd"],
        "cli_resource_descriptor": _cli_descriptor(args["--cpus"], resources),
        "worker_args": worker_args,
        "idle_timeout": idle,
        "_worker_time_limit": worker_limit,
    }


def _cli_descriptor(cpus: str | None, resources: list[str]) -> dict[str, Any] | None:
    """The --resource items plus --cpus (unless a cpus resource was given); None when
    nothing was given or it does not validate (alloc.md §2.1)."""
    from hyperq.common.resources import ResourceDescriptor, parse_resource_definition

    items = {}
    try:
        for text in resources:
            name, _, definition = text.partition("=")
            items[name.strip()] = parse_resource_definition(name.strip(), definition.strip())
        if cpus is not None and "cpus" not in items:
            items["cpus"] = parse_resource_definition("cpus", cpus)
        if not items:
            return None
        return ResourceDescriptor(tuple(items.values())).to_json()
    except (HqError, ValueError):
        return None


# --- commands ---------------------------------------------------------------------------


def _checked_params(ctx: Context, args: dict[str, Any], session: Any) -> dict[str, Any]:
    params = queue_params(args)
    worker_limit = params.pop("_worker_time_limit")
    if worker_limit > params["timelimit"]:
        raise HqError("Worker time limit cannot be larger than queue time limit")
    if params["idle_timeout"] is not None and params["idle_timeout"] > 600:
        log.warn(IDLE_WARNING)
    if args["--cpus"] is None and not args["--resource"]:
        log.warn(PROBING_WARNING)
    return params


def add(ctx: Context, args: dict[str, Any]) -> int:
    queue_params(args)  # usage errors before connecting
    trial = not args["--no-dry-run"]
    with connect(ctx) as session:
        params = _checked_params(ctx, args, session)
        try:
            reply = session.request("alloc-add", params=params, no_dry_run=not trial)
        except HqError:
            if trial:
                log.error("Dry-run (test allocation submission) has failed")
            raise
    if reply.get("trial"):
        log.info(TRIAL_OK)
    log.info(f"Allocation queue {reply['id']} successfully created")
    _empty(ctx)
    return 0


def dry_run(ctx: Context, args: dict[str, Any]) -> int:
    queue_params(args)
    with connect(ctx) as session:
        params = _checked_params(ctx, args, session)
        session.request("alloc-dry-run", params=params)
    log.info(TRIAL_OK)
    _empty(ctx)
    return 0


def _empty(ctx: Context) -> None:
    if ctx.output_mode == "json":
        print(json.dumps({}))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2), flush=True)


def _table(ctx: Context, header: list[str], rows: list[list[str]]) -> None:
    from hyperq.output.table import render_horizontal

    print(render_horizontal(header, rows, {0}, colors=bool(ctx.colors)), flush=True)


def list_queues(ctx: Context, args: dict[str, Any]) -> int:
    with connect(ctx) as session:
        queues = session.request("alloc-list") or []
    if ctx.output_mode == "quiet":
        return 0
    if ctx.output_mode == "json":
        _print_json([_queue_json(q) for q in queues])
        return 0
    rows = []
    for queue in queues:
        params = queue["params"]
        rows.append(
            [
                str(queue["id"]),
                "PAUSED" if queue["state"] == "Paused" else "ACTIVE",
                str(params["backlog"]),
                str(params["max_workers_per_alloc"]),
                str(params["max_worker_count"] or 0),
                format_duration(params["timelimit"]),
                "PBS" if params["manager"] == "pbs" else "SLURM",
                _resources_summary(queue.get("known_worker_resources")),
                params["name"] or "",
                ",".join(params["additional_args"]),
            ]
        )
    header = [
        "ID",
        "State",
        "Backlog size",
        "Max workers per alloc",
        "Max worker count",
        "Timelimit",
        "Manager",
        "Worker resources",
        "Name",
        "Args",
    ]
    _table(ctx, header, rows)
    return 0


def _resources_summary(known: Any) -> str:
    if not known:
        return "<unknown>"
    from hyperq.common.resources import ResourceDescriptor

    try:
        return ResourceDescriptor.from_json(known).summary_line()
    except (ValueError, KeyError, TypeError):
        return "<unknown>"


def _queue_json(queue: dict[str, Any]) -> dict[str, Any]:
    params = queue["params"]
    return {
        "id": queue["id"],
        "name": params["name"],
        "state": queue["state"],
        "manager": "PBS" if params["manager"] == "pbs" else "Slurm",
        "additional_args": params["additional_args"],
        "backlog": params["backlog"],
        "max_workers_per_alloc": params["max_workers_per_alloc"],
        "timelimit": params["timelimit"],
        "max_worker_count": params["max_worker_count"],
        "worker_args": params["worker_args"],
        "known_worker_resources": queue.get("known_worker_resources"),
    }


FILTERS = ("queued", "running", "finished", "failed")


def info(ctx: Context, args: dict[str, Any]) -> int:
    queue_id = _number(args["<QUEUE_ID>"], "<QUEUE_ID>")
    which = args["--filter"]
    if which is not None and which not in FILTERS:
        raise UsageError(
            f"error: invalid value '{which}' for '--filter <FILTER>'\n"
            f"  [possible values: {', '.join(FILTERS)}]"
        )
    with connect(ctx) as session:
        allocations = session.request("alloc-info", queue_id=queue_id) or []
    if which == "finished":
        # Every ended allocation, failed ones too (the original's filter).
        allocations = [a for a in allocations if a["status"] in ("finished", "failed")]
    elif which is not None:
        allocations = [a for a in allocations if a["status"] == which]
    if ctx.output_mode == "quiet":
        return 0
    if ctx.output_mode == "json":
        _print_json([_allocation_json(a) for a in allocations])
        return 0
    rows = [
        [
            a["id"],
            a["status"].upper(),
            a["workdir"],
            str(a["target_worker_count"]),
            _local(a["queued_at"]),
            _local(a["started_at"]),
            _local(a["ended_at"]),
        ]
        for a in allocations
    ]
    header = [
        "ID",
        "State",
        "Working directory",
        "Worker count",
        "Queue time",
        "Start time",
        "Finish time",
    ]
    _table(ctx, header, rows)
    return 0


def _local(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return time.strftime("%d.%m.%Y %H:%M:%S", time.localtime(epoch))


def _allocation_json(a: dict[str, Any]) -> dict[str, Any]:
    def stamp(value: float | None) -> str | None:
        return None if value is None else format_timestamp(value)

    status = a["status"]
    early = bool(a.get("ended_unexpectedly"))
    started = a["started_at"] if status in ("running", "finished", "failed") and not early else None
    return {
        "id": a["id"],
        "target_worker_count": a["target_worker_count"],
        "queued_at": stamp(a["queued_at"]),
        "started_at": stamp(started),
        "ended_at": stamp(None if early else a["ended_at"]),
        "status": a["status"],
        "workdir": a["workdir"],
    }


def log_output(ctx: Context, args: dict[str, Any]) -> int:
    channel = args["<CHANNEL>"]
    if channel not in ("stdout", "stderr"):
        raise UsageError(
            f"error: invalid value '{channel}' for '<CHANNEL>'\n"
            "  [possible values: stdout, stderr]"
        )
    if ctx.output_mode == "json":
        raise HqError("JSON output mode doesn't support allocation output")
    allocation_id = args["<ALLOCATION_ID>"]
    with connect(ctx) as session:
        reply = session.request("alloc-log", allocation_id=allocation_id, stream=channel)
    path = f"{reply['workdir']}/{channel}"
    log.info(f"Outputting allocation path at {path}")
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 16):
                sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    except OSError as error:
        log.warn(f"File at `{path}` cannot be opened: {error.strerror or error}")
    return 0


def _queue_op(ctx: Context, args: dict[str, Any], op: str, done: str) -> int:
    queue_id = _number(args["<QUEUE_ID>"], "<QUEUE_ID>")
    with connect(ctx) as session:
        fields: dict[str, Any] = {"queue_id": queue_id}
        if op == "alloc-remove":
            fields["force"] = bool(args["--force"])
        session.request(op, **fields)
    log.info(f"Allocation queue {queue_id} successfully {done}")
    _empty(ctx)
    return 0


def pause(ctx: Context, args: dict[str, Any]) -> int:
    return _queue_op(ctx, args, "alloc-pause", "paused")


def resume(ctx: Context, args: dict[str, Any]) -> int:
    return _queue_op(ctx, args, "alloc-resume", "resumed")


def remove(ctx: Context, args: dict[str, Any]) -> int:
    return _queue_op(ctx, args, "alloc-remove", "removed")


COMMANDS = {
    "list": (LIST_USAGE, list_queues, False),
    "info": (INFO_USAGE, info, False),
    "log": (LOG_USAGE, log_output, False),
    "add": (ADD_USAGE, add, False),
    "dry-run": (DRY_RUN_USAGE, dry_run, False),
    "pause": (PAUSE_USAGE, pause, False),
    "resume": (RESUME_USAGE, resume, False),
    "remove": (REMOVE_USAGE, remove, False),
}

"""`hq worker …` client commands: list, info, stop, wait, address, hwdetect (worker.md §6).

`worker start` runs the worker itself; its code lives in hyperq.worker.cli and is imported
only when a worker starts, never by the client commands here. Import only cheap modules
at the top.
"""

from __future__ import annotations

import time
from typing import Any

from hyperq.cli.commandargs import connect, output_of, selector_wire
from hyperq.common.context import Context
from hyperq.common.errors import HqError, UsageError
from hyperq.common.idrange import IdRanges, Selector, parse_selector

# `worker wait` polls: the spec's interval, cheap for the server (one small request).
WAIT_POLL_INTERVAL = 1.0

GROUP_USAGE = """Commands for workers

Usage:
  hq worker start [options]
  hq worker stop <SELECTOR>
  hq worker list [--all | --filter <FILTER>]
  hq worker info <SELECTOR>
  hq worker address <WORKER_ID>
  hq worker wait <COUNT>
  hq worker hwdetect [--no-hyper-threading]
  hq worker deploy-ssh [--show-output] <HOSTFILE> [<WORKER_ARGS>...]
"""

START_USAGE = """Start a worker and connect it to the server

Usage:
  hq worker start [options] [--resource <RESOURCE>]...

Options:
  --cpus <DEF>                    CPU resource definition: N, SxC, [a,b,...], [[a,b],[c,d]]
                                  or range(A-B) (default: detected)
  --resource <RESOURCE>           Extra resource as NAME=DEF, e.g. gpus=[0,1] or mem=sum(1024)
                                  (repeatable)
  --detect-resources <WHAT>       Resources to detect: all, none, or a comma-separated list of
                                  cpus, mem, gpus/nvidia, gpus/amd [default: all]
  --no-hyper-threading            Keep one logical CPU per physical core
  --group <GROUP>                 Worker group (default: the manager's allocation ID, else
                                  `default`)
  --hostname <HOSTNAME>           Hostname reported to the server (default: system hostname)
  --work-dir <PATH>               Working directory, created if missing (default: a new
                                  temporary directory)
  --heartbeat <DUR>               Heartbeat interval [default: 8s]
  --idle-timeout <DUR>            Stop after being idle this long (default: the server's
                                  idle timeout, else none)
  --time-limit <DUR>              Worker lifetime (default: the manager's remaining
                                  walltime, else none)
  --on-server-lost <POLICY>       When the server connection breaks: stop, finish-running or
                                  reconnect [default: stop]
  --manager <MANAGER>             detect, none, pbs or slurm [default: detect]
  --overview-interval <DUR>       How often to send hardware overview events (0s = off)
  --min-utilization <F>           Minimal utilization in [0.0, 1.0] [default: 0.0]
  --retract-check-interval <DUR>  How often retraction is checked [default: 30s]
  --coupling <SPEC>               Resource coupling: R1[G1]:R2[G2][=WEIGHT],...
"""

STOP_USAGE = """Stop workers

Usage:
  hq worker stop <SELECTOR>

Arguments:
  <SELECTOR>   Worker ID(s): last, all (every running worker) or an ID range list
"""

LIST_USAGE = """Display information about workers

Usage:
  hq worker list [--all | --filter <FILTER>]

Options:
  --all               Display all workers (default: only running ones)
  --filter <FILTER>   Display only running or offline workers
"""

INFO_USAGE = """Display detailed information about workers

Usage:
  hq worker info <SELECTOR>

Arguments:
  <SELECTOR>   Worker ID(s): last, all or an ID range list
"""

ADDRESS_USAGE = """Print the hostname of a worker

Usage:
  hq worker address <WORKER_ID>
"""

WAIT_USAGE = """Wait until at least COUNT workers are running

Usage:
  hq worker wait <COUNT>
"""

HWDETECT_USAGE = """Detect the resources of this machine as a worker would

Usage:
  hq worker hwdetect [--no-hyper-threading]

Options:
  --no-hyper-threading   Keep one logical CPU per physical core
"""

DEPLOY_SSH_USAGE = """Deploy workers to remote hosts over SSH

Every line of HOSTFILE is `host` or `host:port`; one `hq worker start <WORKER_ARGS>` runs on
each host over `ssh`. Options of this command must precede HOSTFILE.

Usage:
  hq worker deploy-ssh [--show-output] [<HOSTFILE> <WORKER_ARGS>...]

Options:
  --show-output   Show the output of the workers
"""


def start(ctx: Context, args: dict[str, Any]) -> int | None:
    from hyperq.worker.cli import start as start_worker

    return start_worker(ctx, args)


def list_workers(ctx: Context, args: dict[str, Any]) -> int:
    which = args["--filter"]
    if which is not None and which not in ("running", "offline"):
        raise UsageError(
            f"error: invalid value '{which}' for '--filter <FILTER>'\n"
            "  [possible values: running, offline]"
        )
    with connect(ctx) as session:
        reply = session.request("worker-list")
    workers = sorted(reply.get("workers") or [], key=lambda worker: worker["id"])
    if not args["--all"]:
        running = which != "offline"
        workers = [w for w in workers if (str(w.get("state")).upper() == "RUNNING") == running]
    output_of(ctx).worker_list(workers)
    return 0


def info(ctx: Context, args: dict[str, Any]) -> int:
    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request("worker-info", selector=selector_wire(selector))
    output.workers_not_found(int(w) for w in reply.get("missing") or [])
    output.worker_info(sorted(reply.get("workers") or [], key=lambda worker: worker["id"]))
    return 0


def stop(ctx: Context, args: dict[str, Any]) -> int:
    selector = parse_selector(args["<SELECTOR>"])
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request("worker-stop", selector=selector_wire(selector))
    output.workers_stopped(reply.get("results") or [])
    output.nothing()
    return 0


def address(ctx: Context, args: dict[str, Any]) -> int:
    text = args["<WORKER_ID>"]
    worker_id = _number(text, "<WORKER_ID>")
    output = output_of(ctx)
    with connect(ctx) as session:
        reply = session.request(
            "worker-info", selector=selector_wire(Selector.of(IdRanges.from_ids([worker_id])))
        )
    workers = reply.get("workers") or []
    if not workers:
        raise HqError(f"Worker {worker_id} not found")
    output.worker_address(str((workers[0].get("configuration") or {}).get("hostname", "")))
    return 0


def wait(ctx: Context, args: dict[str, Any]) -> int:
    count = _number(args["<COUNT>"], "<COUNT>")
    output = output_of(ctx)
    with connect(ctx) as session:
        while True:
            workers = session.request("worker-list").get("workers") or []
            running = sum(1 for w in workers if str(w.get("state")).upper() == "RUNNING")
            if running >= count:
                break
            time.sleep(WAIT_POLL_INTERVAL)
    output.nothing()
    return 0


def hwdetect(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.common.resources import ResourceDescriptor, detect_resources

    items = detect_resources("all", no_hyper_threading=bool(args["--no-hyper-threading"]))
    output_of(ctx).hwdetect(ResourceDescriptor(tuple(items)))
    return 0


def deploy_ssh(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.cli.deployssh import run

    return run(args)


def _number(text: str, name: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"error: invalid value '{text}' for '{name}': expected a number")
    return value


COMMANDS = {
    "start": (START_USAGE, start, False),
    "stop": (STOP_USAGE, stop, False),
    "list": (LIST_USAGE, list_workers, False),
    "info": (INFO_USAGE, info, False),
    "address": (ADDRESS_USAGE, address, False),
    "wait": (WAIT_USAGE, wait, False),
    "hwdetect": (HWDETECT_USAGE, hwdetect, False),
    "deploy-ssh": (DEPLOY_SSH_USAGE, deploy_ssh, True),
}

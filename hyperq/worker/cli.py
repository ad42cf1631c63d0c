"""`hq worker start`: validate everything before connecting, then run the worker."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from functools import partial
from typing import Any

from hyperq.common.context import Context
from hyperq.common.errors import HqError, UsageError

# How long a starting worker keeps retrying a server that is not up yet.
CONNECT_RETRY = 10.0
# Set (to anything but 0): finish every task at once without running it, to measure
# the server and the protocol alone (tools/bench_scale).
ZERO_WORKER_ENV = "HQ_ZERO_WORKER"


def _list(value: Any) -> list[str]:
    if value is None or value is False:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _duration(value: str | None, name: str) -> float | None:
    from hyperq.common.duration import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except HqError as error:
        raise UsageError(f"error: invalid value '{value}' for '{name}': {error.message}") from None


def build_config(ctx: Context, args: dict[str, Any]) -> Any:
    from hyperq.common.resources import parse_coupling, parse_worker_resources
    from hyperq.worker import manager
    from hyperq.worker.config import ON_SERVER_LOST, WorkerConfig

    policy = args.get("--on-server-lost") or "stop"
    if policy not in ON_SERVER_LOST:
        raise UsageError(
            f"error: invalid value '{policy}' for '--on-server-lost <POLICY>'\n"
            f"  [possible values: {', '.join(ON_SERVER_LOST)}]"
        )
    min_util_text = args.get("--min-utilization") or "0.0"
    try:
        min_util = float(min_util_text)
    except ValueError:
        raise UsageError(
            f"error: invalid value '{min_util_text}' for '--min-utilization'"
        ) from None
    if not 0.0 <= min_util <= 1.0:
        raise HqError("Minimal utilization has to be in the interval [0.0, 1.0].")
    manager_arg = args.get("--manager") or "detect"
    if manager_arg not in ("detect", "none", "pbs", "slurm"):
        raise UsageError(f"error: invalid value '{manager_arg}' for '--manager <MANAGER>'")
    resources = parse_worker_resources(
        args.get("--cpus"),
        _list(args.get("--resource")),
        detect=args.get("--detect-resources") or "all",
        no_hyper_threading=bool(args.get("--no-hyper-threading")),
    )
    coupling = args.get("--coupling")
    if coupling:
        resources = parse_coupling(coupling, resources)
    heartbeat = _duration(args.get("--heartbeat") or "8s", "--heartbeat")
    idle_timeout = _duration(args.get("--idle-timeout"), "--idle-timeout")
    time_limit = _duration(args.get("--time-limit"), "--time-limit")
    overview = _duration(args.get("--overview-interval"), "--overview-interval")
    _duration(args.get("--retract-check-interval"), "--retract-check-interval")
    manager_name, allocation_id, remaining = manager.detect(manager_arg)
    if time_limit is None and remaining is not None:
        time_limit = remaining
    work_dir = args.get("--work-dir")
    if work_dir:
        work_dir = os.path.abspath(work_dir)
    else:
        work_dir = os.path.join(tempfile.mkdtemp(prefix="hq-worker"), "work")
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as error:
        raise HqError(f"Cannot create the work directory {work_dir}: {error.strerror}") from None
    assert heartbeat is not None
    return WorkerConfig(
        hostname=args.get("--hostname") or socket.gethostname(),
        work_dir=work_dir,
        heartbeat=heartbeat,
        idle_timeout=idle_timeout,
        time_limit=time_limit,
        on_server_lost=policy,
        group=args.get("--group") or allocation_id or "default",
        manager=manager_name,
        manager_job_id=allocation_id,
        min_utilization=min_util,
        overview_interval=overview if overview else None,
        resources=resources,
    )


def _log_observed_gpus(args: dict[str, Any], config: Any) -> None:
    """Say why a GPU family is observed when the user named its resource (cluster.md §4)."""
    import logging

    if not config.overview_interval:
        return
    passed = {item.split("=", 1)[0].strip() for item in _list(args.get("--resource"))}
    for family in ("nvidia", "amd"):
        if f"gpus/{family}" in passed:
            logging.getLogger(__name__).info(
                "Observing %s GPU usage because of manually passed resource `gpus/%s`",
                family,
                family,
            )


def read_worker_endpoint(ctx: Context) -> Any:
    """One attempt at reading the worker part of the current access record."""
    from hyperq.common import serverdir
    from hyperq.common.access import read_record

    active = serverdir.resolve_active_dir(ctx.server_dir)
    record = read_record(active / serverdir.ACCESS_FILE)
    if record.worker is None:
        raise HqError("the access record has no worker part")
    return record.worker


def load_worker_endpoint(ctx: Context) -> Any:
    """The worker part of the access record, retrying briefly while the server starts."""
    from hyperq.common import serverdir

    deadline = time.monotonic() + CONNECT_RETRY
    while True:
        try:
            return read_worker_endpoint(ctx)
        except HqError as error:
            try:
                path = serverdir.resolve_active_dir(ctx.server_dir) / serverdir.ACCESS_FILE
            except HqError:
                path = ctx.server_dir / serverdir.CURRENT_LINK / serverdir.ACCESS_FILE
            if "version mismatch" in error.message or time.monotonic() > deadline:
                raise HqError(
                    f"Cannot load access record from {path}\n\nCaused by:\n    {error.message}"
                ) from None
        time.sleep(0.1)


def _connect_error(raised: BaseException) -> BaseException | None:
    """The connection failure inside `raised`, or None if it is something else."""
    from hyperq.transport.link import LinkClosed

    if isinstance(raised, BaseExceptionGroup):
        inner = [_connect_error(e) for e in raised.exceptions]
        return inner[0] if inner and all(e is not None for e in inner) else None
    if isinstance(raised, (OSError, LinkClosed)):
        return raised
    return None


def start(ctx: Context, args: dict[str, Any]) -> int:
    import trio

    from hyperq.common.log import setup_logging
    from hyperq.output.modes import make_output
    from hyperq.transport.link import LinkClosed
    from hyperq.worker.main import run_worker

    setup_logging(ctx.debug)
    config = build_config(ctx, args)
    _log_observed_gpus(args, config)
    endpoint = load_worker_endpoint(ctx)
    output = make_output(ctx.output_mode, ctx.colors)

    # A benchmarking aid (README, "Benchmarks"), deliberately not in --help.
    zero = os.environ.get(ZERO_WORKER_ENV, "") not in ("", "0")

    deadline = time.monotonic() + CONNECT_RETRY
    while True:
        try:
            return trio.run(
                partial(run_worker, zero=zero),
                config,
                endpoint,
                lambda: trio.to_thread.run_sync(read_worker_endpoint, ctx),
                lambda worker: output.worker_info([{**worker, "runtime_info": None}]),
            )
        except (OSError, LinkClosed, BaseExceptionGroup) as raised:
            error = _connect_error(raised)
            if error is None:
                raise
            # Nothing listening yet (or any more): retry briefly, then give up.
            if time.monotonic() > deadline:
                raise HqError(
                    f"Cannot connect to the server at {endpoint.host}:{endpoint.port}: {error}"
                ) from None
            endpoint = load_worker_endpoint(ctx)
            time.sleep(0.2)

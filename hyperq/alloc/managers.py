"""Running the batch managers' tools (alloc.md §3.5, §3.6) as subprocesses.

Every call has a timeout, and every way a tool can misbehave (missing, non-zero exit,
hanging, printing garbage) becomes a ManagerError for the one allocation concerned,
never an exception that reaches the server. Only sbatch/scontrol/scancel and
qsub/qstat/qdel are used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import trio

from hyperq.alloc.decisions import Status
from hyperq.alloc.queue import PBS, Allocation
from hyperq.alloc.scripts import ParseError, job_id, pbs_statuses, slurm_status
from hyperq.common.errors import HqError

DEFAULT_TIMEOUT = 30.0


def command_timeout() -> float:
    """HQ_AUTOALLOC_COMMAND_TIMEOUT_MS (hyperq's own) bounds each manager command."""
    raw = os.environ.get("HQ_AUTOALLOC_COMMAND_TIMEOUT_MS")
    try:
        return int(raw) / 1000 if raw else DEFAULT_TIMEOUT
    except ValueError:
        return DEFAULT_TIMEOUT


class ManagerError(HqError):
    """A manager command failed; the message is what the user sees."""


async def run_tool(argv: Sequence[str], cwd: str, timeout: float) -> str:
    """Run one tool; its stdout, or ManagerError."""
    program = argv[0]
    result = None
    with trio.move_on_after(timeout):
        try:
            result = await trio.run_process(
                list(argv), cwd=cwd, capture_stdout=True, capture_stderr=True, check=False,
                stdin=b"",
            )
        except OSError as error:
            raise ManagerError(f"{program} start failed: {error.strerror or error}") from None
    if result is None:
        raise ManagerError(f"{program} execution failed: timed out after {timeout:g} s")
    stdout = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace")
        raise ManagerError(
            f"{program} execution failed: Exit code: {result.returncode}\n"
            f"Stderr: {stderr.strip()}\nStdout: {stdout.strip()}"
        )
    return stdout


async def submit(manager: str, script_path: str, cwd: str, timeout: float) -> str:
    program = "qsub" if manager == PBS else "sbatch"
    output = await run_tool([program, script_path], cwd, timeout)
    try:
        return job_id(manager, output)
    except ParseError as error:
        raise ManagerError(str(error)) from None


async def cancel(manager: str, allocation_id: str, cwd: str, timeout: float) -> None:
    program = "qdel" if manager == PBS else "scancel"
    await run_tool([program, allocation_id], _existing(cwd), timeout)


def _existing(cwd: str) -> str:
    # The allocation dir may have been pruned or removed by the user; the tools do not
    # need it, it is only where they run.
    return cwd if os.path.isdir(cwd) else "/"


async def statuses(
    manager: str, allocations: Sequence[Allocation], timeout: float
) -> dict[str, Status | HqError]:
    """The state of each allocation, or the error that kept us from knowing it."""
    if not allocations:
        return {}
    out: dict[str, Status | HqError] = {}
    if manager == PBS:
        argv = ["qstat"]
        for allocation in allocations:
            argv += ["-f", allocation.id]
        argv += ["-F", "json", "-x"]
        ids = [a.id for a in allocations]
        try:
            output = await run_tool(argv, _existing(allocations[0].workdir), timeout)
        except ManagerError as error:
            return dict.fromkeys(ids, error)
        for key, value in pbs_statuses(output, ids).items():
            out[key] = ManagerError(str(value)) if isinstance(value, ParseError) else value
        return out
    for allocation in allocations:
        try:
            output = await run_tool(
                ["scontrol", "show", "job", allocation.id], _existing(allocation.workdir), timeout
            )
            out[allocation.id] = slurm_status(output)
        except ManagerError as error:
            out[allocation.id] = error
        except ParseError as error:
            out[allocation.id] = ManagerError(str(error))
    return out

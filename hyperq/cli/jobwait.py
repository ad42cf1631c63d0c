"""Waiting for jobs from the client: `job wait`, `job progress`, `submit --wait/--progress`.

Both block on the server (a `job-wait` reply, a `job-progress` stream) rather than polling,
so a waiting client costs the server nothing until something changes. They print nothing
but the progress line: the calling command decides about its own final output. A server
that goes away ends the wait quietly (jobs.md §8).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hyperq.common import log
from hyperq.common.context import Context
from hyperq.common.errors import HqError
from hyperq.common.idrange import IdRanges, Selector

JobSelection = Selector | Mapping[str, Any] | int | Iterable[int]
"""A Selector, a wire selector, one job id or several."""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hyperq.output.base import Progress

_LOST = "Connection to the server was lost"


def wire_selector(selection: JobSelection) -> dict[str, Any]:
    from hyperq.cli.commandargs import selector_wire

    if isinstance(selection, Selector):
        return selector_wire(selection)
    if isinstance(selection, Mapping):
        return dict(selection)
    ids = [selection] if isinstance(selection, int) else list(selection)
    return selector_wire(Selector.of(IdRanges.from_ids(ids)))


def wait_for_jobs(
    ctx: Context, session: Any, selection: JobSelection, *, without_close: bool = False
) -> list[Mapping[str, Any]]:
    """Block until every selected job is completed; returns their final JOB_INFOs.

    Prints nothing; failed or canceled tasks are not an error (exit code stays 0).
    """
    try:
        reply = session.request(
            "job-wait", selector=wire_selector(selection), without_close=without_close
        )
    except HqError as error:
        if error.message.startswith(_LOST):
            log.debug(f"Stopped waiting: {error.message}")
            return []
        raise
    return list(reply.get("jobs") or [])


def progress_of_jobs(
    ctx: Context, session: Any, selection: JobSelection
) -> list[Mapping[str, Any]]:
    """Show a progress line for the selected jobs until they are all completed.

    On a terminal the line is redrawn in place; otherwise each change is a new line.
    Returns the last JOB_INFOs seen.
    """
    from hyperq.output.modes import make_output

    output = make_output(ctx.output_mode, ctx.colors)
    try:
        reply = session.request("job-progress", selector=wire_selector(selection))
    except HqError as error:
        if error.message.startswith(_LOST):
            return []
        raise
    jobs = list(reply.get("jobs") or [])
    if _unfinished_tasks(jobs) == 0:
        log.warn("There are no jobs to wait for")
        return jobs
    while True:
        done = all(_completed(job) for job in jobs)
        output.job_progress(summarize(jobs), final=done)
        if done:
            return jobs
        try:
            message = session.recv()
        except HqError as error:
            if error.message.startswith(_LOST):
                output.job_progress(summarize(jobs), final=True)
                return jobs
            raise
        if isinstance(message, Mapping) and "ok" in message:
            message = message["ok"]
        if isinstance(message, Mapping) and "error" in message:
            raise HqError(str(message["error"]))
        if isinstance(message, Mapping) and isinstance(message.get("jobs"), list):
            jobs = list(message["jobs"])


def summarize(jobs: Sequence[Mapping[str, Any]]) -> Progress:
    """Sum the task counters of `jobs` for one progress line."""
    from hyperq.output.base import Progress

    totals = dict.fromkeys(("running", "finished", "failed", "canceled", "aborted"), 0)
    tasks = 0
    for job in jobs:
        stats = job.get("task_stats") or {}
        for name in totals:
            totals[name] += int(stats.get(name, 0))
        tasks += int(job.get("task_count", 0))
    return Progress(
        done_jobs=sum(1 for job in jobs if _completed(job)),
        total_jobs=len(jobs),
        total_tasks=tasks,
        **totals,
    )


def _completed(job: Mapping[str, Any]) -> bool:
    from hyperq.output.base import is_job_completed

    return is_job_completed(job)


def _unfinished_tasks(jobs: Sequence[Mapping[str, Any]]) -> int:
    total = 0
    for job in jobs:
        stats = job.get("task_stats") or {}
        total += int(stats.get("running", 0)) + int(stats.get("waiting", 0))
    return total

"""Ports of the original's job and task tests onto our harness, plus their shared helpers.

The helpers restate the original suite's `utils/job.py` conveniences (default output
paths, job-list tables, a Python task command) so the ported tests read like the
originals. They must never sleep for a fixed time: waiting is always a poll.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.harness import ClusterEnv, wait_until
from tests.tableparse import Table, parse_table, parse_tables


def default_output(
    cwd: Path, job_id: int = 1, task_id: int | str = 0, kind: str = "stdout"
) -> Path:
    """The default `--stdout`/`--stderr` path: `<cwd>/job-<job>/<task>.<kind>`."""
    return cwd / f"job-{job_id}" / f"{task_id}.{kind}"


def python(code: str) -> list[str]:
    """A task command running `code` with the test's own interpreter."""
    return [sys.executable, "-c", code]


def table(cluster: ClusterEnv, args: list[str]) -> Table:
    return parse_table(cluster.command(args))


def tables(cluster: ClusterEnv, args: list[str]) -> list[Table]:
    return parse_tables(cluster.command(args))


def list_jobs(cluster: ClusterEnv, *extra: str) -> Table:
    return table(cluster, ["job", "list", *extra])


def job_states(cluster: ClusterEnv, job_id: int) -> list[str]:
    """The lines of `job info`'s State cell."""
    value = tables(cluster, ["job", "info", str(job_id)])[0].get_row_value("State")
    assert value is not None
    return value.split("\n")


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def wait_for_text(path: Path, predicate: object = bool, timeout: float = 10) -> str:
    """Polls `path` until its text satisfies `predicate` (default: non-empty)."""
    assert callable(predicate)
    return wait_until(
        lambda: read_text(path) if predicate(read_text(path)) else "",
        timeout=timeout,
        what=f"contents of {path}",
    )


__all__ = [
    "default_output",
    "job_states",
    "list_jobs",
    "python",
    "read_text",
    "table",
    "tables",
    "wait_for_text",
]

"""`%{NAME}` placeholders in task paths and their two-stage resolution (jobs.md §2).

One definition for three users: the server resolves what it knows at submit (stage 1),
the worker resolves the rest when a task starts (stage 2), and the client repeats stage 2
for `task info` / `job cat`. Pure string work on the standard library only: no file
system access, no clock, no environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

JOB_ID = "JOB_ID"
TASK_ID = "TASK_ID"
INSTANCE_ID = "INSTANCE_ID"
SUBMIT_DIR = "SUBMIT_DIR"
CWD = "CWD"
SERVER_UID = "SERVER_UID"

KNOWN_PLACEHOLDERS: frozenset[str] = frozenset(
    {JOB_ID, TASK_ID, INSTANCE_ID, SUBMIT_DIR, CWD, SERVER_UID}
)

# `%{` up to the first `}`; the name may be empty or contain anything but `}`.
_PLACEHOLDER = re.compile(r"%\{([^}]*)\}")


def placeholder_names(template: str) -> list[str]:
    """Names of every placeholder in `template`, in order, repeats kept."""
    if "%" not in template:
        return []
    return _PLACEHOLDER.findall(template)


def has_placeholders(template: str) -> bool:
    """Whether any `%{…}` (known or not) is left in `template`."""
    return "%" in template and _PLACEHOLDER.search(template) is not None


def unknown_placeholders(template: str) -> list[str]:
    """Placeholder names outside the known six, in order, repeats kept (for the warning)."""
    return [name for name in placeholder_names(template) if name not in KNOWN_PLACEHOLDERS]


def fill(template: str, values: Mapping[str, str]) -> str:
    """Substitute the placeholders named in `values`; every other `%{…}` stays verbatim."""
    if "%" not in template:
        return template
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def submit_values(job_id: int, submit_dir: str, server_uid: str) -> dict[str, str]:
    """Placeholder values known at submit (stage 1, on the server)."""
    return {JOB_ID: str(job_id), SUBMIT_DIR: submit_dir, SERVER_UID: server_uid}


def task_values(
    job_id: int, task_id: int, instance_id: int, submit_dir: str, server_uid: str
) -> dict[str, str]:
    """Placeholder values known when a task starts (stage 2, on the worker and client)."""
    values = submit_values(job_id, submit_dir, server_uid)
    values[TASK_ID] = str(task_id)
    values[INSTANCE_ID] = str(instance_id)
    return values


def _resolve_path(template: str, values: Mapping[str, str], base: str) -> str:
    path = fill(template, values)
    if has_placeholders(path) or os.path.isabs(path):
        return path
    return os.path.join(base, path)


def resolve_paths(
    cwd: str,
    stdout: str | None,
    stderr: str | None,
    values: Mapping[str, str],
    submit_dir: str,
) -> tuple[str, str | None, str | None]:
    """One resolution stage over (cwd, stdout, stderr); `None` (output `none`) passes through.

    Known values are substituted; a path with no `%{…}` left is made absolute (cwd against
    the submit dir, outputs against the resolved cwd). `%{CWD}` in the outputs becomes the
    resolved cwd, even when that still holds placeholders.
    """
    resolved_cwd = _resolve_path(cwd, values, submit_dir)
    with_cwd = {**values, CWD: resolved_cwd}

    def output(template: str | None) -> str | None:
        if template is None:
            return None
        path = fill(template, with_cwd)
        if has_placeholders(path) or os.path.isabs(path):
            return path
        if has_placeholders(resolved_cwd) and not os.path.isabs(resolved_cwd):
            # Joined now, the next stage would join it onto the (then resolved) cwd again.
            return path
        return os.path.join(resolved_cwd, path)

    return resolved_cwd, output(stdout), output(stderr)


# How a streamed channel (`--stream`) stands in a task's stdout/stderr on the wire.
STREAM_MARK = "<pipe>"


def resolve_task_paths(
    task: Mapping[str, Any], values: Mapping[str, str]
) -> tuple[str, str | None, str | None]:
    """A listed task's (cwd, stdout, stderr) with `values` filled in; a streamed channel
    has no path and resolves to None (callers decide how to show it)."""
    stdout, stderr = task.get("stdout"), task.get("stderr")
    return resolve_paths(
        str(task["cwd"]),
        None if stdout in (None, STREAM_MARK) else str(stdout),
        None if stderr in (None, STREAM_MARK) else str(stderr),
        values,
        str(task.get("submit_dir") or ""),
    )

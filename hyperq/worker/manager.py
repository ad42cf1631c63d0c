"""Batch-manager detection (PBS, Slurm): allocation id and remaining walltime.

Runs the manager's own query tool once at worker start. A failing tool is a warning,
never a reason not to start.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess

from hyperq.common.errors import HqError

log = logging.getLogger(__name__)


def _hms(text: str) -> float:
    parts = [int(p) for p in text.strip().split(":")]
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return float(seconds)


def _slurm_time(text: str) -> float:
    # Slurm prints [days-]hours:minutes:seconds, or minutes:seconds.
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    return days * 86400 + _hms(text)


def pbs_remaining(job_id: str) -> float | None:
    try:
        out = subprocess.run(
            ["qstat", "-f", job_id, "-F", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        job = json.loads(out)["Jobs"][job_id]
        limit = _hms(job["Resource_List"]["walltime"])
        used = _hms(job.get("resources_used", {}).get("walltime", "00:00:00"))
        return max(limit - used, 0.0)
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as error:
        log.warning("Cannot get the remaining walltime of PBS job %s: %s", job_id, error)
        return None


def slurm_remaining(job_id: str) -> float | None:
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", job_id],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
        return max(_slurm_time(fields["TimeLimit"]) - _slurm_time(fields["RunTime"]), 0.0)
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as error:
        log.warning("Cannot get the remaining walltime of Slurm job %s: %s", job_id, error)
        return None


def detect(manager: str) -> tuple[str | None, str | None, float | None]:
    """(manager name, allocation id, remaining seconds) for `--manager`."""
    pbs_id = os.environ.get("PBS_JOBID") if os.environ.get("PBS_ENVIRONMENT") else None
    slurm_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_JOBID")
    if manager == "none":
        return None, None, None
    if manager == "pbs":
        if not pbs_id:
            raise HqError("PBS_JOBID not found. The worker is not running inside a PBS job.")
        return "PBS", pbs_id, pbs_remaining(pbs_id)
    if manager == "slurm":
        if not slurm_id:
            raise HqError("SLURM_JOB_ID not found. The worker is not running inside a Slurm job.")
        return "Slurm", slurm_id, slurm_remaining(slurm_id)
    if pbs_id:
        return "PBS", pbs_id, pbs_remaining(pbs_id)
    if slurm_id:
        return "Slurm", slurm_id, slurm_remaining(slurm_id)
    return None, None, None

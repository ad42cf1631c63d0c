"""What is submitted and how the managers' answers are read (alloc.md §3): batch
scripts, the worker command, job ids from sbatch/qsub, states from scontrol/qstat.

Pure: text in, text or values out. Local times are converted with the time module's
calendar functions only (no clock is read).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from hyperq.alloc.decisions import Status
from hyperq.alloc.queue import PBS, QueueParams
from hyperq.common.duration import format_duration


class ParseError(ValueError):
    """A manager printed something we cannot read; the message is the user's error."""


def walltime(seconds: float) -> str:
    """`HH:MM:SS`, whole seconds, hours not capped (`100:00:00`)."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02}:{minutes:02}:{secs:02}"


def worker_command(
    params: QueueParams, hq: str, base: str, rust_log: str | None, default_idle: float = 300.0
) -> str:
    """The line that starts the worker in an allocation (§3.2), start/stop cmds included."""
    idle = params.idle_timeout if params.idle_timeout is not None else default_idle
    parts = []
    if rust_log is not None:
        parts.append(f"RUST_LOG={rust_log}")
    if params.worker_wrap_cmd and params.worker_wrap_cmd.strip():
        parts.append(params.worker_wrap_cmd.strip())
    parts.append(
        f'{hq} worker start --idle-timeout "{format_duration(idle)}" '
        f'--manager "{params.manager}" --server-dir "{base}"'
    )
    if params.worker_args:
        parts.append(" ".join(params.worker_args))
    command = " ".join(parts)
    if params.worker_start_cmd:
        command = f"{params.worker_start_cmd} && {command}"
    if params.worker_stop_cmd:
        command = f"{command}; {params.worker_stop_cmd}"
    return command


def pbs_script(
    params: QueueParams, workers: int, job_name: str, workdir: str, command: str, trial: bool
) -> str:
    lines = [
        "#!/bin/bash",
        f"#PBS -l select={workers}",
        f"#PBS -N {job_name}",
        f"#PBS -o {workdir}/stdout",
        f"#PBS -e {workdir}/stderr",
        f"#PBS -l walltime={walltime(params.timelimit)}",
    ]
    if params.additional_args:
        lines.append("#PBS " + " ".join(params.additional_args))
    if trial:
        lines.append("#PBS -h")
    lines.append("")
    if workers == 1:
        lines.append(command)
    else:
        lines.append(f"pbsdsh -- bash -l -c '{command}'")
    return "\n".join(lines)


def slurm_script(
    params: QueueParams, workers: int, job_name: str, workdir: str, command: str
) -> str:
    lines = [
        "#!/bin/bash",
        f"#SBATCH --nodes={workers}",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --output={workdir}/stdout",
        f"#SBATCH --error={workdir}/stderr",
        f"#SBATCH --time={walltime(params.timelimit)}",
    ]
    if params.additional_args:
        lines.append("#SBATCH " + " ".join(params.additional_args))
    lines.append("")
    if workers == 1:
        lines.append(command)
    else:
        lines.append(f"srun --overlap --ntasks={workers} --nodes={workers} {command}")
    return "\n".join(lines)


def script(
    params: QueueParams, workers: int, job_name: str, workdir: str, command: str, trial: bool
) -> str:
    if params.manager == PBS:
        return pbs_script(params, workers, job_name, workdir, command, trial)
    return slurm_script(params, workers, job_name, workdir, command)


def job_id(manager: str, stdout: str) -> str:
    """The job id printed by qsub (the whole text) or sbatch (`Submitted batch job N`)."""
    text = stdout.strip()
    if manager == PBS:
        if not text:
            raise ParseError("Missing job id in qsub output")
        return text
    for line in text.splitlines():
        line = line.strip()
        if line.lower().startswith("submitted batch job"):
            words = line.split(" ")
            if len(words) >= 4 and words[3]:
                return words[3]
    raise ParseError(f"Missing job id in sbatch output\n{text}")


def _local(text: str, fmt: str) -> float:
    try:
        return time.mktime(time.strptime(text, fmt))
    except (ValueError, OverflowError) as error:
        raise ParseError(f"Cannot parse time {text!r}: {error}") from None


SLURM_TIME = "%Y-%m-%dT%H:%M:%S"
PBS_TIME = "%a %b %d %H:%M:%S %Y"


def scontrol_values(output: str) -> dict[str, str]:
    """`Key=Value` tokens of `scontrol show job` (a value ends at the next space)."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        for token in line.split():
            if "=" in token:
                key, value = token.split("=", 1)
                values.setdefault(key, value)
    return values


def _slurm_key(values: dict[str, str], key: str) -> str:
    if key not in values:
        raise ParseError(f"Missing key {key} in Slurm scontrol output")
    return values[key]


def slurm_status(output: str) -> Status:
    values = scontrol_values(output)
    state = _slurm_key(values, "JobState")
    if state in ("PENDING", "CONFIGURING"):
        return Status("queued")
    if state in ("RUNNING", "COMPLETING"):
        start = values.get("StartTime")
        started = _local(start, SLURM_TIME) if start and start[0].isdigit() else None
        return Status("running", started)
    if state in ("COMPLETED", "TIMEOUT", "CANCELLED", "FAILED"):
        started = _local(_slurm_key(values, "StartTime"), SLURM_TIME)
        ended = _local(_slurm_key(values, "EndTime"), SLURM_TIME)
        return Status("finished" if state in ("COMPLETED", "TIMEOUT") else "failed", started, ended)
    raise ParseError(f"Unknown Slurm job status {state}")


def pbs_statuses(output: str, ids: Sequence[str]) -> dict[str, Status | ParseError]:
    """`qstat -f … -F json -x` for several jobs; a job missing from `Jobs` failed."""
    try:
        jobs = json.loads(output)["Jobs"]
        if not isinstance(jobs, dict):
            raise TypeError("Jobs is not an object")
    except (ValueError, KeyError, TypeError) as error:
        failure = ParseError(f"Cannot parse qstat output: {error}")
        return {job: failure for job in ids}
    out: dict[str, Status | ParseError] = {}
    for job in ids:
        info = jobs.get(job)
        if not isinstance(info, dict):
            out[job] = Status("failed")
            continue
        try:
            out[job] = _pbs_status(info)
        except ParseError as error:
            out[job] = error
    return out


def _pbs_status(info: dict[str, object]) -> Status:
    state = info.get("job_state")
    if state == "Q":
        return Status("queued")
    if state in ("R", "E"):
        stime = info.get("stime")
        return Status("running", _local(str(stime), PBS_TIME) if stime else None)
    if state == "F":
        stime = info.get("stime")
        mtime = info.get("mtime")
        if not mtime:
            raise ParseError("Missing key mtime in qstat output")
        started = _local(str(stime), PBS_TIME) if stime else None
        ended = _local(str(mtime), PBS_TIME)
        failed = info.get("Exit_status") != 0
        return Status("failed" if failed else "finished", started, ended)
    raise ParseError(f"Unknown PBS job status {state}")

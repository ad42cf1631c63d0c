"""What is submitted (alloc.md §3) and how the managers' answers are read: exact
scripts for Slurm and PBS, the worker command, job ids and states."""

from __future__ import annotations

import json
import time

import pytest

from hyperq.alloc.decisions import Status
from hyperq.alloc.queue import QueueParams
from hyperq.alloc.scripts import (
    ParseError,
    job_id,
    pbs_statuses,
    script,
    slurm_status,
    walltime,
    worker_command,
)

HQ = "/opt/hq/bin/hq"
BASE = "/srv/hq-server/001"


def params(manager: str = "slurm", **fields: object) -> QueueParams:
    values: dict[str, object] = {
        "manager": manager,
        "backlog": 1,
        "max_workers_per_alloc": 1,
        "timelimit": 3600.0,
        "worker_args": ["--on-server-lost", '"finish-running"', "--time-limit", '"1h"'],
    }
    values.update(fields)
    return QueueParams(**values)  # type: ignore[arg-type]


def test_worker_command_full() -> None:
    p = params(
        "pbs",
        worker_args=[
            "--cpus", '"2x8"', "--resource", '"x=sum(100)"', "--no-hyper-threading",
            "--detect-resources", "cpus,mem", "--min-utilization", "0.2",
            "--on-server-lost", '"finish-running"', "--time-limit", '"1h"',
        ],
    )  # fmt: skip
    assert worker_command(p, HQ, BASE, None) == (
        f'{HQ} worker start --idle-timeout "5m" --manager "pbs" --server-dir "{BASE}" '
        '--cpus "2x8" --resource "x=sum(100)" --no-hyper-threading --detect-resources '
        'cpus,mem --min-utilization 0.2 --on-server-lost "finish-running" --time-limit "1h"'
    )


def test_worker_command_env_wrap_start_stop() -> None:
    p = params(
        idle_timeout=1800.0,
        worker_wrap_cmd="  srun --x  ",
        worker_start_cmd="init.sh",
        worker_stop_cmd="unload.sh",
    )
    assert worker_command(p, HQ, BASE, "foo") == (
        f'init.sh && RUST_LOG=foo srun --x {HQ} worker start --idle-timeout "30m" '
        f'--manager "slurm" --server-dir "{BASE}" --on-server-lost "finish-running" '
        '--time-limit "1h"; unload.sh'
    )


def test_slurm_script_single_node() -> None:
    p = params(timelimit=180.0, additional_args=["--foo=bar", "a", "b"])
    assert script(p, 1, "hq-1-1", "/w/001", "CMD", trial=True) == (
        "#!/bin/bash\n"
        "#SBATCH --nodes=1\n"
        "#SBATCH --job-name=hq-1-1\n"
        "#SBATCH --output=/w/001/stdout\n"
        "#SBATCH --error=/w/001/stderr\n"
        "#SBATCH --time=00:03:00\n"
        "#SBATCH --foo=bar a b\n"
        "\n"
        "CMD"
    )


def test_slurm_script_multi_node() -> None:
    text = script(params(max_workers_per_alloc=2), 2, "foo-1", "/w", "CMD", trial=False)
    assert text.splitlines()[1] == "#SBATCH --nodes=2"
    assert text.endswith("\n\nsrun --overlap --ntasks=2 --nodes=2 CMD")


def test_pbs_script_trial_and_multi_node() -> None:
    p = params("pbs", timelimit=360000.0, additional_args=["-q", "qexp"])
    assert script(p, 1, "hq-0-1", "/t", "CMD", trial=True) == (
        "#!/bin/bash\n"
        "#PBS -l select=1\n"
        "#PBS -N hq-0-1\n"
        "#PBS -o /t/stdout\n"
        "#PBS -e /t/stderr\n"
        "#PBS -l walltime=100:00:00\n"
        "#PBS -q qexp\n"
        "#PBS -h\n"
        "\n"
        "CMD"
    )
    multi = script(params("pbs"), 3, "hq-1-2", "/t", "CMD", trial=False)
    assert "#PBS -h" not in multi
    assert multi.endswith("\n\npbsdsh -- bash -l -c 'CMD'")


def test_walltime() -> None:
    assert walltime(0) == "00:00:00"
    assert walltime(3725.9) == "01:02:05"


def test_job_ids() -> None:
    assert job_id("pbs", " 12.server\n") == "12.server"
    assert job_id("slurm", "banner\nmore banner\nSubmitted batch job 42\n") == "42"
    with pytest.raises(ParseError, match="Missing job id in sbatch output\ngarbage"):
        job_id("slurm", "garbage")
    with pytest.raises(ParseError):
        job_id("pbs", "  \n")


def local(text: str, fmt: str) -> float:
    return time.mktime(time.strptime(text, fmt))


def test_slurm_states() -> None:
    assert slurm_status("JobId=1 JobState=PENDING Reason=None") == Status("queued")
    running = slurm_status("JobState=RUNNING\n   StartTime=2024-01-02T03:04:05 EndTime=Unknown")
    assert running == Status("running", local("2024-01-02T03:04:05", "%Y-%m-%dT%H:%M:%S"))
    done = slurm_status(
        "JobState=TIMEOUT StartTime=2024-01-02T03:04:05 EndTime=2024-01-02T04:04:05"
    )
    assert done.state == "finished" and done.ended_at is not None
    assert (
        slurm_status(
            "JobState=CANCELLED StartTime=2024-01-02T03:04:05 EndTime=2024-01-02T04:04:05"
        ).state
        == "failed"
    )
    with pytest.raises(ParseError, match="Unknown Slurm job status SUSPENDED"):
        slurm_status("JobState=SUSPENDED")
    with pytest.raises(ParseError, match="Missing key JobState in Slurm scontrol output"):
        slurm_status("")
    with pytest.raises(ParseError, match="Missing key EndTime"):
        slurm_status("JobState=COMPLETED StartTime=2024-01-02T03:04:05")


def test_pbs_states() -> None:
    output = json.dumps(
        {
            "Jobs": {
                "1.job": {"job_state": "Q"},
                "2.job": {"job_state": "R", "stime": "Tue Jan 02 03:04:05 2024"},
                "3.job": {"job_state": "F", "mtime": "Tue Jan 02 04:04:05 2024", "Exit_status": 0},
                "4.job": {"job_state": "F", "mtime": "Tue Jan 02 04:04:05 2024", "Exit_status": 3},
                "5.job": {"job_state": "X"},
            }
        }
    )
    got = pbs_statuses(output, ["1.job", "2.job", "3.job", "4.job", "5.job", "6.job"])
    assert got["1.job"] == Status("queued")
    assert got["2.job"] == Status(
        "running", local("Tue Jan 02 03:04:05 2024", "%a %b %d %H:%M:%S %Y")
    )
    assert isinstance(got["3.job"], Status) and got["3.job"].state == "finished"
    assert isinstance(got["4.job"], Status) and got["4.job"].state == "failed"
    assert str(got["5.job"]) == "Unknown PBS job status X"
    assert got["6.job"] == Status("failed")  # absent from Jobs


def test_pbs_garbage_is_an_error_for_every_job() -> None:
    got = pbs_statuses("\x00not json", ["1.job", "2.job"])
    assert all(isinstance(value, ParseError) for value in got.values())
    assert set(got) == {"1.job", "2.job"}

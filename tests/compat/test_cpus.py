"""The original's `tests/test_cpus.py`, ported: CPU requests, policies, env and pinning.

The original shows pinning inside `Resources` (`cpus: 2 compact! [pin]`); the spec gives
it a row of its own (`Pin`), which is what is checked here. Pinning tests use CPUs 0 and
1 only, which every machine that runs this suite has.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.compat import default_output, table
from tests.harness import ClusterEnv


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.strip().split(",")]


def cpus_of(cluster: ClusterEnv, job_id: int) -> list[int]:
    return numbers(default_output(cluster.work_dir, job_id).read_text())


def affinity_list(pid: int | str) -> str:
    """`taskset -c -p` output without the PID: `current affinity list: 0,1`."""
    output = subprocess.run(
        ["taskset", "-c", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    return output.split(":", 1)[1].strip()


def test_job_num_of_cpus(cluster: ClusterEnv) -> None:
    cluster.start_server()
    requests = [None, "2 scatter", "5 scatter", "4 compact!", "5 compact!", "all", "1.5"]
    for request in requests:
        cpus = ["--cpus", request] if request else []
        cluster.command(["submit", *cpus, "--", "bash", "-c", "echo $HQ_CPUS"])
    cluster.start_worker(cpus="3x4")
    for job_id in range(1, 8):
        cluster.wait_for_job_state(job_id, "FINISHED")

    def resources(job_id: int) -> str | None:
        return table(cluster, ["job", "info", str(job_id)]).get_row_value("Resources")

    assert resources(1) == "cpus: 1 compact"
    assert len(cpus_of(cluster, 1)) == 1

    assert resources(2) == "cpus: 2 scatter"
    assert len({cpu // 4 for cpu in cpus_of(cluster, 2)}) == 2

    assert resources(3) == "cpus: 5 scatter"
    assert len(cpus_of(cluster, 3)) == 5

    assert resources(4) == "cpus: 4 compact!"
    cpus = cpus_of(cluster, 4)
    assert len(cpus) == 4 and len({cpu // 4 for cpu in cpus}) == 1

    assert resources(5) == "cpus: 5 compact!"
    cpus = cpus_of(cluster, 5)
    assert len(cpus) == 5 and len({cpu // 4 for cpu in cpus}) == 2

    assert resources(6) == "cpus: all"
    assert sorted(cpus_of(cluster, 6)) == list(range(12))

    assert resources(7) == "cpus: 1.5 compact"


def test_cpu_request_too_large_for_any_worker_waits(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    cluster.command(["submit", "--cpus", "3", "--", "true"])
    cluster.command(["submit", "--cpus", "2", "--", "true"])
    cluster.wait_for_job_state(2, "FINISHED")
    assert cluster.job_states()[1] == "waiting"


@pytest.mark.parametrize(
    ("env", "expected"), [([], "4"), (["--env", "OMP_NUM_THREADS=100"], "100")]
)
def test_omp_num_threads(cluster: ClusterEnv, env: list[str], expected: str) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=4)
    cluster.command(["submit", "--cpus", "4", *env, "--", "bash", "-c", "echo $OMP_NUM_THREADS"])
    cluster.wait_for_job_state(1, "FINISHED")
    assert default_output(cluster.work_dir).read_text().strip() == expected


def test_resource_request_env(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=4)
    cluster.command(
        [
            "submit",
            "--cpus",
            "2",
            "--",
            "bash",
            "-c",
            'echo "$HQ_RESOURCE_REQUEST_cpus|$HQ_RESOURCE_VALUES_cpus|$HQ_CPUS|${HQ_PIN-unset}"',
        ]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    request, values, cpus, pin = default_output(cluster.work_dir).read_text().strip().split("|")
    assert request == "2 compact"
    assert values == cpus and len(numbers(cpus)) == 2
    assert pin == "unset"


def test_manual_taskset(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        ["submit", "--cpus", "2 compact", "--", "bash", "-c", "taskset -c $HQ_CPUS sleep 0.1"]
    )
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    table(cluster, ["job", "info", "1"]).check_row_value("State", "FINISHED")


def test_job_no_pin(cluster: ClusterEnv) -> None:
    ours = affinity_list(os.getpid())
    cluster.start_server()
    cluster.command(
        ["submit", "--cpus", "2 compact!", "--", "bash", "-c", "echo $HQ_CPUS; taskset -c -p $$"]
    )
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("State", "FINISHED")
    info.check_row_value("Resources", "cpus: 2 compact!")
    info.check_row_value("Pin", "none")
    lines = default_output(cluster.work_dir).read_text().splitlines()
    # Without pinning the task keeps the affinity it inherited.
    assert lines[1].split(":", 1)[1].strip() == ours


def test_job_show_pin_in_table(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--pin", "taskset", "--cpus", "2 compact!", "--", "hostname"])
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("Resources", "cpus: 2 compact!")
    info.check_row_value("Pin", "taskset")
    table(cluster, ["task", "info", "1", "0"]).check_row_value("Pin", "taskset")
    desc = cluster.json(["job", "info", "1"])[0]["submits"][0]["array"]
    assert desc["pin_mode"] == "taskset"


def test_job_pin_taskset(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    cluster.command(
        [
            "submit",
            "--pin",
            "taskset",
            "--cpus",
            "1 compact!",
            "--",
            "bash",
            "-c",
            "echo $HQ_CPUS; echo $HQ_PIN; taskset -c -p $$",
        ]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    cpus, pin, affinity = default_output(cluster.work_dir).read_text().splitlines()
    assert pin == "taskset"
    assert numbers(affinity.split(":", 1)[1]) == numbers(cpus)


def test_job_pin_openmp(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    cluster.command(
        [
            "submit",
            "--pin",
            "omp",
            "--cpus",
            "2 compact!",
            "--",
            "bash",
            "-c",
            "echo $OMP_PLACES; echo $OMP_PROC_BIND; echo $HQ_PIN",
        ]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    places, bind, pin = default_output(cluster.work_dir).read_text().splitlines()
    assert places.startswith("{") and places.endswith("}")
    assert sorted(numbers(places[1:-1])) == [0, 1]
    assert bind == "close"
    assert pin == "omp"
    table(cluster, ["job", "info", "1"]).check_row_value("Pin", "omp")
    desc = cluster.json(["job", "info", "1"])[0]["submits"][0]["array"]
    assert desc["pin_mode"] == "openmp"

"""End to end: minimal utilization, weights and the priority gap (cluster.md §3), as in
the original's `test_worker_mu_case*`, `test_resource_weight` and
`test_scheduler_unschedulable_sn_blocker`. Tasks block on a file the test creates at
the end, so nothing depends on how long a task takes and nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import ClusterEnv
from tests.tableparse import parse_table

HOLD = ["bash", "-c", "while [ ! -f go ]; do sleep 0.05; done"]


@pytest.fixture
def held(cluster: ClusterEnv) -> Iterator[ClusterEnv]:
    try:
        yield cluster
    finally:
        (cluster.work_dir / "go").touch()


def state_row(cluster: ClusterEnv, job_id: int) -> str:
    """The counts of the `job info` State row (below its progress bar): `RUNNING (2)`."""
    row = parse_table(cluster.command(["job", "info", str(job_id)])).get_row_value("State")
    assert row is not None
    return " ".join(line for line in row.split("\n") if not line.startswith("["))


def submit(cluster: ClusterEnv, *args: str) -> None:
    cluster.command(["submit", *args, "--", *HOLD])


def probe(cluster: ClusterEnv, job_id: int, *args: str) -> None:
    """A later job that finishes: every scheduling pass before it has happened."""
    cluster.command(["submit", *args, "--", "true"])
    cluster.wait_for_job_state(job_id, "FINISHED")


def test_worker_mu_case1(held: ClusterEnv) -> None:
    held.start_server()
    submit(held, "--weight=2", "--cpus=3", "--array=1-3")
    submit(held, "--cpus=all")
    held.start_worker("--min-utilization=1", cpus=12)
    held.wait_for_job_state(2, "RUNNING")
    assert state_row(held, 1) == "WAITING (3)"


def test_worker_mu_case2(held: ClusterEnv) -> None:
    held.start_server()
    submit(held, "--weight=2", "--cpus=3", "--array=1-4")
    submit(held, "--cpus=all")
    held.start_worker("--min-utilization=1", cpus=12)
    held.wait_for_job_state(1, "RUNNING")
    held.wait_for_task_state(1, 4, "RUNNING")
    assert state_row(held, 1) == "RUNNING (4)"
    assert state_row(held, 2) == "WAITING"


def test_worker_mu_case3(held: ClusterEnv) -> None:
    held.start_server()
    submit(held, "--weight=2", "--cpus=3", "--array=1-3")
    submit(held, "--cpus=6", "--array=1-3")
    held.start_worker("--min-utilization=1", cpus=12)
    held.wait_for_job_state(2, "RUNNING")
    held.wait_for_job_state(1, "RUNNING")
    assert state_row(held, 1) == "RUNNING (2) WAITING (1)"
    assert state_row(held, 2) == "RUNNING (1) WAITING (2)"
    config = held.json(["worker", "info", "1"])[0]["configuration"]
    assert config["min_utilization"] == 1.0


def test_resource_weight_decides_between_waiting_jobs(held: ClusterEnv) -> None:
    held.start_server()
    submit(held, "--cpus=2", "--resource", "gpus=2")
    submit(held, "--cpus=2", "--resource", "gpus=1", "--weight=2.5")
    held.start_worker("--resource", "gpus=sum(2)", cpus=2)
    held.wait_for_job_state(2, "RUNNING")
    assert state_row(held, 1) == "WAITING"
    table = parse_table(held.command(["job", "info", "2"]))
    assert table.get_row_value("Resources") == "cpus: 2 compact\ngpus: 1 compact\n[weight: 2.5]"


def test_scheduler_unschedulable_sn_blocker(held: ClusterEnv) -> None:
    held.start_server()
    held.start_worker(cpus=4)
    submit(held, "--priority=1000", "--cpus=1")
    held.wait_for_job_state(1, "RUNNING")
    submit(held, "--priority=100", "--cpus=4")
    submit(held, "--priority=50", "--cpus=2", "--array=1-5")
    submit(held, "--priority=1", "--cpus=4", "--array=1-5")
    # A probe of the highest priority runs in what is left: passes have happened.
    probe(held, 5, "--priority=2000")
    assert state_row(held, 2) == "WAITING"
    assert state_row(held, 3) == "WAITING (5)"
    assert state_row(held, 4) == "WAITING (5)"


def test_resources_and_priorities_one_by_one_submit(held: ClusterEnv) -> None:
    # Two of four foo=2 jobs run; the other two wait, leaving a gap of 6 CPUs in which
    # a lower-priority cpus=2 job still runs.
    held.start_server()
    held.start_worker("--resource", "foo=[1,2,3,4]", cpus=8)
    for _ in range(4):
        submit(held, "--resource", "foo=2")
    held.wait_for_job_state(2, "RUNNING")
    submit(held, "--priority=-1", "--cpus=2")
    held.wait_for_job_state(5, "RUNNING")
    assert [held.job_states()[j] for j in (1, 2, 3, 4)] == ["running"] * 2 + ["waiting"] * 2

"""`hq task explain` end to end (graphs.md §3; the original's tests/test_explain.py)."""

from __future__ import annotations

import json

from tests.harness import ClusterEnv


def test_explain_single_node(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker("--time-limit=5min", cpus=5)
    for _ in range(3):
        cluster.command(["submit", "--cpus=10", "--time-request=1h", "--", "hostname"])
    lines = cluster.command(["task", "explain", "3", "0"]).splitlines()
    assert lines[0] == "Task 3@0 is ready to run because it has no dependencies."
    assert lines[1] == "There is no worker where the task can run."
    assert lines[2:5] == [
        "+-----------+----------+---------+------+----------+---------+",
        "| Worker Id | Runnable | Variant | Type | Provides | Request |",
        "+-----------+----------+---------+------+----------+---------+",
    ]
    assert lines[5].startswith("| 1         | No       | 0       | time | 4m 5")
    assert lines[5].endswith("| 1h      |")
    assert lines[6] == "|           |          |         | cpus | 5        | 10      |"
    data = json.loads(cluster.command(["--output-mode", "json", "task", "explain", "last", "0"]))
    assert data["task_id"] == {"job_id": 3, "job_task_id": 0}
    explanation = data["explanation"]
    assert (explanation["n_task_deps"], explanation["n_waiting_deps"]) == (0, 0)
    (worker,) = explanation["workers"]
    assert worker["worker_id"] == 1
    (items,) = worker["variants"]
    time_item, cpus_item = items
    assert time_item["Time"]["min_time"] == {"secs": 3600, "nanos": 0}
    assert 280 < time_item["Time"]["remaining_time"]["secs"] <= 300
    assert cpus_item == {
        "Resources": {"resource": "cpus", "request_amount": 100000, "worker_amount": 50000}
    }
    assert cluster.command(["--output-mode", "quiet", "task", "explain", "3", "0"]) == ""


def test_explain_variants_and_deps(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=4)
    cluster.start_worker("--resource", "gpus=[0]", cpus=4)
    job = """
[[task]]
id = 0
command = ["true"]

[[task]]
id = 1
command = ["sleep", "100"]

[[task]]
id = 2
deps = [0, 1]
command = ["true"]

[[task.request]]
resources = { "cpus" = 2 }

[[task.request]]
resources = { "cpus" = 1, "gpus" = 1 }
"""
    (cluster.work_dir / "job.toml").write_text(job)
    cluster.command(["job", "submit-file", "job.toml"])
    cluster.wait_for_task_state(1, 0, "FINISHED")
    cluster.wait_for_task_state(1, 1, "RUNNING")
    lines = cluster.command(["task", "explain", "1", "2"]).splitlines()
    assert lines[0] == "Task 1@2 is not ready to run, because 1/2 dependencies are not finished."
    assert lines[1] == "The task can run on 2 workers: 1-2"
    rows = [line for line in lines if line.startswith("|")][1:]
    assert rows[0].split("|")[1:4] == [" 1         ", " Yes (1/2) ", " 0       "]
    assert [cell.strip() for cell in rows[1].split("|")[1:7]] == ["", "", "1", "cpus", "4", "1"]
    assert [cell.strip() for cell in rows[2].split("|")[1:7]] == ["", "", "", "gpus", "0", "1"]
    assert "Yes (2/2)" in rows[3]
    # A running task without deps.
    assert cluster.command(["task", "explain", "1", "1"]).splitlines()[0] == (
        "Task 1@1 is ready to run because it has no dependencies."
    )
    # Another job with the same IDs does not interfere.
    cluster.command(["job", "submit-file", "job.toml"])
    assert "1/2 dependencies" in cluster.command(["task", "explain", "1", "2"])


def test_explain_errors(cluster: ClusterEnv) -> None:
    cluster.start_server()
    out = cluster.command(["task", "explain", "1", "0"], expect_fail=True)
    assert out.strip().endswith("Job not found")
    cluster.command(["submit", "--", "true"])
    assert (
        cluster.command(["task", "explain", "1", "7"], expect_fail=True)
        .strip()
        .endswith("Task not found")
    )
    cluster.command(["job", "cancel", "1"])
    out = cluster.command(["task", "explain", "1", "0"], expect_fail=True)
    assert "Explain command works only for tasks in WAITING or RUNNING state" in out
    cluster.command(["submit", "--", "true"])
    lines = cluster.command(["task", "explain", "2", "0"])
    assert lines.splitlines() == [
        "Task 2@0 is ready to run because it has no dependencies.",
        "There is no worker where the task can run.",
    ]

"""The original's `tests/test_array.py` and `tests/test_task.py`, ported.

The original samples array states after fixed sleeps; here tasks wait for gate files the
test creates, so each intermediate state is reached deterministically and then polled.
"""

from __future__ import annotations

import collections
import datetime
import signal
from pathlib import Path

from tests.compat import default_output, job_states, list_jobs, python, table, tables
from tests.harness import ClusterEnv, wait_until

# Each task records that it started, then waits for its own gate file.
GATED = 'touch "started.$HQ_TASK_ID"; while [ ! -f "go.$HQ_TASK_ID" ]; do sleep 0.02; done'


def started(work_dir: Path) -> set[int]:
    return {int(path.suffix[1:]) for path in work_dir.glob("started.*")}


def release(work_dir: Path, ids: set[int]) -> None:
    for task_id in ids:
        (work_dir / f"go.{task_id}").touch()


def test_job_array_submit(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=4)
    cluster.command(["submit", "--array=30-36", "--", "bash", "-c", "echo $HQ_JOB_ID-$HQ_TASK_ID"])
    cluster.wait_for_job_state(1, "FINISHED")
    wd = cluster.work_dir
    for task_id in [*range(0, 30), *range(37, 40)]:
        assert not default_output(wd, 1, task_id).exists()
        assert not default_output(wd, 1, task_id, "stderr").exists()
    for task_id in range(30, 37):
        assert default_output(wd, 1, task_id).read_text() == f"1-{task_id}\n"
        assert default_output(wd, 1, task_id, "stderr").read_text() == ""


def test_job_array_report(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=4)
    wd = cluster.work_dir
    cluster.command(["submit", "--array=10-19", "--", "bash", "-c", GATED])
    first = wait_until(lambda: started(wd) if len(started(wd)) == 4 else None)
    release(wd, first)
    wait_until(lambda: len(started(wd)) == 8, what="the second wave")
    list_jobs(cluster).check_column_value("State", 0, "RUNNING")

    def report() -> list[str] | None:
        states = job_states(cluster, 1)
        return states if "FINISHED (4)" in states and "RUNNING (4)" in states else None

    states = wait_until(report, what="4 finished and 4 running tasks")
    assert states[0] == "[" + "#" * 32 + "." * 8 + "]"
    assert states[1:] == ["RUNNING (4)", "FINISHED (4)", "WAITING (2)"]
    table(cluster, ["job", "info", "1"]).check_row_value("Tasks", "10; Ids: 10-19")

    release(wd, set(range(10, 20)))
    cluster.wait_for_job_state(1, "FINISHED")
    assert job_states(cluster, 1)[-1] == "FINISHED (10)"


def test_job_array_error_some(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--array=0-9",
            "--",
            *python("import os; assert os.environ['HQ_TASK_ID'] not in ['2', '3', '7']"),
        ]
    )
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FAILED")
    list_jobs(cluster, "--all").check_column_value("State", 0, "FAILED")

    info, failures = tables(cluster, ["job", "info", "1"])
    states = (info.get_row_value("State") or "").split("\n")
    assert "FAILED (3)" in states
    assert "FINISHED (7)" in states
    assert failures.header == ["Task ID", "Worker", "Error"]
    assert failures.get_column_value("Task ID") == ["2", "3", "7"]
    assert failures.get_column_value("Worker") == ["worker1"] * 3
    assert failures.get_column_value("Error") == ["Program terminated with exit code 1."] * 3
    assert "3 tasks failed." in cluster.command(["job", "info", "1"])

    expected = ["FINISHED"] * 10
    for task_id in (2, 3, 7):
        expected[task_id] = "FAILED"
    assert table(cluster, ["task", "list", "1"]).get_column_value("State") == expected


def test_job_array_error_all(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--array=0-9", "--", "/non-existent"])
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FAILED")
    list_jobs(cluster, "--all").check_column_value("State", 0, "FAILED")

    out = cluster.command(["job", "info", "1"])
    info, failures = tables(cluster, ["job", "info", "1"])
    assert "FAILED (10)" in (info.get_row_value("State") or "").split("\n")
    # Only the first five failures are listed.
    assert failures.get_column_value("Task ID") == ["0", "1", "2", "3", "4"]
    for error in failures.get_column_value("Error") or []:
        assert "No such file or directory" in error
    assert "10 tasks failed. (5 shown)" in out

    tasks = table(cluster, ["task", "list", "1", "-v"])
    assert tasks.get_column_value("Task ID") == [str(i) for i in range(10)]
    assert tasks.get_column_value("State") == ["FAILED"] * 10
    for error in tasks.get_column_value("Error") or []:
        assert "No such file or directory" in error


def test_job_array_cancel(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=4)
    wd = cluster.work_dir
    cluster.command(["submit", "--array=0-9", "--", "bash", "-c", GATED])
    first = wait_until(lambda: started(wd) if len(started(wd)) == 4 else None)
    release(wd, first)
    wait_until(lambda: len(started(wd)) == 8, what="the second wave")
    wait_until(lambda: list(cluster.task_states(1).values()).count("finished") == 4)
    out = cluster.command(["job", "cancel", "1"])
    assert "Job 1 canceled (6 tasks canceled, 4 tasks already finished)" in out

    states = job_states(cluster, 1)
    assert "FINISHED (4)" in states
    assert "CANCELED (6)" in states
    counts = collections.Counter(table(cluster, ["task", "list", "1"]).get_column_value("State"))
    assert counts == {"FINISHED": 4, "CANCELED": 6}
    list_jobs(cluster, "--all").check_column_value("State", 0, "CANCELED")


def test_array_reporting_state_after_worker_lost(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker(cpus=2)
    wd = cluster.work_dir
    cluster.command(["submit", "--array=1-4", "--", "bash", "-c", GATED])
    wait_until(lambda: len(started(wd)) == 2, what="two tasks to start")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    wait_until(lambda: "WAITING (4)" in job_states(cluster, 1), what="all tasks waiting")
    counts = collections.Counter(table(cluster, ["task", "list", "1"]).get_column_value("State"))
    assert counts == {"WAITING": 4}

    release(wd, {1, 2, 3, 4})
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    assert "FINISHED (4)" in job_states(cluster, 1)
    # The restarted tasks run as instance 1.
    tasks = cluster.json(["task", "list", "1"])["1"]
    assert all(task["state"] == "finished" for task in tasks)


def test_array_mix_with_simple_jobs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for _ in range(4):
        cluster.command(["submit", "--array=1-4", "uname"])
        cluster.command(["submit", "uname"])
    cluster.start_worker(cpus=2)
    for job_id in range(1, 9):
        cluster.wait_for_job_state(job_id, "FINISHED")
    jobs = list_jobs(cluster, "--all")
    assert jobs.get_column_value("ID") == [str(i) for i in range(1, 9)]
    assert jobs.get_column_value("State") == ["FINISHED"] * 8
    assert jobs.get_column_value("Tasks") == ["4", "1"] * 4


def test_array_times(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    cluster.command(["submit", "--array=1-2", "sleep", "1"])
    cluster.wait_for_job_state(1, "FINISHED")
    for task_id in (1, 2):
        info = table(cluster, ["task", "info", "1", str(task_id)])
        start = datetime.datetime.strptime(info.get_row_value("Start") or "", "%d.%m.%Y %H:%M:%S")
        end = datetime.datetime.strptime(info.get_row_value("End") or "", "%d.%m.%Y %H:%M:%S")
        # Whole seconds on both ends: a 1 s task spans 1 or 2 second boundaries.
        assert 1 <= (end - start).total_seconds() <= 2
    # Start and end are stamped by the server when the worker's reports arrive, so the
    # task's own makespan is about, not at least, one second.
    for task in cluster.json(["task", "list", "1"])["1"]:
        makespan = timestamp(task["finished_at"]) - timestamp(task["started_at"])
        assert 0.9 <= makespan <= 2


def timestamp(text: str) -> float:
    """Epoch seconds of an RFC3339 UTC timestamp (with up to nanoseconds)."""
    head, _, fraction = text.rstrip("Z").partition(".")
    stamp = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC).timestamp()
    return stamp + (float("0." + fraction) if fraction else 0.0)


def test_task_list_single(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--array=0-3", "--", "bash", "-c", "hostname"])
    cluster.wait_for_job_state(1, "FINISHED")
    tasks = table(cluster, ["task", "list", "1", "-v"])
    assert tasks.get_column_value("Job ID") is None
    assert tasks.get_column_value("Task ID") == ["0", "1", "2", "3"]
    assert tasks.get_column_value("State") == ["FINISHED"] * 4
    assert tasks.get_column_value("Worker") == ["worker1"] * 4
    assert tasks.get_column_value("Error") == [""] * 4


def test_task_list_multi(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--array=5-10", "--", "bash", "-c", "hostname"])
    cluster.command(["submit", "--array=0-3", "--", "bash", "-c", "hostname"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FINISHED")
    tasks = table(cluster, ["task", "list", "1-3", "-v"])
    assert tasks.get_column_value("Job ID") == ["1"] * 6 + ["2"] * 4
    assert tasks.get_column_value("Task ID") == [str(i) for i in [*range(5, 11), *range(4)]]
    assert tasks.get_column_value("State") == ["FINISHED"] * 10
    assert tasks.get_column_value("Error") == [""] * 10
    assert "WARN Job 3 not found" in cluster.command(["task", "list", "1-3"])

    only = table(cluster, ["task", "list", "1", "--tasks", "6-7", "--task-status", "finished"])
    assert only.get_column_value("Task ID") == ["6", "7"]
    none = table(cluster, ["task", "list", "1", "--task-status", "failed"])
    assert len(none) == 0


def test_task_list_error_truncated(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--", "bash", "-c", "exit 3"])
    cluster.wait_for_job_state(1, "FAILED")
    out = cluster.command(["task", "list", "1"])
    assert "INFO An error message was truncated. Use -v to display the full error." in out
    table(cluster, ["task", "list", "1"]).check_column_value("Error", 0, "Program terminat...")
    table(cluster, ["task", "list", "1", "-v"]).check_column_value(
        "Error", 0, "Program terminated with exit code 3."
    )


def test_task_info(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--array=5-7", "--", "bash", "-c", "hostname"])
    cluster.wait_for_job_state(1, "FINISHED")

    table(cluster, ["task", "info", "1", "5"]).check_row_value("Task ID", "5")
    first, second = tables(cluster, ["task", "info", "1", "5-6"])
    first.check_row_value("Task ID", "5")
    second.check_row_value("Task ID", "6")
    assert "WARN Task 4 not found" in cluster.command(["task", "info", "1", "4"])
    assert "ERROR Cannot find job 9" in cluster.command(["task", "info", "9", "0"])

    cluster.command(["submit", "--", "bash", "-c", "hostname"])
    table(cluster, ["task", "info", "last", "0"]).check_row_value("Task ID", "0")


def test_task_info_rows(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(
        ["submit", "--env", "A=b", "--priority", "2", "--time-limit", "1m", "--", "echo", "x y"]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    info = table(cluster, ["task", "info", "1", "0"])
    labels = [row[0] for row in info]
    assert labels == [
        "Task ID",
        "State",
        "Command",
        "Environment",
        "Worker",
        "Start",
        "End",
        "Makespan",
        "Workdir",
        "Stdout",
        "Stderr",
        "Time limit",
        "Resources",
        "Priority",
        "Pin",
        "Task dir",
        "Crash limit",
        "Dependencies",
        "Error",
    ]
    info.check_row_value("State", "FINISHED")
    info.check_row_value("Command", "echo\nx y")
    info.check_row_value("Environment", "A=b")
    info.check_row_value("Worker", "worker1")
    info.check_row_value("Workdir", str(cluster.work_dir))
    info.check_row_value("Stdout", str(default_output(cluster.work_dir)))
    info.check_row_value("Stderr", str(default_output(cluster.work_dir, kind="stderr")))
    info.check_row_value("Time limit", "1m")
    info.check_row_value("Resources", "cpus: 1 compact")
    info.check_row_value("Priority", "2")
    info.check_row_value("Pin", "none")
    info.check_row_value("Task dir", "no")
    info.check_row_value("Crash limit", "5")
    info.check_row_value("Error", "")


def test_long_running_task(cluster: ClusterEnv) -> None:
    # The original guards against tasks dying after ~15 s; a task outliving several
    # worker heartbeats is the part that applies to us.
    cluster.start_server()
    cluster.start_worker("--heartbeat", "1s")
    cluster.command(["submit", "sleep", "3"])
    cluster.wait_for_job_state(1, "FINISHED", timeout=15)

"""Ports of the original's `tests/test_worker.py` (worker.md §1, §4-§6) onto our harness.

Worker lists, stop selectors, resources summaries, idle timeouts, time limits, `worker
info` rows, `worker address`, server-loss policies and `worker wait`, checked end to end
against real processes. Every wait is a poll; nothing here sleeps for a fixed time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness import ClusterEnv, kill_process, pid_alive, wait_until
from tests.tableparse import Table, parse_table


def list_all_workers(cluster: ClusterEnv) -> Table:
    return parse_table(cluster.command(["worker", "list", "--all"]))


def worker_info(cluster: ClusterEnv, worker_id: int | str) -> Table:
    return parse_table(cluster.command(["worker", "info", str(worker_id)]))


def read_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_worker_list(cluster: ClusterEnv) -> None:
    cluster.start_server()
    table = list_all_workers(cluster)
    assert len(table) == 0
    assert table.header is not None and table.header[:2] == ["ID", "State"]

    first = cluster.start_worker()
    second = cluster.start_worker()
    table = list_all_workers(cluster)
    assert len(table) == 2
    table.check_columns_value(["ID", "State"], 0, ["1", "RUNNING"])
    table.check_columns_value(["ID", "State"], 1, ["2", "RUNNING"])

    kill_process(second)
    cluster.wait_for_worker_state(2, "CONNECTION LOST")
    table = list_all_workers(cluster)
    table.check_columns_value(["ID", "State"], 0, ["1", "RUNNING"])
    table.check_columns_value(["ID", "State"], 1, ["2", "CONNECTION LOST"])

    kill_process(first)
    cluster.wait_for_worker_state(1, "CONNECTION LOST")
    cluster.start_worker()
    table = list_all_workers(cluster)
    assert len(table) == 3
    table.check_columns_value(["ID", "State"], 0, ["1", "CONNECTION LOST"])
    table.check_columns_value(["ID", "State"], 1, ["2", "CONNECTION LOST"])
    table.check_columns_value(["ID", "State"], 2, ["3", "RUNNING"])
    table.check_columns_value(
        ["Hostname", "Manager", "Manager Job ID"], 2, ["worker3", "None", "N/A"]
    )


def test_worker_list_filter(cluster: ClusterEnv) -> None:
    cluster.start_server()
    workers = [cluster.start_worker() for _ in range(4)]
    cluster.command(["worker", "stop", "3-4"])
    for worker in workers[2:]:
        assert worker.wait(timeout=10) == 0

    offline = parse_table(cluster.command(["worker", "list", "--filter", "offline"]))
    assert [row[:2] for row in offline] == [["3", "STOPPED"], ["4", "STOPPED"]]
    running = parse_table(cluster.command(["worker", "list", "--filter", "running"]))
    assert [row[:2] for row in running] == [["1", "RUNNING"], ["2", "RUNNING"]]
    everything = list_all_workers(cluster)
    assert [row[1] for row in everything] == ["RUNNING", "RUNNING", "STOPPED", "STOPPED"]


def test_worker_list_filter_rejects_unknown_value(cluster: ClusterEnv) -> None:
    result = cluster.run(["worker", "list", "--filter", "sleepy"])
    assert result.returncode == 2


def test_worker_stop(cluster: ClusterEnv) -> None:
    cluster.start_server()
    process = cluster.start_worker()
    out = cluster.command(["worker", "stop", "1"])
    assert "INFO Worker 1 stopped" in out
    cluster.wait_for_worker_state(1, "STOPPED")
    assert process.wait(timeout=10) == 0

    out = cluster.command(["worker", "stop", "1"])
    assert "WARN Stopping worker 1 failed; worker is already stopped" in out
    out = cluster.command(["worker", "stop", "2"])
    assert "ERROR Stopping worker 2 failed; worker not found" in out


def test_worker_stop_some(cluster: ClusterEnv) -> None:
    cluster.start_server()
    processes = [cluster.start_worker() for _ in range(3)]
    out = cluster.command(["worker", "stop", "1-4"])
    for worker_id, process in enumerate(processes, start=1):
        cluster.wait_for_worker_state(worker_id, "STOPPED")
        assert process.wait(timeout=10) == 0
    assert "Stopping worker 4 failed" in out
    # Per-ID outcomes come in ascending order.
    lines = [line for line in out.splitlines() if "orker" in line]
    assert [line.split("orker ")[1].split()[0] for line in lines] == ["1", "2", "3", "4"]


def test_worker_stop_all(cluster: ClusterEnv) -> None:
    cluster.start_server()
    processes = [cluster.start_worker() for _ in range(3)]
    cluster.command(["worker", "stop", "all"])
    for process in processes:
        assert process.wait(timeout=10) == 0
    assert cluster.worker_states() == {1: "STOPPED", 2: "STOPPED", 3: "STOPPED"}
    # `all` means the running workers: nothing is left to stop, and nothing fails.
    out = cluster.command(["worker", "stop", "all"])
    assert "failed" not in out


def test_worker_stop_last(cluster: ClusterEnv) -> None:
    cluster.start_server()
    processes = [cluster.start_worker() for _ in range(3)]
    cluster.command(["worker", "stop", "last"])
    assert processes[2].wait(timeout=10) == 0
    cluster.wait_for_worker_state(3, "STOPPED")
    assert cluster.worker_states() == {1: "RUNNING", 2: "RUNNING", 3: "STOPPED"}
    assert processes[0].poll() is None and processes[1].poll() is None


def test_worker_list_only_online(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    second = cluster.start_worker()
    kill_process(second)
    cluster.wait_for_worker_state(2, "CONNECTION LOST")

    table = list_all_workers(cluster)
    assert [row[:2] for row in table] == [["1", "RUNNING"], ["2", "CONNECTION LOST"]]
    table = parse_table(cluster.command(["worker", "list"]))
    assert [row[:2] for row in table] == [["1", "RUNNING"]]


def test_worker_list_resources(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus="10")
    cluster.start_worker(cpus="4x5")
    cluster.start_worker(cpus="[[100, 200, 300], [400, 500, 600]]")
    cluster.start_worker(cpus="[[0, 1], [2], [10, 11, 12]]")

    table = list_all_workers(cluster)
    assert len(table) == 4
    table.check_columns_value(["ID", "State", "Resources"], 0, ["1", "RUNNING", "cpus 10"])
    table.check_columns_value(["ID", "State", "Resources"], 1, ["2", "RUNNING", "cpus 4x5"])
    table.check_columns_value(["ID", "State", "Resources"], 2, ["3", "RUNNING", "cpus 2x3"])
    table.check_columns_value(["ID", "State", "Resources"], 3, ["4", "RUNNING", "cpus 1x1 1x2 1x3"])


def test_worker_list_extra_resources_sorted(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker("--resource", "mem=sum(2048)", "--resource", "gpus=[a,b]", cpus="2")
    table = list_all_workers(cluster)
    table.check_column_value("Resources", 0, "cpus 2; gpus 2; mem 2.00 GiB")
    info = worker_info(cluster, 1)
    info.check_row_value("Resources", "cpus: 2\ngpus: 2\nmem: 2.00 GiB")


def _check_idle_timeout(cluster: ClusterEnv, worker: subprocess.Popen[str]) -> None:
    # The task (submitted before the worker joined, so the worker is never idle before
    # it) runs longer than the idle timeout: it must finish there, not be cut short.
    assert worker.wait(timeout=10) == 0
    cluster.wait_for_worker_state(1, "IDLE TIMEOUT")
    list_all_workers(cluster).check_column_value("State", 0, "IDLE TIMEOUT")
    assert cluster.task_states(1) == {0: "finished"}
    task = cluster.json(["task", "info", "1", "0"])[0]
    ended = cluster.json(["worker", "info", "1"])[0]["ended"]["at"]
    idle = _timestamp(ended) - _timestamp(task["finished_at"])
    assert 0.9 <= idle < 5, f"worker stopped {idle}s after its last task"


def _timestamp(text: str) -> float:
    # RFC3339 with up to nanoseconds; fromisoformat takes at most microseconds.
    head, _, fraction = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    return stamp + (float("0." + fraction) if fraction else 0.0)


def test_idle_timeout_server_cfg(cluster: ClusterEnv) -> None:
    cluster.start_server("--idle-timeout", "1s")
    cluster.command(["submit", "--", "sleep", "1.5"])
    worker = cluster.start_worker("--heartbeat", "500ms")
    worker_info(cluster, 1).check_row_value("Idle timeout", "1s")
    _check_idle_timeout(cluster, worker)


def test_idle_timeout_worker_cfg(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--", "sleep", "1.5"])
    worker = cluster.start_worker("--heartbeat", "500ms", "--idle-timeout", "1s")
    worker_info(cluster, 1).check_row_value("Idle timeout", "1s")
    _check_idle_timeout(cluster, worker)


def test_worker_idle_timeout_vs_time_request(cluster: ClusterEnv) -> None:
    # A task asking for more time than the worker has left can never run there, so
    # it must not keep the worker from idling out.
    cluster.start_server()
    cluster.command(["submit", "--time-request", "1h", "--", "true"])
    start = time.monotonic()
    worker = cluster.start_worker("--idle-timeout", "1s", "--time-limit", "30s")
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - start < 6
    cluster.wait_for_worker_state(1, "IDLE TIMEOUT")
    assert cluster.task_states(1) == {0: "waiting"}


def test_worker_time_limit(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker("--time-limit", "1s 200ms")
    cluster.wait_for_worker_state(1, "TIME LIMIT REACHED")
    assert worker.wait(timeout=10) == 0
    info = worker_info(cluster, 1)
    info.check_row_value("Time Limit", "1s 200ms")
    info.check_row_value("State", "TIME LIMIT REACHED")
    # Stopped workers have no runtime info.
    assert info.get_row_value("Runtime Info") is None


def test_worker_info(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker("--heartbeat", "10s", "--manager", "none", cpus="10")
    table = worker_info(cluster, 1)
    assert [row[0] for row in table] == [
        "Worker",
        "State",
        "Hostname",
        "Started",
        "Data provider",
        "Working directory",
        "Heartbeat",
        "Idle timeout",
        "Overview interval",
        "Resources",
        "Time Limit",
        "Process pid",
        "Group",
        "Manager",
        "Manager Job ID",
        "Last task started",
        "Runtime Info",
    ]
    table.check_row_value("Worker", "1")
    table.check_row_value("State", "RUNNING")
    table.check_row_value("Hostname", "worker1")
    table.check_row_value("Heartbeat", "10s")
    table.check_row_value("Idle timeout", "None")
    table.check_row_value("Resources", "cpus: 10")
    table.check_row_value("Time Limit", "None")
    table.check_row_value("Process pid", str(worker.pid))
    table.check_row_value("Manager", "None")
    table.check_row_value("Manager Job ID", "N/A")
    table.check_row_value("Group", "default")
    table.check_row_value("Last task started", "")
    table.check_row_value("Runtime Info", "assigned tasks: 0")
    table.check_row_value("Working directory", str(cluster.work_dir / "workdir1"))
    started = table.get_row_value("Started")
    assert started is not None and started.startswith('"') and started.endswith('Z"')


def test_worker_info_runtime_and_last_task(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus="2")
    cluster.command(["submit", "--array", "3-4", "--", "sleep", "100"])
    cluster.wait_for_job_state(1, "RUNNING")
    wait_until(
        lambda: (
            worker_info(cluster, 1).get_row_value("Runtime Info")
            == "assigned tasks: 2; running tasks: 2"
        ),
        what="runtime info with two running tasks",
    )
    last = worker_info(cluster, 1).get_row_value("Last task started")
    assert last is not None and last.startswith("1@") and '; Time: "' in last


def test_worker_info_selectors(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.start_worker()
    worker_info(cluster, "last").check_row_value("Worker", "2")
    out = cluster.command(["worker", "info", "all"])
    assert out.count("| Worker ") == 2
    out = cluster.command(["worker", "info", "7"])
    assert "ERROR Worker 7 not found" in out
    assert "| Worker " not in out


def test_worker_group(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker("--group", "test_1", cpus="10")
    worker_info(cluster, 1).check_row_value("Group", "test_1")


def test_worker_address(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    # Without --hostname the worker reports the machine's own name.
    cluster.start_process(
        "plain",
        [
            "--server-dir",
            str(cluster.server_dir),
            "worker",
            "start",
            "--work-dir=plain",
            "--detect-resources=none",
            "--cpus",
            "1",
        ],
    )
    wait_until(lambda: len(cluster.worker_states()) == 2, what="second worker")

    assert cluster.command(["worker", "address", "1"]).strip() == "worker1"
    assert cluster.command(["worker", "address", "2"]).strip() == socket.gethostname()
    out = cluster.command(["worker", "address", "3"], expect_fail=True)
    assert "Worker 3 not found" in out


@pytest.mark.parametrize("policy", ["stop", "finish-running"])
def test_server_lost_no_tasks(cluster: ClusterEnv, policy: str) -> None:
    server = cluster.start_server()
    worker = cluster.start_worker("--on-server-lost", policy)
    kill_process(server)
    assert worker.wait(timeout=10) == 1


def test_server_lost_stop_with_task(cluster: ClusterEnv) -> None:
    server = cluster.start_server()
    worker = cluster.start_worker("--on-server-lost", "stop")
    pids = cluster.work_dir / "pids"
    finished = cluster.work_dir / "finished"
    cluster.command(
        [
            "submit",
            "--array=1-10",
            "--",
            "bash",
            "-c",
            f"echo $$ >> {pids}; sleep 100; touch {finished}",
        ]
    )
    wait_until(lambda: read_pids(pids), what="first task to start")
    kill_process(server)
    assert worker.wait(timeout=10) == 1
    for pid in read_pids(pids):
        wait_until(lambda pid=pid: not pid_alive(pid), what=f"task {pid} to die")
    assert not finished.exists()


def test_server_lost_finish_running_with_task(cluster: ClusterEnv) -> None:
    server = cluster.start_server()
    worker = cluster.start_worker("--on-server-lost", "finish-running")
    cluster.command(
        [
            "submit",
            "--array=1-10",
            "--",
            "bash",
            "-c",
            "touch started-$HQ_TASK_ID; sleep 2; touch finished-$HQ_TASK_ID",
        ]
    )

    def named(prefix: str) -> set[str]:
        return {p.split("-")[1] for p in os.listdir(cluster.work_dir) if p.startswith(prefix)}

    wait_until(lambda: named("started-"), what="first task to start")
    kill_process(server)
    # The running task is let finish; nothing new starts; then the worker exits 1.
    assert worker.poll() is None
    assert worker.wait(timeout=10) == 1
    assert len(named("finished-")) == 1
    assert named("finished-") == named("started-")


def test_server_lost_finish_running_explicit_stop(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker("--on-server-lost", "finish-running")
    cluster.command(["submit", "sleep", "3600"])
    cluster.wait_for_job_state(1, "RUNNING")
    cluster.command(["worker", "stop", "1"])
    cluster.wait_for_worker_state(1, "STOPPED")
    assert worker.wait(timeout=10) == 0


def test_stopped_worker_returns_tasks(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--", "sleep", "100"])
    cluster.wait_for_job_state(1, "RUNNING")
    cluster.command(["worker", "stop", "1"])
    cluster.wait_for_worker_state(1, "STOPPED")
    # A stop is no failure: the task waits again, with no crash counted.
    cluster.wait_for_task_state(1, 0, "WAITING")
    cluster.start_worker()
    cluster.wait_for_task_state(1, 0, "RUNNING")


def test_worker_wait(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.start_worker()
    result = cluster.run(["worker", "wait", "2"], timeout=10)
    assert result.returncode == 0
    assert result.stdout == ""


def test_worker_wait_blocks_until_enough(cluster: ClusterEnv) -> None:
    cluster.start_server()
    waiter = cluster.start_process(
        "waiter", ["--server-dir", str(cluster.server_dir), "worker", "wait", "1"]
    )
    assert waiter.poll() is None
    cluster.start_worker()
    assert waiter.wait(timeout=10) == 0
    assert cluster.log_of("waiter") == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cpus", "2", "--resource", "cpus=4"],
            "Parameters --cpus and --resource cpus=... cannot be combined",
        ),
        (
            [],
            "You have to specify --cpus explicitly when opting out of CPU automatic detection",
        ),
        (
            ["--cpus", "sum(4)"],
            "Resource kind `sum` cannot be used with CPUs. CPUs must have identity",
        ),
        (
            ["--cpus", "2", "--min-utilization", "1.5"],
            "Minimal utilization has to be in the interval [0.0, 1.0].",
        ),
    ],
)
def test_worker_start_errors(cluster: ClusterEnv, args: list[str], message: str) -> None:
    cluster.start_server()
    result = cluster.run(
        ["worker", "start", "--detect-resources=none", "--work-dir=w", *args], timeout=10
    )
    assert result.returncode == 1
    assert message in result.stdout + result.stderr
    assert cluster.worker_states() == {}


def test_worker_start_prints_info(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus="3")
    tables = cluster.log_of("worker1")
    table = parse_table(tables)
    table.check_row_value("Worker", "1")
    table.check_row_value("Hostname", "worker1")
    table.check_row_value("Resources", "cpus: 3")
    assert table.get_row_value("Runtime Info") is None

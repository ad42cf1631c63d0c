"""Server, workers and jobs end to end: the life cycle of workers and tasks."""

import json
import os
import signal
from pathlib import Path

from tests.harness import ClusterEnv, pid_alive, wait_until


def read_pids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(x) for x in path.read_text().split()]


def test_array_runs_with_placeholders(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    out = cluster.command(
        [
            "submit",
            "--array",
            "1-4",
            "--",
            "bash",
            "-c",
            "echo $HQ_JOB_ID $HQ_TASK_ID $HQ_INSTANCE_ID $HQ_CPUS",
        ]
    )
    assert out.strip() == "Job submitted successfully, job ID: 1"
    cluster.wait_for_job_state(1, "FINISHED")
    for task in range(1, 5):
        text = (cluster.work_dir / "job-1" / f"{task}.stdout").read_text().split()
        assert text[:3] == ["1", str(task), "0"]
        assert text[3] in ("0", "1")


def test_worker_stop_and_states(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker()
    out = cluster.command(["worker", "stop", "1"])
    assert "Worker 1 stopped" in out
    assert worker.wait(timeout=10) == 0
    cluster.wait_for_worker_state(1, "STOPPED")
    out = cluster.command(["worker", "stop", "1"])
    assert "worker is already stopped" in out
    out = cluster.command(["worker", "stop", "7"])
    assert "worker not found" in out


def test_workers_exit_1_when_server_stops(cluster: ClusterEnv) -> None:
    server = cluster.start_server()
    worker = cluster.start_worker()
    assert cluster.stop_server(server) == 0
    assert worker.wait(timeout=10) == 1


def test_cancel_kills_running_tasks(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    pids = cluster.work_dir / "pids"
    # Each task starts a grandchild too; both must die on cancel.
    cluster.command(
        [
            "submit",
            "--array",
            "0-1",
            "--",
            "bash",
            "-c",
            f"sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; wait",
        ]
    )
    wait_until(lambda: len(read_pids(pids)) == 4, what="task pids")
    out = cluster.command(["job", "cancel", "1"])
    assert "Job 1 canceled (2 tasks canceled, 0 tasks already finished)" in out
    for pid in read_pids(pids):
        wait_until(lambda pid=pid: not pid_alive(pid), what=f"pid {pid} to die")
    cluster.wait_for_job_state(1, "CANCELED")


def test_lost_worker_tasks_rescheduled(cluster: ClusterEnv) -> None:
    cluster.start_server()
    first = cluster.start_worker(cpus=1)
    marker = cluster.work_dir / "started"
    cluster.command(
        [
            "submit",
            "--",
            "bash",
            "-c",
            f"echo $HQ_INSTANCE_ID >> {marker}; if [ $HQ_INSTANCE_ID = 0 ]; then sleep 100; fi",
        ]
    )
    wait_until(lambda: marker.exists() and marker.read_text().split() == ["0"], what="first run")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    cluster.wait_for_worker_state(1, "CONNECTION LOST")
    cluster.start_worker(cpus=1)
    cluster.wait_for_job_state(1, "FINISHED")
    assert marker.read_text().split() == ["0", "1"]
    task = json.loads(cluster.command(["task", "info", "1", "0"], json_mode=True))[0]
    assert task["state"] == "finished"


def test_crash_limit(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--crash-limit", "1", "--", "sleep", "100"])
    worker = cluster.start_worker()
    cluster.wait_for_task_state(1, 0, "RUNNING")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    cluster.wait_for_job_state(1, "FAILED")
    out = cluster.command(["task", "list", "1", "-v"])
    assert "Task was running on a worker that was lost; the task has occurred 1 times" in out


def test_max_fails(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "--array", "1-10", "--max-fails", "3", "--", "false"])
    cluster.wait_for_job_state(1, "FAILED")
    stats = json.loads(cluster.command(["job", "list", "--all"], json_mode=True))[0]["task_stats"]
    assert stats["failed"] == 4
    assert stats["aborted"] == 6


def test_failure_messages(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "--", "bash", "-c", "exit 3"])
    cluster.command(["submit", "--", "/nonexistent/program", "--bar"])
    cluster.wait_for_job_state(1, "FAILED")
    cluster.wait_for_job_state(2, "FAILED")
    out = cluster.command(["task", "list", "1", "-v"])
    assert "Program terminated with exit code 3." in out
    out = cluster.command(["task", "list", "2", "-v"])
    assert (
        'Cannot execute "/nonexistent/program --bar": No such file or directory (os error 2)' in out
    )


def test_time_limit(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--time-limit", "500ms", "--", "sleep", "100"])
    cluster.wait_for_job_state(1, "FAILED")
    out = cluster.command(["task", "list", "1", "-v"])
    assert "Time limit reached" in out


def test_idle_timeout_and_worker_time_limit(cluster: ClusterEnv) -> None:
    cluster.start_server("--idle-timeout", "1s")
    idle = cluster.start_worker()
    assert idle.wait(timeout=10) == 0
    cluster.wait_for_worker_state(1, "IDLE TIMEOUT")
    limited = cluster.start_worker("--time-limit", "1s", "--idle-timeout", "1h")
    assert limited.wait(timeout=10) == 0
    cluster.wait_for_worker_state(2, "TIME LIMIT REACHED")


def test_heartbeat_lost(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker("--heartbeat", "200ms")
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        cluster.wait_for_worker_state(1, "HEARTBEAT LOST")
    finally:
        os.killpg(worker.pid, signal.SIGCONT)


def test_priorities_and_compact_placement(cluster: ClusterEnv) -> None:
    cluster.start_server()
    order = cluster.work_dir / "order"
    for priority in (1, 3, 3, 0):
        cluster.command(
            [
                "submit",
                "--priority",
                str(priority),
                "--",
                "bash",
                "-c",
                f"echo $HQ_JOB_ID >> {order}",
            ]
        )
    cluster.start_worker(cpus=1)
    for job in range(1, 5):
        cluster.wait_for_job_state(job, "FINISHED")
    assert order.read_text().split() == ["2", "3", "1", "4"]


def test_tasks_die_with_a_killed_worker(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker()
    pids = cluster.work_dir / "pids"
    cluster.command(
        ["submit", "--", "bash", "-c", f"sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; wait"]
    )
    wait_until(lambda: len(read_pids(pids)) == 2, what="task pids")
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone, not its group
    worker.wait()
    for pid in read_pids(pids):
        wait_until(lambda pid=pid: not pid_alive(pid), what=f"pid {pid} to die")


def test_tasks_die_when_worker_gets_sigterm(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker()
    pids = cluster.work_dir / "pids"
    cluster.command(
        ["submit", "--", "bash", "-c", f"sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; wait"]
    )
    wait_until(lambda: len(read_pids(pids)) == 2, what="task pids")
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    for pid in read_pids(pids):
        wait_until(lambda pid=pid: not pid_alive(pid), what=f"pid {pid} to die")
    cluster.wait_for_worker_state(1, "CONNECTION LOST")


def test_job_info_rows(cluster: ClusterEnv) -> None:
    from tests.tableparse import parse_table

    cluster.start_server()
    cluster.command(["submit", "--array", "1-4,7", "--", "true"])
    table = parse_table(cluster.command(["job", "info", "1"]))
    assert table.get_row_value("Tasks") == "5; Ids: 1-4,7"
    assert table.get_row_value("Submission directory") == str(cluster.work_dir)
    assert table.get_row_value("Session") == "closed"


def test_start_and_end_times_of_short_and_longer_tasks(cluster: ClusterEnv) -> None:
    """Starts of short tasks reach the server with their ends (one report, not two);
    the recorded start is still when the task began, not when the server heard of it."""
    from datetime import datetime

    cluster.start_server()
    cluster.start_worker(cpus=2)
    cluster.command(["submit", "--wait", "--", "true"])
    cluster.command(["submit", "--wait", "--", "sleep", "0.5"])

    def times(job: int) -> tuple[datetime, datetime]:
        (task,) = cluster.json(["task", "info", str(job), "0"])
        parse = datetime.fromisoformat
        return parse(task["started_at"].rstrip("Z")), parse(task["finished_at"].rstrip("Z"))

    start, end = times(1)
    assert start <= end
    start, end = times(2)
    assert 0.45 <= (end - start).total_seconds() < 5

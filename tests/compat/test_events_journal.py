"""Ports of the original's `tests/test_events.py` and `tests/test_journal.py` (journal.md).

Events are read back the way users read them: `hq journal export` of the file, or
`hq journal stream`/`replay` from a live server. Restores are checked through the
ordinary job, task and worker commands. Waiting is always a poll.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ClusterEnv, kill_process, wait_until
from tests.tableparse import parse_table

JOURNAL = "my.journal"


def start_with_journal(cluster: ClusterEnv, *args: str, name: str = "server") -> Any:
    return cluster.start_server("--journal", JOURNAL, *args, name=name)


def restart(cluster: ClusterEnv, server: subprocess.Popen[str], name: str) -> Any:
    assert cluster.stop_server(server) == 0
    return start_with_journal(cluster, name=name)


def read_events(cluster: ClusterEnv, path: str = JOURNAL) -> list[dict[str, Any]]:
    result = cluster.run(["journal", "export", path], timeout=30)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def find_events(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["event"] for e in events if e["event"]["type"] == kind]


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"]["type"] for e in events]


def events_around(cluster: ClusterEnv, body: Callable[[], None]) -> list[dict[str, Any]]:
    """Runs `body` on a journaled server, stops it, and exports what was recorded."""
    server = start_with_journal(cluster)
    body()
    assert cluster.stop_server(server) == 0
    return read_events(cluster)


def job_stats(cluster: ClusterEnv, job_id: int) -> dict[str, int]:
    return dict(cluster.json(["job", "info", str(job_id)])[0]["info"]["task_stats"])


def markers(directory: Path) -> dict[str, str]:
    return {
        path.name: path.read_text()
        for path in sorted(directory.iterdir())
        if path.name.startswith("task-marker")
    }


# --- events -------------------------------------------------------------------------


def test_worker_connected_event(cluster: ClusterEnv) -> None:
    events = events_around(cluster, lambda: cluster.start_worker())
    (connected,) = find_events(events, "worker-connected")
    assert connected["id"] == 1
    assert connected["configuration"]["hostname"] == "worker1"
    assert types_of(events)[0] == "server-start"
    assert types_of(events)[-1] == "server-stop"


def test_worker_lost_event(cluster: ClusterEnv) -> None:
    def body() -> None:
        cluster.start_worker()
        cluster.command(["worker", "stop", "1"])
        cluster.wait_for_worker_state(1, "STOPPED")

    events = events_around(cluster, body)
    (lost,) = find_events(events, "worker-lost")
    assert lost == {"type": "worker-lost", "id": 1, "reason": "Stopped"}


def test_worker_lost_reasons(cluster: ClusterEnv) -> None:
    def body() -> None:
        killed = cluster.start_worker()
        cluster.start_worker("--idle-timeout", "300ms")
        cluster.start_worker("--time-limit", "500ms")
        os.kill(killed.pid, signal.SIGKILL)
        for worker_id, state in (
            (1, "CONNECTION LOST"),
            (2, "IDLE TIMEOUT"),
            (3, "TIME LIMIT REACHED"),
        ):
            cluster.wait_for_worker_state(worker_id, state)

    events = events_around(cluster, body)
    reasons = {e["id"]: e["reason"] for e in find_events(events, "worker-lost")}
    assert reasons == {1: "ConnectionLost", 2: "IdleTimeout", 3: "TimeLimitReached"}


def test_job_and_task_events(cluster: ClusterEnv) -> None:
    def body() -> None:
        cluster.start_worker()
        cluster.command(
            ["submit", "--array", "0-1", "--name", "pair", "--", "bash", "-c", "exit $HQ_TASK_ID"]
        )
        cluster.wait_for_job_state(1, "FAILED")

    events = [e["event"] for e in events_around(cluster, body)]
    job_events = [e for e in events if e.get("job") == 1]
    created = job_events[0]
    assert created["type"] == "job-created"
    assert created["closed_job"] is True
    assert created["job_desc"] == {"name": "pair", "max_fails": None}
    assert created["submit_desc"]["submit_dir"] == str(cluster.work_dir)
    assert job_events[-1] == {"type": "job-completed", "job": 1}
    started = [e for e in job_events if e["type"] == "task-started"]
    assert sorted(started, key=lambda e: e["task"]) == [
        {"type": "task-started", "job": 1, "task": 0, "instance": 0, "worker": 1},
        {"type": "task-started", "job": 1, "task": 1, "instance": 0, "worker": 1},
    ]
    assert {"type": "task-finished", "job": 1, "task": 0} in job_events
    (failed,) = [e for e in job_events if e["type"] == "task-failed"]
    assert failed == {
        "type": "task-failed",
        "job": 1,
        "task": 1,
        "error": "Program terminated with exit code 1.",
    }
    for task in (0, 1):
        kinds = [e["type"] for e in job_events if e.get("task") == task]
        assert kinds[0] == "task-started" and len(kinds) == 2


def test_cancel_and_open_job_events(cluster: ClusterEnv) -> None:
    def body() -> None:
        cluster.command(["submit", "--array", "0-2", "--", "true"])
        cluster.command(["job", "cancel", "1"])
        cluster.command(["job", "open", "--name", "session", "--max-fails", "2"])
        cluster.command(["submit", "--job", "2", "--", "true"])
        cluster.command(["job", "cancel", "2", "--reason", "enough"])
        cluster.command(["job", "close", "2"])

    events = [e["event"] for e in events_around(cluster, body)]
    body_events = [e for e in events if e["type"] not in ("server-start", "server-stop")]
    assert [e["type"] for e in body_events] == [
        "job-created",
        "job-cancel",
        "task-canceled",
        "job-completed",
        "job-open",
        "job-created",
        "job-cancel",
        "task-canceled",
        "job-close",
        "job-completed",
    ]
    assert body_events[1] == {"type": "job-cancel", "job_id": 1, "reason": ""}
    assert body_events[2]["tasks"] == [{"job_id": 1, "job_task_id": t} for t in range(3)]
    assert body_events[4] == {"type": "job-open", "job_id": 2, "name": "session", "max_fails": 2}
    assert body_events[5]["closed_job"] is False and body_events[5]["job"] == 2
    assert body_events[6] == {"type": "job-cancel", "job_id": 2, "reason": "enough"}
    assert body_events[8] == {"type": "job-close", "job_id": 2}


def test_worker_stream_events1(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    cluster.command(["submit", "--", "sleep", "1"])
    stream = cluster.start_process(
        "stream", ["--server-dir", str(cluster.server_dir), "journal", "stream"]
    )

    def lines() -> list[str]:
        return cluster.log_of("stream").splitlines()

    wait_until(lambda: len(lines()) >= 2, what="past events")
    cluster.command(["submit", "--", "uname"])
    wait_until(lambda: len(lines()) >= 3, what="live event")
    assert stream.poll() is None
    assert cluster.stop_server(server) == 0
    assert stream.wait(timeout=10) == 0
    events = [json.loads(line) for line in lines()]
    assert types_of(events) == ["server-start", "job-created", "job-created"]
    assert [e["event"]["job_desc"]["name"] for e in events[1:]] == ["sleep", "uname"]


def test_worker_stream_without_journal_sees_workers(cluster: ClusterEnv) -> None:
    cluster.start_server()
    stream = cluster.start_process(
        "stream", ["--server-dir", str(cluster.server_dir), "journal", "stream"]
    )
    wait_until(lambda: cluster.log_of("stream").strip(), what="server-start")
    cluster.start_worker()
    cluster.command(["worker", "stop", "1"])

    def kinds() -> list[str]:
        return [json.loads(line)["event"]["type"] for line in cluster.log_of("stream").splitlines()]

    wait_until(lambda: "worker-lost" in kinds(), what="worker-lost on the stream")
    assert kinds() == ["server-start", "worker-connected", "worker-lost"]
    os.kill(stream.pid, signal.SIGKILL)
    stream.wait(timeout=10)


def test_replay_with_journal_includes_previous_runs(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    cluster.command(["submit", "--", "true"])
    server = restart(cluster, server, "server2")
    cluster.command(["submit", "--", "true"])
    result = cluster.run(["journal", "replay"], timeout=30)
    assert result.returncode == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert types_of(events) == [
        "server-start",
        "job-created",
        "server-stop",
        "server-start",
        "job-created",
    ]
    # The server identity survives the restart.
    uids = [e["event"]["server_uid"] for e in events if e["event"]["type"] == "server-start"]
    assert uids[0] == uids[1] == cluster.json(["server", "info"])["server_uid"]


def test_worker_replay_without_journal(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--array", "0-1", "--", "bash", "-c", "exit $HQ_TASK_ID"])
    cluster.wait_for_job_state(1, "FAILED")
    cluster.command(["submit", "--", "sleep", "100"])
    cluster.wait_for_job_state(2, "RUNNING")
    cluster.command(["worker", "stop", "1"])
    cluster.wait_for_worker_state(1, "STOPPED")
    result = cluster.run(["journal", "replay"], timeout=30)
    assert result.returncode == 0
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "server-start"
    assert kinds.count("worker-connected") == 1
    assert {"type": "worker-lost", "id": 1, "reason": "Stopped"} in events
    assert [e["job_id"] for e in events if e["type"] == "job-open"] == [1, 2]
    assert [e["job"] for e in events if e["type"] == "job-created"] == [1, 2]
    assert {"type": "task-finished", "job": 1, "task": 0} in events
    assert any(e["type"] == "task-failed" and e["task"] == 1 for e in events)
    assert [e["job"] for e in events if e["type"] == "job-completed"] == [1]
    # Reconstructed events are in time order.
    times = [json.loads(line)["time"] for line in result.stdout.splitlines()]
    assert times == sorted(times)


def test_journal_export_messages(cluster: ClusterEnv) -> None:
    result = cluster.run(["journal", "export", "missing.journal"], timeout=30)
    assert result.returncode == 1
    assert "Cannot open event log file at" in result.stderr + result.stdout
    assert "missing.journal" in result.stderr + result.stdout

    server = start_with_journal(cluster)
    assert cluster.stop_server(server) == 0
    result = cluster.run(["journal", "export", JOURNAL], timeout=30)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 2
    assert "INFO Outputted 2 events" in result.stderr


def test_journal_commands_without_journal(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for command in ("flush", "prune"):
        result = cluster.run(["journal", command], timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""


# --- restore ------------------------------------------------------------------------


def test_restore_fully_finished(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    cluster.start_worker()
    cluster.command(["submit", "--array=0-3", "--", "hostname"])
    cluster.command(["submit", "--", "sleep", "0"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FINISHED")
    server = restart(cluster, server, "server2")
    assert cluster.json(["job", "list", "--all"]) == []

    cluster.start_worker()
    out = cluster.command(["submit", "--", "sleep", "0"])
    assert "job ID: 3" in out
    cluster.wait_for_job_state(3, "FINISHED")
    table = parse_table(cluster.command(["worker", "list"]))
    table.check_columns_value(["ID", "State"], 0, ["3", "RUNNING"])


def test_restore_waiting_task(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    cluster.command(["submit", "--array=0-3", "--", "hostname"])
    cluster.command(["submit", "--", "sleep", "0"])
    restart(cluster, server, "server2")

    table = parse_table(cluster.command(["job", "list"]))
    table.check_columns_value(["ID", "State", "Name"], 0, ["1", "WAITING", "hostname"])
    table.check_columns_value(["ID", "State", "Name"], 1, ["2", "WAITING", "sleep"])
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FINISHED")


def _submit_marker_job(cluster: ClusterEnv, fail: bool) -> None:
    # Tasks 0 and 2 end at once; 1, 3 and 4 wait for a flag so they are running
    # when the server goes down.
    flag = cluster.work_dir / "flag"
    cluster.command(
        [
            "submit",
            "--array=0-4",
            "--",
            "bash",
            "-c",
            f"echo -n $HQ_INSTANCE_ID > {cluster.work_dir}/task-marker$HQ_TASK_ID; "
            f"case $HQ_TASK_ID in 1|3|4) while [ ! -e {flag} ]; do sleep 0.05; done;; esac; "
            + ("exit 1" if fail else "true"),
        ]
    )


def _wait_for_three_running(cluster: ClusterEnv) -> None:
    wait_until(
        lambda: len(markers(cluster.work_dir)) == 5 and job_stats(cluster, 1)["running"] == 3,
        what="three running tasks",
    )


def test_restore_partially_finished_task(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    _submit_marker_job(cluster, fail=False)
    worker = cluster.start_worker(cpus=5)
    _wait_for_three_running(cluster)
    assert set(markers(cluster.work_dir).values()) == {"0"}
    stats = job_stats(cluster, 1)
    assert (stats["running"], stats["finished"]) == (3, 2)
    for name in markers(cluster.work_dir):
        (cluster.work_dir / name).unlink()
    assert cluster.stop_server(server) == 0
    assert worker.wait(timeout=10) == 1

    start_with_journal(cluster, name="server2")
    stats = job_stats(cluster, 1)
    assert (stats["waiting"], stats["finished"], stats["running"]) == (3, 2, 0)
    (cluster.work_dir / "flag").touch()
    cluster.start_worker(cpus=4)
    cluster.wait_for_job_state(1, "FINISHED")
    # Only the interrupted tasks ran again, as their next instance.
    assert markers(cluster.work_dir) == {
        "task-marker1": "1",
        "task-marker3": "1",
        "task-marker4": "1",
    }


def test_restore_partially_failed_task(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    _submit_marker_job(cluster, fail=True)
    cluster.start_worker(cpus=5)
    _wait_for_three_running(cluster)
    stats = job_stats(cluster, 1)
    assert (stats["running"], stats["failed"]) == (3, 2)
    for name in markers(cluster.work_dir):
        (cluster.work_dir / name).unlink()
    restart(cluster, server, "server2")

    stats = job_stats(cluster, 1)
    assert (stats["waiting"], stats["failed"]) == (3, 2)
    task = cluster.json(["task", "info", "1", "0"])[0]
    assert task["state"] == "failed"
    assert task["error"] == "Program terminated with exit code 1."
    (cluster.work_dir / "flag").touch()
    cluster.start_worker(cpus=4)
    cluster.wait_for_job_state(1, "FAILED")
    assert sorted(markers(cluster.work_dir)) == ["task-marker1", "task-marker3", "task-marker4"]


def test_restore_canceled(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    cluster.command(["submit", "--array=0-3", "--", "hostname"])
    cluster.command(["submit", "--", "sleep", "0"])
    cluster.command(["job", "cancel", "all"])
    cluster.wait_for_job_state(1, "CANCELED")
    cluster.wait_for_job_state(2, "CANCELED")
    restart(cluster, server, "server2")
    assert cluster.json(["job", "list", "--all"]) == []


def test_repeated_restore(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    cluster.command(["submit", "--array=0-3", "--", "hostname"])
    server = restart(cluster, server, "server2")
    cluster.command(["submit", "--array=0-3", "--", "hostname"])
    server = restart(cluster, server, "server3")
    jobs = cluster.json(["job", "list"])
    assert [job["id"] for job in jobs] == [1, 2]
    cluster.command(["journal", "flush"])
    assert types_of(read_events(cluster)).count("server-start") == 3


def test_restore_not_fully_written_log(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    cluster.command(["submit", "--array=0-3", "--", "hostname"])
    assert cluster.stop_server(server) == 0
    journal = cluster.work_dir / JOURNAL
    size = journal.stat().st_size
    with open(journal, "r+b") as f:
        f.truncate(size - 1)

    server = start_with_journal(cluster, name="server2")
    wait_until(
        lambda: (
            "Journal contains not fully written data; they will be removed from the log"
            in cluster.log_of("server2")
        ),
        what="the truncation warning",
    )
    assert "WARN" in cluster.log_of("server2")
    cluster.command(["submit", "--array=0-3", "--", "hostname"])
    server = restart(cluster, server, "server3")
    assert [job["id"] for job in cluster.json(["job", "list"])] == [1, 2]


def test_restore_open_job_more_jobs(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    for _ in range(3):
        cluster.command(["job", "open"])
    cluster.command(["job", "close", "2"])
    restart(cluster, server, "server2")

    table = parse_table(cluster.command(["job", "info", "1"]))
    table.check_row_value("Session", "open")
    jobs = {job["id"]: job for job in cluster.json(["job", "list", "--all"])}
    # Job 2 was closed without tasks, so it completed and is not restored.
    assert sorted(jobs) == [1, 3]
    assert jobs[1]["is_open"] and jobs[3]["is_open"]


def test_restore_open_job_more_submits(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    cluster.command(["job", "open"])
    for _ in range(3):
        cluster.command(["job", "submit", "--job=1", "--", "hostname"])
    restart(cluster, server, "server2")

    table = parse_table(cluster.command(["job", "info", "1"]))
    table.check_row_value("Session", "open")
    table.check_row_value("Tasks", "3; Ids: 0-2")
    cluster.start_worker()
    cluster.wait_for_job_state(1, "OPENED")
    assert job_stats(cluster, 1)["finished"] == 3
    out = cluster.command(["job", "submit", "--job=1", "--", "hostname"])
    assert "job ID: 1" in out
    wait_until(lambda: job_stats(cluster, 1)["finished"] == 4, what="fourth task")


# With 1-CPU workers (the original's setup) job 3 (--cpus=2) can never run, so it is
# live and survives the prune; with 2-CPU workers it finishes and is pruned.
@pytest.mark.parametrize(("cpus", "kept_jobs"), [(1, {1, 3}), (2, {1})])
def test_flush_and_prune_journal(cluster: ClusterEnv, cpus: int, kept_jobs: set[int]) -> None:
    journal = cluster.work_dir / JOURNAL

    def collect_ids(events: list[dict[str, Any]]) -> tuple[set[int], set[int]]:
        job_ids: set[int] = set()
        worker_ids: set[int] = set()
        for record in events:
            event = record["event"]
            kind = event["type"]
            if kind in ("task-canceled", "task-aborted"):
                job_ids.update(t["job_id"] for t in event["tasks"])
            elif kind.startswith("task") or kind.startswith("job"):
                job_ids.add(event.get("job_id") or event["job"])
            elif kind.startswith("worker"):
                worker_ids.add(event["id"])
        return job_ids, worker_ids

    start_with_journal(cluster, "--journal-flush-period", "1h")
    cluster.start_worker(cpus=cpus)
    cluster.start_worker(cpus=cpus)
    cluster.command(["job", "open"])
    cluster.command(["job", "submit", "--", "sleep", "0"])
    cluster.command(["job", "submit", "--cpus=2", "--", "sleep", "0"])
    cluster.wait_for_job_state(2, "FINISHED")
    cluster.wait_for_job_state(3, "FINISHED" if cpus == 2 else "WAITING")
    cluster.command(["worker", "stop", "1"])
    cluster.wait_for_worker_state(1, "STOPPED")
    cluster.command(["journal", "flush"])

    size1 = journal.stat().st_size
    assert collect_ids(read_events(cluster)) == ({1, 2, 3}, {1, 2})

    cluster.command(["journal", "prune"])
    size2 = journal.stat().st_size
    assert size1 > size2
    assert collect_ids(read_events(cluster)) == (kept_jobs, {2})


def test_journal_submit_auto_flush(cluster: ClusterEnv) -> None:
    # kill -9, no graceful stop: only what was fsynced before each reply is on disk.
    server = start_with_journal(cluster, "--journal-flush-period", "1h")
    cluster.command(["submit", "--nodes=2", "--", "hostname"])
    cluster.command(["submit", "--array=1-3", "--", "hostname"])
    kill_process(server)
    events = read_events(cluster)
    created = find_events(events, "job-created")
    assert [e["job"] for e in created] == [1, 2]
    assert created[0]["submit_desc"]["task_desc"]["resources"][0]["n_nodes"] == 2


def test_journal_cancel_auto_flush(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster, "--journal-flush-period", "1h")
    cluster.command(["submit", "--", "hostname"])
    cluster.command(["job", "cancel", "1"])
    cluster.command(["job", "open"])
    cluster.command(["job", "close", "2"])
    kill_process(server)
    kinds = types_of(read_events(cluster))
    for kind in ("job-created", "job-cancel", "task-canceled", "job-open", "job-close"):
        assert kind in kinds
    assert kinds.index("job-cancel") < kinds.index("task-canceled")


def test_restore_keeps_ids_and_server_uid(cluster: ClusterEnv) -> None:
    server = start_with_journal(cluster)
    uid = cluster.json(["server", "info"])["server_uid"]
    for _ in range(3):
        cluster.command(["submit", "--", "true"])
    cluster.command(["job", "cancel", "3"])
    restart(cluster, server, "server2")
    assert cluster.json(["server", "info"])["server_uid"] == uid
    assert [job["id"] for job in cluster.json(["job", "list"])] == [1, 2]
    # Job 3 was dropped (completed), but its ID is still taken.
    assert "job ID: 4" in cluster.command(["submit", "--", "true"])
    # No worker ever connected: the next worker ID is 0 + 2 after a restore.
    cluster.start_worker()
    assert cluster.worker_states() == {2: "RUNNING"}


def test_restore_crash_counters(cluster: ClusterEnv) -> None:
    # One crash before the restart and one after reach --crash-limit=2 together.
    server = start_with_journal(cluster)
    first = cluster.start_worker()
    cluster.command(["submit", "--crash-limit=2", "--", "sleep", "60"])
    cluster.wait_for_job_state(1, "RUNNING")
    kill_process(first)
    cluster.wait_for_job_state(1, "WAITING")
    restart(cluster, server, "server2")
    assert cluster.job_states() == {1: "waiting"}
    second = cluster.start_worker()
    cluster.wait_for_job_state(1, "RUNNING")
    assert cluster.worker_states().get(3) == "RUNNING"
    kill_process(second)
    cluster.wait_for_job_state(1, "FAILED")
    (task,) = cluster.json(["task", "info", "1", "0"])
    assert "occurred 2 times" in task["error"], task["error"]


def test_server_crash_does_not_count_as_task_crash(cluster: ClusterEnv) -> None:
    # A task running when the server dies is put back with its instance raised, but
    # the server's own crash is not charged to it: with --crash-limit=1 it still runs.
    server = start_with_journal(cluster)
    worker = cluster.start_worker()
    cluster.command(
        ["submit", "--crash-limit=1", "--", "bash", "-c", "echo $HQ_INSTANCE_ID > inst; sleep 60"]
    )
    # The start is progress, not a request: it reaches the disk within the flush period.
    wait_until(lambda: find_events(read_events(cluster), "task-started"), what="a durable start")
    kill_process(server)
    worker.wait(timeout=30)  # --on-server-lost=stop
    start_with_journal(cluster, name="server2")
    assert cluster.job_states() == {1: "waiting"}
    cluster.start_worker()
    inst = cluster.work_dir / "inst"
    wait_until(
        lambda: inst.exists() and inst.read_text().strip() == "1",
        what="the task to run again as instance 1",
    )
    assert cluster.job_states() == {1: "running"}

"""`hq task notify` and `hq submit --wait --on-notify` end to end (graphs.md §4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from tests.harness import HQ_ARGV, ClusterEnv, kill_process, wait_until


def test_on_notify_round_trip(cluster: ClusterEnv) -> None:
    """test_on_notify: every message runs the callback, per task msg1 before msg2."""
    cluster.start_server()
    cluster.start_worker(cpus=3)
    out = cluster.command(
        [
            "submit",
            "--array=1-3",
            "--wait",
            "--on-notify=bash -c 'echo $HQ_JOB_ID $HQ_TASK_ID $HQ_WORKER_ID $0 >> log'",
            "--",
            "bash",
            "-c",
            "$HQ task notify msg1 && sleep 1 && $HQ task notify msg2",
        ],
        timeout=120,
    )
    assert out.splitlines()[0] == "Job submitted successfully, job ID: 1"
    lines = (cluster.work_dir / "log").read_text().splitlines()
    assert sorted(lines) == sorted(f"1 {t} 1 {m}" for t in (1, 2, 3) for m in ("msg1", "msg2"))
    for task in (1, 2, 3):
        assert lines.index(f"1 {task} 1 msg1") < lines.index(f"1 {task} 1 msg2")
    assert lines[0].endswith("msg1")


def test_notify_reaches_journal_stream_and_callback_errors(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    stream = subprocess.Popen(
        [*HQ_ARGV, "--server-dir", str(cluster.server_dir), "journal", "stream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cluster.env,
    )
    cluster.processes.append(("stream", stream))  # type: ignore[arg-type]
    out = cluster.command(
        ["submit", "--wait", "--on-notify=false", "--", "bash", "-c", "$HQ task notify hi"],
        timeout=60,
    )
    assert "on_notify callback finished with exit code: 1" in out
    out = cluster.command(
        [
            "submit",
            "--wait",
            "--on-notify=/nonexistent/cb",
            "--",
            "bash",
            "-c",
            "$HQ task notify x",
        ],
        timeout=60,
    )
    assert "Failed to run on_notify callback:" in out
    assert stream.stdout is not None
    notifications = []

    def found() -> bool:
        line = stream.stdout.readline()  # type: ignore[union-attr]
        event = json.loads(line)["event"]
        if "message" in event:
            notifications.append(event)
        return len(notifications) == 2

    wait_until(found, timeout=30, what="two notifications in the journal stream")
    assert notifications[0] == {
        "task_id": {"job_id": 1, "job_task_id": 0},
        "worker_id": 1,
        "message": list(b"hi"),
    }
    stream.kill()
    stream.wait()


def test_notify_errors(cluster: ClusterEnv) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HQ_ACCESS_KEY"}
    out = cluster.command(["task", "notify", "x"], expect_fail=True, env=env)
    assert "HQ_ACCESS_KEY variable not found. Are you running this command inside a task?" in out
    out = cluster.command(
        ["task", "notify", "x"], expect_fail=True, env={**env, "HQ_ACCESS_KEY": "nocolon"}
    )
    assert "Value of HQ_ACCESS_KEY has a wrong format" in out
    out = cluster.command(
        ["task", "notify", "y" * 1025], expect_fail=True, env={**env, "HQ_ACCESS_KEY": "/x:t"}
    )
    assert "Notify message limit exceeded, message len: 1025, limit: 1024" in out
    out = cluster.command(
        ["task", "notify", "x"], expect_fail=True, env={**env, "HQ_ACCESS_KEY": "/nope:hq0-x"}
    )
    assert "Traceback" not in out and out.strip()
    # A token that is not (or no longer) valid is refused by a live worker.
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "--wait", "--", "bash", "-c", "echo $HQ_ACCESS_KEY > key"])
    key = (cluster.work_dir / "key").read_text().strip()
    endpoint, _, token = key.rpartition(":")
    assert token.startswith("hq0-") and len(token) == 12 and "/hq-lc-" in endpoint
    out = cluster.command(
        ["task", "notify", "late"], expect_fail=True, env={**env, "HQ_ACCESS_KEY": key}
    )
    assert "refused" in out or "Cannot deliver" in out


def test_killed_worker_leaves_no_socket_directory(cluster: ClusterEnv) -> None:
    """The notification socket's directory goes away also when the worker is SIGKILLed
    (its guardian removes it), and with a graceful stop."""
    tmp = cluster.work_dir / "tmp"
    tmp.mkdir()
    cluster.env["TMPDIR"] = str(tmp)
    cluster.start_server()

    def socket_dirs() -> list[str]:
        return sorted(p.name for p in tmp.iterdir() if p.name.startswith("hq-lc-"))

    worker = cluster.start_worker(cpus=1)
    cluster.command(["submit", "--wait", "--", "bash", "-c", "echo $HQ_ACCESS_KEY > key"])
    key = (cluster.work_dir / "key").read_text().strip()
    assert key.startswith(str(tmp) + "/hq-lc-")
    assert len(socket_dirs()) == 1
    kill_process(worker, signal.SIGKILL)
    wait_until(lambda: not socket_dirs(), timeout=20, what="the socket directory to go")

    cluster.start_worker(cpus=1)
    wait_until(socket_dirs, what="the second worker's socket directory")
    cluster.command(["worker", "stop", "all"])
    wait_until(lambda: not socket_dirs(), timeout=20, what="the socket directory to go")

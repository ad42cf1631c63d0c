"""The journal end to end: durability of acknowledged requests, restore, commands."""

import json
import os
import signal
import subprocess
import time

from hyperq.common.duration import parse_timestamp
from hyperq.server.journal.format import read_journal
from hyperq.server.model.events import from_record
from tests.harness import HQ_ARGV, ClusterEnv, wait_until


def kill_server(cluster: ClusterEnv, process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def export(cluster: ClusterEnv, path: str = "journal.bin") -> list[dict]:
    out = cluster.run(["journal", "export", path])
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_acknowledged_requests_survive_kill_9(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "journal.bin", "--journal-flush-period", "1h")
    cluster.command(["submit", "--array", "0-9", "--", "sleep", "100"])
    cluster.command(["submit", "--", "sleep", "100"])
    cluster.command(["job", "cancel", "2"])
    cluster.command(["job", "open"])
    kill_server(cluster, server)
    types = [e["event"]["type"] for e in export(cluster)]
    assert types[:1] == ["server-start"]
    assert types.count("job-created") == 2
    assert "job-cancel" in types and "task-canceled" in types and "job-open" in types

    cluster.start_server("--journal", "journal.bin", name="server2")
    jobs = {job["id"]: job for job in cluster.json(["job", "list", "--all"])}
    # Job 2 was canceled, so completed: a restore drops it. IDs are never reused.
    assert sorted(jobs) == [1, 3]
    assert jobs[1]["task_stats"]["waiting"] == 10
    assert jobs[3]["is_open"]
    out = cluster.command(["submit", "--", "true"])
    assert "job ID: 4" in out


def test_restore_half_done_array(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "journal.bin")
    cluster.start_worker(cpus=2)
    flag = cluster.work_dir / "flag"
    cluster.command(
        [
            "submit",
            "--array",
            "0-5",
            "--",
            "bash",
            "-c",
            f"if [ $HQ_TASK_ID -ge 4 ]; then while [ ! -e {flag} ]; do sleep 0.05; done; "
            "fi; if [ $HQ_TASK_ID = 3 ]; then exit 1; fi; echo $HQ_INSTANCE_ID",
        ]
    )
    wait_until(
        lambda: (
            cluster.task_states(1).get(4) == "running"
            and cluster.task_states(1).get(5) == "running"
        ),
        what="tasks 4, 5 running",
    )
    cluster.command(["journal", "flush"])
    kill_server(cluster, server)
    cluster.kill_all()

    cluster.start_server("--journal", "journal.bin", name="server2")
    states = cluster.task_states(1)
    assert states == {
        0: "finished",
        1: "finished",
        2: "finished",
        3: "failed",
        4: "waiting",
        5: "waiting",
    }
    out = cluster.command(["task", "list", "1", "-v"])
    assert "Program terminated with exit code 1." in out
    flag.write_text("")
    cluster.start_worker(cpus=2)
    # One worker before the restart: the next one gets ID 3 (journal.md §2).
    assert list(cluster.worker_states()) == [3]
    cluster.wait_for_job_state(1, "FAILED")
    assert (cluster.work_dir / "job-1" / "4.stdout").read_text().strip() == "1"


def test_torn_tail_and_damage_do_not_stop_the_server(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "journal.bin")
    for _ in range(20):
        cluster.command(["submit", "--", "sleep", "100"])
    cluster.stop_server(server)
    path = cluster.work_dir / "journal.bin"
    data = bytearray(path.read_bytes())
    size = len(data)
    # Zero a block in the middle and cut the last byte off.
    data[size // 2 : size // 2 + 300] = bytes(300)
    path.write_bytes(bytes(data[:-1]))

    cluster.start_server("--journal", "journal.bin", name="server2")
    log = cluster.log_of("server2")
    assert "WARN Journal contains not fully written data; they will be removed from the log" in log
    assert "is damaged at offset" in log
    ids = [job["id"] for job in cluster.json(["job", "list", "--all"])]
    assert 1 in ids and len(ids) < 20
    assert "job ID: 21" in cluster.command(["submit", "--", "true"])


def test_wrong_header_refused(cluster: ClusterEnv) -> None:
    (cluster.work_dir / "journal.bin").write_bytes(b"not a journal at all")
    process = cluster.start_process(
        "server",
        [
            *["--server-dir", str(cluster.server_dir)],
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--journal",
            "journal.bin",
        ],
    )
    assert process.wait(timeout=10) == 1
    path = cluster.work_dir / "journal.bin"
    problem = "not a hyperq journal (unknown header)"
    assert f"Cannot open event log file at {path}: {problem}" in cluster.log_of("server")
    # Export reads the file directly; it fails the same way, on one line.
    result = cluster.run(["journal", "export", "journal.bin"])
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"Cannot open event log file at journal.bin: {problem}"]


def test_journal_that_cannot_be_created_refused(cluster: ClusterEnv) -> None:
    start = ["server", "start", "--host", "127.0.0.1", "--journal"]
    missing = cluster.work_dir / "no-such-dir" / "journal.bin"
    result = cluster.run([*start, str(missing)], timeout=10)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Cannot create event log file at {missing}: No such file or directory"
    ]
    # An empty path (say, an unset variable in a script) is not "no journal".
    result = cluster.run([*start, ""], timeout=10)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["Cannot create event log file at '': the path is empty"]
    assert not (cluster.server_dir / "hq-current").exists()


def test_export_stream_replay_while_running(cluster: ClusterEnv) -> None:
    cluster.start_server("--journal", "journal.bin")
    cluster.command(["submit", "--name", "first", "--", "true"])
    stream = subprocess.Popen(
        [*HQ_ARGV, "--server-dir", str(cluster.server_dir), "journal", "stream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env,
        cwd=cluster.work_dir,
        start_new_session=True,
    )
    cluster.processes.append(("stream", stream))  # type: ignore[arg-type]
    cluster.command(["submit", "--name", "second", "--", "true"])
    cluster.command(["journal", "flush"])
    names = [
        e["event"]["job_desc"]["name"]
        for e in export(cluster)
        if e["event"]["type"] == "job-created"
    ]
    assert names == ["first", "second"]
    replay = cluster.run(["journal", "replay"]).stdout.splitlines()
    assert json.loads(replay[0])["event"]["type"] == "server-start"
    assert len(replay) == 3
    cluster.command(["submit", "--name", "third", "--", "true"])
    assert stream.stdout is not None
    seen = []
    while len(seen) < 4:
        line = stream.stdout.readline()
        assert line, "stream ended early"
        seen.append(json.loads(line)["event"])
    assert [e["type"] for e in seen] == [
        "server-start",
        "job-created",
        "job-created",
        "job-created",
    ]
    assert seen[3]["job_desc"]["name"] == "third"
    os.killpg(stream.pid, signal.SIGTERM)


def test_prune_while_running(cluster: ClusterEnv) -> None:
    cluster.start_server("--journal", "journal.bin")
    cluster.start_worker(cpus=2)
    for _ in range(10):
        cluster.command(["submit", "--", "true"])
    for job in range(1, 11):
        cluster.wait_for_job_state(job, "FINISHED")
    cluster.command(["submit", "--", "sleep", "100"])
    cluster.command(["journal", "flush"])
    path = cluster.work_dir / "journal.bin"
    before = read_journal(str(path))[1].valid_end
    cluster.command(["journal", "prune"])
    after = read_journal(str(path))[1].valid_end
    assert after < before
    events = export(cluster)
    jobs = {e["event"].get("job") for e in events if e["event"]["type"] == "job-created"}
    assert jobs == {11}
    # The server keeps appending to the pruned journal.
    cluster.command(["submit", "--name", "later", "--", "true"])
    cluster.command(["journal", "flush"])
    names = [
        e["event"]["job_desc"]["name"]
        for e in export(cluster)
        if e["event"]["type"] == "job-created"
    ]
    assert names == ["sleep", "later"]


def test_journal_commands_without_journal(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--", "true"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.command(["journal", "flush"])
    cluster.command(["journal", "prune"])
    types = [
        json.loads(line)["event"]["type"]
        for line in cluster.run(["journal", "replay"]).stdout.splitlines()
    ]
    assert types[0] == "server-start"
    assert "worker-connected" in types and "task-finished" in types
    assert types.index("task-started") < types.index("task-finished") < types.index("job-completed")


def test_replay_of_a_canceled_huge_array(cluster: ClusterEnv) -> None:
    """Canceled together, 700,000 tasks are one event, bigger than a frame (16 MiB):
    it reaches the client in parts, with and without a journal."""
    for journal in (False, True):
        name = "journaled" if journal else "plain"
        cluster.start_server(*(["--journal", "journal.bin"] if journal else []), name=name)
        cluster.command(["submit", "--array", "0-699999", "--", "true"])
        cluster.command(["job", "cancel", "1"])
        out = cluster.run(["journal", "replay"], timeout=120)
        assert out.returncode == 0, out.stderr
        canceled = [
            event["event"]["tasks"]
            for event in map(json.loads, out.stdout.splitlines())
            if event["event"]["type"] == "task-canceled"
        ]
        assert [len(tasks) for tasks in canceled] == [700_000]
        assert canceled[0][-1] == {"job_id": 1, "job_task_id": 699_999}
        cluster.command(["server", "stop"])
        wait_until(lambda: not (cluster.server_dir / "hq-current").exists(), what="the stop")


def test_reconnecting_workers_ride_out_a_server_crash(cluster: ClusterEnv) -> None:
    """Tasks running while the server dies complete exactly once: counted by markers."""
    server = cluster.start_server("--journal", "journal.bin")
    cluster.start_worker("--on-server-lost", "reconnect", cpus=2)
    gate = cluster.work_dir / "gate"
    markers = cluster.work_dir / "markers"
    markers.mkdir()
    # Tasks 0-1 run during the crash and wait for the gate; 2-3 run after it.
    cluster.command(
        [
            "submit",
            "--array",
            "0-3",
            "--",
            "bash",
            "-c",
            f"while [ ! -e {gate} ]; do sleep 0.05; done; "
            f"echo $HQ_INSTANCE_ID >> {markers}/$HQ_TASK_ID",
        ]
    )
    wait_until(
        lambda: (
            cluster.task_states(1).get(0) == "running"
            and cluster.task_states(1).get(1) == "running"
        ),
        what="two tasks running",
    )
    cluster.command(["journal", "flush"])
    kill_server(cluster, server)

    cluster.start_server("--journal", "journal.bin", "--reconnect-grace", "30s", name="server2")
    # The worker comes back with its two tasks, still running, same worker ID.
    wait_until(lambda: cluster.worker_states() == {1: "RUNNING"}, what="worker 1 to reconnect")
    assert cluster.task_states(1) == {0: "running", 1: "running", 2: "waiting", 3: "waiting"}
    gate.write_text("")
    cluster.wait_for_job_state(1, "FINISHED")
    for task in range(4):
        # Each task ran exactly once, and the adopted ones kept their instance.
        assert (markers / str(task)).read_text().split() == ["0"]
    assert "reconnected" in cluster.log_of("server2")


def test_results_queued_during_an_outage_keep_their_times(cluster: ClusterEnv) -> None:
    """A task that ends while the server is down is recorded as ending then, not when
    its `reconnect` worker gets through to the restarted server."""
    server = cluster.start_server("--journal", "journal.bin")
    cluster.start_worker("--on-server-lost", "reconnect", cpus=1)
    gate = cluster.work_dir / "gate"
    done = cluster.work_dir / "done"
    script = f"while [ ! -e {gate} ]; do sleep 0.05; done; touch {done}"
    cluster.command(["submit", "--", "bash", "-c", script])
    cluster.wait_for_task_state(1, 0, "RUNNING")
    cluster.command(["journal", "flush"])
    kill_server(cluster, server)
    gate.write_text("")
    wait_until(done.exists, what="the task to end while the server is down")
    ended = time.time()
    cluster.start_server("--journal", "journal.bin", "--reconnect-grace", "30s", name="server2")
    # The worker can deliver its result only from now on (the server accepts).
    accepting = time.time()
    cluster.wait_for_job_state(1, "FINISHED")
    (task,) = cluster.json(["task", "info", "1", "0"])
    finished = parse_timestamp(task["finished_at"])
    # `ended` was taken once the task's file existed, so at most a poll after its end.
    assert ended - 1.0 < finished < ended + 0.5
    assert finished < accepting


def test_non_reconnecting_tasks_return_to_waiting_at_once(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "journal.bin")
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "--", "sleep", "100"])
    cluster.wait_for_task_state(1, 0, "RUNNING")
    cluster.command(["journal", "flush"])
    kill_server(cluster, server)
    cluster.start_server("--journal", "journal.bin", "--reconnect-grace", "1h", name="server2")
    assert cluster.task_states(1) == {0: "waiting"}


def test_worker_stop_is_durable_before_its_reply(cluster: ClusterEnv) -> None:
    """A `reconnect` worker stopped just before a crash is not waited for after the
    restore: its task is waiting at once. The journal's record of the stop is not an
    event HyperQueue has, so exports leave it out."""
    server = cluster.start_server("--journal", "journal.bin", "--journal-flush-period", "1h")
    cluster.start_worker("--on-server-lost", "reconnect", cpus=1)
    cluster.command(["submit", "--", "sleep", "100"])
    cluster.wait_for_task_state(1, 0, "RUNNING")
    cluster.command(["journal", "flush"])
    cluster.command(["worker", "stop", "1"])
    kill_server(cluster, server)
    records, _ = read_journal(str(cluster.work_dir / "journal.bin"))
    assert "worker-stop-requested" in [from_record(value).kind for _, value in records]
    assert "worker-stop-requested" not in [e["event"]["type"] for e in export(cluster)]

    cluster.start_server("--journal", "journal.bin", "--reconnect-grace", "1h", name="server2")
    assert cluster.task_states(1) == {0: "waiting"}
    assert "reconnecting worker" not in cluster.log_of("server2")


def test_reconnecting_workers_ride_out_a_graceful_restart(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "journal.bin")
    cluster.start_worker("--on-server-lost", "reconnect", cpus=1)
    gate = cluster.work_dir / "gate"
    marker = cluster.work_dir / "marker"
    cluster.command(
        [
            "submit",
            "--",
            "bash",
            "-c",
            f"while [ ! -e {gate} ]; do sleep 0.05; done; echo $HQ_INSTANCE_ID >> {marker}",
        ]
    )
    cluster.wait_for_task_state(1, 0, "RUNNING")
    assert cluster.stop_server(server) == 0
    cluster.start_server("--journal", "journal.bin", name="server2")
    wait_until(lambda: cluster.worker_states() == {1: "RUNNING"}, what="worker 1 to reconnect")
    assert cluster.task_states(1) == {0: "running"}
    gate.write_text("")
    cluster.wait_for_job_state(1, "FINISHED")
    assert marker.read_text().split() == ["0"]

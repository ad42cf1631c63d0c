"""Ports of the original's `tests/test_job_mn.py` (cluster.md §1) onto our harness, plus
checks that the task runs on its root only and that every reserved worker is released.

Nothing sleeps for a fixed time: "still waiting" is asserted after a later probe job of
the same priority has finished, so the scheduler has certainly looked at the MN task.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime
from pathlib import Path

from tests.harness import ClusterEnv, kill_process, wait_until
from tests.tableparse import parse_table

# The task blocks until the test creates this file (in the task's cwd = the test dir).
WAIT_FOR_GO = "while [ ! -f go ]; do sleep 0.05; done"


def task_output(cluster: ClusterEnv, job_id: int, task_id: int = 0) -> Path:
    return cluster.work_dir / f"job-{job_id}" / f"{task_id}.stdout"


def task_workers(cluster: ClusterEnv, job_id: int) -> list[str]:
    table = parse_table(cluster.command(["task", "list", str(job_id)]))
    cells = table.get_column_value("Worker")
    assert cells is not None
    return cells[0].split("\n")


def probe(cluster: ClusterEnv, job_id: int) -> None:
    """Submit a trivial job and wait for it: every pass before it has run."""
    cluster.command(["submit", "--", "true"])
    cluster.wait_for_job_state(job_id, "FINISHED")


def runtime_info(cluster: ClusterEnv, worker_id: int) -> str | None:
    return parse_table(cluster.command(["worker", "info", str(worker_id)])).get_row_value(
        "Runtime Info"
    )


def test_submit_mn(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for _ in range(2):
        cluster.start_worker()
    script = (
        f"{WAIT_FOR_GO}; echo ${{HQ_NUM_NODES}}; cat ${{HQ_NODE_FILE}}; cat ${{HQ_HOST_FILE}};"
        " echo $HQ_TASK_DIR; echo ${HQ_CPUS-unset}"
    )
    cluster.command(["submit", "--nodes=3", "--", "bash", "-c", script])
    probe(cluster, 2)
    table = parse_table(cluster.command(["job", "info", "1"]))
    table.check_row_value("Resources", "nodes: 3")
    table.check_row_value("State", "WAITING")

    cluster.start_worker()
    cluster.start_worker()
    cluster.wait_for_job_state(1, "RUNNING")
    workers = task_workers(cluster, 1)
    assert len(workers) == 3
    assert set(workers) <= {"worker1", "worker2", "worker3", "worker4"}
    ids = [int(name.removeprefix("worker")) for name in workers]
    assert ids == sorted(ids)
    # The root runs it; the others are held and shown as such; the fourth is free.
    assert runtime_info(cluster, ids[0]) == "running multinode task; main node"
    for worker_id in ids[1:]:
        assert runtime_info(cluster, worker_id) == "running multinode task; secondary node"
    (free,) = {1, 2, 3, 4} - set(ids)
    assert runtime_info(cluster, free) == "assigned tasks: 0"
    # Held workers take no single-node task.
    cluster.command(["submit", "--", "true"])
    cluster.wait_for_job_state(3, "FINISHED")
    assert parse_table(cluster.command(["job", "info", "3"])).get_row_value("Workers") == (
        f"worker{free}"
    )

    (cluster.work_dir / "go").touch()
    cluster.wait_for_job_state(1, "FINISHED")
    lines = task_output(cluster, 1).read_text().split("\n")
    assert lines[0] == "3"
    assert lines[1:4] == workers  # node file: placement order, root first
    assert lines[4:7] == workers  # host file: the same names here (no dots)
    # The task dir was in the root's work dir (workdir<N> of worker N); no CPUs given.
    assert Path(lines[7]).parent.name == f"workdir{ids[0]}"
    assert lines[8] == "unset"
    for worker_id in ids:
        assert runtime_info(cluster, worker_id) == "assigned tasks: 0"
    table = parse_table(cluster.command(["job", "info", "1"]))
    # jobs.md §8: the first two names, then the count.
    assert table.get_row_value("Workers") == f"{workers[0]}, {workers[1]}, … (3 total)"


def test_task_list_and_json_show_every_node(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for _ in range(2):
        cluster.start_worker()
    cluster.command(["submit", "--nodes=2", "--", "bash", "-c", "exit 1"])
    cluster.wait_for_job_state(1, "FAILED")
    assert task_workers(cluster, 1) == ["worker1", "worker2"]
    data = cluster.json(["task", "list", "1"])
    assert data["1"][0]["workers"] == [1, 2]
    (job,) = cluster.json(["job", "info", "1"])
    (request,) = job["submits"][0]["array"]["resources"]
    assert request["n_nodes"] == 2
    assert request["resources"] == [{"resource": "cpus", "request": {"Compact": 10_000}}]
    info = cluster.json(["worker", "info", "1"])
    assert info[0]["last_task_started"]["task_id"] == {"job_id": 1, "job_task_id": 0}
    info = cluster.json(["worker", "info", "2"])
    assert info[0]["last_task_started"]["task_id"] == {"job_id": 1, "job_task_id": 0}


def test_failed_mn_task(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for _ in range(3):
        cluster.start_worker()
    cluster.command(["submit", "--nodes=3", "--", "bash", "-c", "exit 1"])
    cluster.wait_for_job_state(1, "FAILED")
    workers = task_workers(cluster, 1)
    assert len(workers) == 3
    assert set(workers) <= {"worker1", "worker2", "worker3"}


def test_cancel_mn_task_running(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for _ in range(3):
        cluster.start_worker()
    pid_file = cluster.work_dir / "pid"
    cluster.command(["submit", "--nodes=3", "--", "bash", "-c", f"echo $$ > {pid_file}; sleep 10"])
    cluster.wait_for_job_state(1, "RUNNING")
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="task pid")
    cluster.command(["job", "cancel", "1"])
    cluster.wait_for_job_state(1, "CANCELED")
    for worker_id in (1, 2, 3):
        wait_until(
            lambda w=worker_id: runtime_info(cluster, w) == "assigned tasks: 0",  # type: ignore[misc]
            what=f"worker {worker_id} released",
        )
    cluster.command(["submit", "--nodes=3", "--", "bash", "-c", "exit 0"])
    cluster.wait_for_job_state(2, "FINISHED")


def test_cancel_mn_task_waiting(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--nodes=2", "--", "bash", "-c", "sleep 10"])
    cluster.wait_for_job_state(1, "WAITING")
    cluster.command(["job", "cancel", "all"])
    cluster.wait_for_job_state(1, "CANCELED")


def _worker_lost(cluster: ClusterEnv, root: bool) -> None:
    cluster.start_server()
    processes = [cluster.start_worker() for _ in range(3)]
    cluster.command(["submit", "--nodes=3", "--", "bash", "-c", f"{WAIT_FOR_GO}"])
    cluster.wait_for_job_state(1, "RUNNING")
    ids = [int(w.removeprefix("worker")) for w in task_workers(cluster, 1)]
    victim = ids[0 if root else 1]
    kill_process(processes[victim - 1], signal.SIGKILL)
    cluster.wait_for_worker_state(victim, "CONNECTION LOST")
    if root:
        cluster.wait_for_job_state(1, "WAITING")
        # Every other node was released.
        for worker_id in set(ids) - {victim}:
            assert runtime_info(cluster, worker_id) == "assigned tasks: 0"
        cluster.start_worker()
        cluster.wait_for_job_state(1, "RUNNING")
        assert victim not in [int(w.removeprefix("worker")) for w in task_workers(cluster, 1)]
    else:
        assert cluster.job_states()[1] == "running"
    (cluster.work_dir / "go").touch()
    cluster.wait_for_job_state(1, "FINISHED")


def test_worker_lost_mn_task_root(cluster: ClusterEnv) -> None:
    _worker_lost(cluster, root=True)


def test_worker_lost_mn_task_secondary(cluster: ClusterEnv) -> None:
    _worker_lost(cluster, root=False)


def test_submit_mn_different_groups(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for group in ("g1", "g1", "g2", "g2"):
        cluster.start_worker(f"--group={group}")
    cluster.command(["submit", "--nodes=3", "--", "uname"])
    probe(cluster, 2)
    parse_table(cluster.command(["job", "info", "1"])).check_row_value("State", "WAITING")
    cluster.start_worker("--group=g2")
    cluster.wait_for_job_state(1, "FINISHED")
    assert task_workers(cluster, 1) == ["worker3", "worker4", "worker5"]


def test_scheduler_unschedulable_mn_blocker(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker("--group=groupA")
    cluster.start_worker("--group=groupB")
    cluster.command(
        ["submit", "--priority=10", "--nodes=2", "--time-request=1h", "--", "sleep", "60"]
    )
    cluster.command(["submit", "--priority=0", "--array=1-5", "--cpus=1", "--", "true"])
    cluster.wait_for_job_state(2, "FINISHED")
    assert cluster.job_states()[1] == "waiting"


def test_submit_mn_time_request(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.start_worker()
    cluster.start_worker("--time-limit=1s")
    cluster.command(["submit", "--nodes=3", "--time-request=2s", "--", "uname"])
    probe(cluster, 2)
    parse_table(cluster.command(["job", "info", "1"])).check_row_value("State", "WAITING")
    cluster.start_worker("--time-limit=3s")
    cluster.wait_for_job_state(1, "FINISHED")
    assert task_workers(cluster, 1) == ["worker1", "worker2", "worker4"]


def test_submit_mn_complex_hostname(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(hostname="cn690.karolina.it4i.cz")
    cluster.start_worker(hostname="cn710.karolina.it4i.cz")
    cluster.start_worker(hostname="10.0.0.7")
    cluster.command(
        ["submit", "--nodes=3", "--", "bash", "-c", "cat ${HQ_NODE_FILE}; cat ${HQ_HOST_FILE}"]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    hosts = task_output(cluster, 1).read_text().split("\n")
    assert hosts[:3] == ["cn690", "cn710", "10.0.0.7"]
    assert hosts[3:] == ["cn690.karolina.it4i.cz", "cn710.karolina.it4i.cz", "10.0.0.7", ""]


def test_reservation_in_mn(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--nodes=3", "--", "bash", "-c", "sleep 2"])
    processes = [cluster.start_worker("--heartbeat=500ms", "--idle-timeout=1s") for _ in range(3)]
    cluster.wait_for_job_state(1, "FINISHED")
    # All of them go once released...
    for process in processes:
        wait_until(lambda p=process: p.poll() is not None, what="worker exit")  # type: ignore[misc]
    states = cluster.worker_states()
    assert [states[w] for w in (1, 2, 3)] == ["IDLE TIMEOUT"] * 3
    # ...but none while the task (longer than the idle timeout) held it.
    (job,) = cluster.json(["job", "info", "1"])
    finished = datetime.fromisoformat(job["finished_at"])
    for worker_id in (1, 2, 3):
        (worker,) = cluster.json(["worker", "info", str(worker_id)])
        assert datetime.fromisoformat(worker["ended"]["at"]) > finished


def test_worker_group_row(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker("--group=test_1")
    cluster.start_worker()
    parse_table(cluster.command(["worker", "info", "1"])).check_row_value("Group", "test_1")
    parse_table(cluster.command(["worker", "info", "2"])).check_row_value("Group", "default")


def test_journal_records_every_node(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "mn.journal")
    for _ in range(2):
        cluster.start_worker()
    cluster.command(["submit", "--nodes=2", "--", "true"])
    cluster.command(["submit", "--nodes=1", "--", "true"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FINISHED")
    assert cluster.stop_server(server) == 0
    result = cluster.run(["journal", "export", "mn.journal"], timeout=30)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    started = [e for e in events if e["type"] == "task-started"]
    assert started[0]["workers"] == [1, 2]
    assert "worker" not in started[0]
    # One node: `worker`, as for any task (journal.md §5).
    assert started[1]["worker"] in (1, 2)
    assert "workers" not in started[1]

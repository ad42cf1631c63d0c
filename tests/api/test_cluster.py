"""LocalCluster: a server and workers as child processes, and their clean-up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hyperq.api import Job, LocalCluster
from hyperq.api.cluster import WorkerConfig
from tests.harness import HqEnv, pid_alive, wait_until
from tests.tableparse import parse_table


def hq_env_of(cluster: LocalCluster, work_dir: Path) -> HqEnv:
    """The CLI pointed at the cluster's server dir, as the original's tests do."""
    env = HqEnv(work_dir)
    env.server_dir = Path(cluster.cluster.server_dir)
    return env


def test_cluster_create_and_stop_twice(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "srv") as cluster:
        server = cluster.cluster.ctx.server
        assert server is not None and server.poll() is None
        assert (tmp_path / "srv" / "hq-current" / "access.json").exists()
    assert server.poll() == 0
    with pytest.raises(RuntimeError, match="Attempting to stop an already stopped server"):
        cluster.stop()
    with pytest.raises(RuntimeError, match="Attempting to add worker to a stopped server"):
        cluster.start_worker()


def test_cluster_default_dir_and_client_without_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with LocalCluster() as cluster:
        assert os.path.basename(cluster.cluster.server_dir).startswith("hq")
        client = cluster.client()
        job = Job()
        job.program("uname")
        assert client.submit(job).id == 1
        states = hq_env_of(cluster, tmp_path).json(["job", "list", "--all"])
        assert [(j["id"], j["task_stats"]["waiting"]) for j in states] == [(1, 1)]


def test_cluster_add_worker_runs_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with LocalCluster(tmp_path / "srv") as cluster:
        cluster.start_worker(WorkerConfig(cores=1))
        client = cluster.client()
        job = Job()
        job.program(["echo", "hello"], stdout="out.txt")
        job.function(lambda: print("from function"), stdout="fn.txt")
        client.wait_for_jobs([client.submit(job)])
        assert Path("out.txt").read_text() == "hello\n"
        assert Path("fn.txt").read_text() == "from function\n"
        workers = cluster.cluster.ctx.workers
    # The workers stop because their server is gone.
    assert all(w.poll() is not None for w in workers)


def test_cluster_worker_cores(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "srv", worker_config=WorkerConfig(cores=4)) as cluster:
        env = hq_env_of(cluster, tmp_path)
        table = parse_table(env.command(["worker", "list"]))
        assert table.get_column_value("ID") == ["1"]
        assert table.get_column_value("State") == ["RUNNING"]
        assert table.get_column_value("Resources") == ["cpus 4"]
        assert table.get_column_value("Hostname") == [socket.gethostname()]


PARENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from hyperq.api import Job, LocalCluster
    from hyperq.api.cluster import WorkerConfig

    cluster = LocalCluster(sys.argv[1], worker_config=WorkerConfig(cores=1))
    client = cluster.client()
    job = Job()
    job.program(["sleep", "300"], stdout=None, stderr=None)
    client.submit(job)
    ctx = cluster.cluster.ctx
    print(" ".join(str(p.pid) for p in [ctx.server, *ctx.workers]), flush=True)
    time.sleep(600)
    """
)


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "srv")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        hq = HqEnv(tmp_path)
        hq.server_dir = tmp_path / "srv"
        # The task runs: there is a grandchild (the `sleep`) to clean up as well.
        wait_until(
            lambda: hq.json(["job", "list"])[0]["task_stats"]["running"] == 1,
            what="the task to start",
        )
        tasks = hq.json(["task", "list", "1"])
        assert tasks["1"][0]["state"] == "running"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: not any(pid_alive(p) for p in pids), what="server and worker to die")
        wait_until(lambda: not _sleepers(tmp_path), what="the task's process to die")
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


def _sleepers(cwd: Path) -> list[int]:
    """PIDs of `sleep 300` processes whose cwd is this test's directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if cmdline[:2] == [b"sleep", b"300"] and os.readlink(entry / "cwd") == str(cwd):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_worker_list_json_shape(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "srv", worker_config=WorkerConfig(cores=2)) as cluster:
        cluster.start_worker(WorkerConfig(cores=1))
        workers = hq_env_of(cluster, tmp_path).json(["worker", "list"])
        assert sorted(w["id"] for w in workers) == [1, 2]
        assert json.dumps(workers)  # plain JSON the CLI can print

"""Ports of the original's `tests/output/test_json.py` and `test_quiet.py` (README §3.3-§3.4).

The JSON shapes are the spec's (worker.md §7, server.md §5, jobs.md §10), which are
newer than the stored test versions; where they disagree, the spec wins. Quiet mode
prints bare ids and states and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

from tests.harness import ClusterEnv, wait_until
from tests.tableparse import parse_table

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


def json_out(cluster: ClusterEnv, args: list[str]) -> Any:
    """stdout of a JSON-mode command: exactly one JSON value, nothing else."""
    result = cluster.run(["--output-mode=json", *args], timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def quiet_out(cluster: ClusterEnv, args: list[str]) -> str:
    result = cluster.run(["--output-mode=quiet", *args], timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def epoch(text: str) -> float:
    assert RFC3339.match(text), text
    head, _, fraction = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    return stamp + (float("0." + fraction) if fraction else 0.0)


# --- JSON ---------------------------------------------------------------------------


def test_print_worker_list(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for _ in range(3):
        cluster.start_worker()
    output = json_out(cluster, ["worker", "list"])
    assert [worker["id"] for worker in output] == [1, 2, 3]
    assert [w["configuration"]["hostname"] for w in output] == ["worker1", "worker2", "worker3"]
    # Lists carry no runtime info.
    assert all(worker["runtime_info"] is None for worker in output)


def test_print_worker_info(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    output = json_out(cluster, ["worker", "info", "1"])
    assert isinstance(output, list) and len(output) == 1
    worker = output[0]
    assert set(worker) >= {
        "id",
        "configuration",
        "allocation",
        "runtime_info",
        "last_task_started",
        "started",
        "ended",
    }
    assert worker["id"] == 1
    assert worker["allocation"] is None
    assert worker["ended"] is None
    assert worker["last_task_started"] is None
    assert worker["runtime_info"] == {
        "SingleNodeTasks": {"assigned_tasks": 0, "running_tasks": 0, "is_reserved": False}
    }
    assert abs(epoch(worker["started"]) - time.time()) < 60
    config = worker["configuration"]
    assert config["heartbeat_interval"] == 8.0
    assert config["hostname"] == "worker1"
    assert config["idle_timeout"] is None
    assert config["time_limit"] is None
    assert config["group"] == "default"
    assert config["on_server_lost"] == "stop"
    assert config["min_utilization"] == 0.0
    assert isinstance(config["listen_address"], str)
    assert config["work_dir"] == str(cluster.work_dir / "workdir1")
    assert config["resources"]["resources"] == [
        {"name": "cpus", "kind": "range", "start": 0, "end": 0}
    ]


def test_print_worker_info_resource_kinds(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker("--resource", "mem=sum(100)", "--resource", "gpus=[a,b]", cpus="2x2")
    items = json_out(cluster, ["worker", "info", "1"])[0]["configuration"]["resources"]["resources"]
    assert items == [
        {"name": "cpus", "kind": "groups", "groups": [["0", "1"], ["2", "3"]]},
        {"name": "gpus", "kind": "list", "values": ["a", "b"]},
        {"name": "mem", "kind": "sum", "size": 100 * 10000},
    ]


def test_print_stopped_worker_and_last_task(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker("--time-limit", "1h", "--idle-timeout", "5m")
    cluster.command(["submit", "--array", "7", "--", "true"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.command(["worker", "stop", "1"])
    assert worker.wait(timeout=10) == 0
    info = json_out(cluster, ["worker", "info", "1"])[0]
    assert info["runtime_info"] is None
    assert epoch(info["ended"]["at"]) >= epoch(info["started"])
    assert info["last_task_started"]["task_id"] == {"job_id": 1, "job_task_id": 7}
    assert epoch(info["last_task_started"]["time"]) >= epoch(info["started"])
    assert info["configuration"]["time_limit"] == 3600.0
    assert info["configuration"]["idle_timeout"] == 300.0


def test_print_server_record(cluster: ClusterEnv) -> None:
    process = cluster.start_server()
    output = json_out(cluster, ["server", "info"])
    assert set(output) == {
        "server_dir",
        "server_uid",
        "worker_host",
        "client_host",
        "client_port",
        "worker_port",
        "pid",
        "start_date",
        "version",
        "journal_path",
    }
    assert output["server_dir"] is None
    assert output["pid"] == process.pid
    assert output["journal_path"] is None
    assert output["client_host"] == output["worker_host"] == "127.0.0.1"
    assert 0 < output["client_port"] < 65536 and 0 < output["worker_port"] < 65536
    assert len(output["server_uid"]) == 6 and output["server_uid"].isalnum()
    assert 0 <= time.time() - epoch(output["start_date"]) < 60
    access = json.loads(cluster.access_path().read_text())
    assert output["client_port"] == access["client"]["port"]
    assert output["server_uid"] == access["server_uid"]


def test_server_start_json_and_quiet(cluster: ClusterEnv) -> None:
    cluster.env["HQ_OUTPUT_MODE"] = "json"
    server = cluster.start_server("--journal", "j.bin")
    wait_until(lambda: "}" in cluster.log_of("server"), what="JSON start output")
    wait_for_log = cluster.log_of("server")
    start = json.loads(wait_for_log[: wait_for_log.index("}") + 1])
    assert start["server_dir"] == str(cluster.server_dir)
    assert start["journal_path"] == "j.bin"
    assert start["pid"] == server.pid
    del cluster.env["HQ_OUTPUT_MODE"]
    cluster.stop_server(server)

    quiet = cluster.start_server("--output-mode", "quiet", name="quiet")
    wait_until(lambda: cluster.log_of("quiet").strip(), what="quiet start output")
    assert cluster.log_of("quiet").splitlines()[0] == str(cluster.server_dir)
    cluster.stop_server(quiet)


def test_print_job_list(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "echo", "tt"])
    cluster.wait_for_job_state(1, "FINISHED")
    output = json_out(cluster, ["job", "list", "--all"])
    assert output == [
        {
            "id": 1,
            "name": "echo",
            "task_count": 1,
            "is_open": False,
            "cancel_reason": None,
            "task_stats": {
                "running": 0,
                "finished": 1,
                "failed": 0,
                "canceled": 0,
                "aborted": 0,
                "waiting": 0,
            },
        }
    ]


def test_print_job_detail(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "echo", "tt"])
    output = json_out(cluster, ["job", "info", "1"])
    assert isinstance(output, list) and len(output) == 1
    detail = output[0]
    assert detail["info"]["id"] == 1
    assert detail["info"]["name"] == "echo"
    assert detail["info"]["task_count"] == 1
    assert detail["max_fails"] is None
    assert detail["finished_at"] is None
    assert abs(epoch(detail["started_at"]) - time.time()) < 60
    assert detail["tasks"] == [{"id": 0, "state": "waiting"}]
    (submit,) = detail["submits"]
    desc = submit["array"]
    assert desc["program"]["args"] == ["echo", "tt"]
    assert desc["program"]["env"] == {}
    assert desc["program"]["cwd"] == str(cluster.work_dir)
    assert desc["program"]["stdout"] == f"{cluster.work_dir}/job-1/%{{TASK_ID}}.stdout"
    assert desc["pin_mode"] is None
    assert desc["priority"] == 0
    assert desc["time_limit"] is None
    assert desc["task_dir"] is False
    (request,) = desc["resources"]
    assert request["resources"] == [{"resource": "cpus", "request": {"Compact": 10000}}]
    assert request["min_time"] == 0.0


def test_print_job_tasks_in_job_detail(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--array=1-4", "echo", "tt"])
    output = json_out(cluster, ["job", "info", "1"])
    assert output[0]["tasks"] == [{"id": i, "state": "waiting"} for i in range(1, 5)]


def test_print_job_tasks(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--array=1-4", "echo", "tt"])
    output = json_out(cluster, ["task", "list", "1"])
    assert output == {"1": [{"id": i, "state": "waiting"} for i in range(1, 5)]}


def test_print_task_placeholders(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--array=1-4", "echo", "tt"])
    cluster.wait_for_job_state(1, "FINISHED")
    tasks = sorted(json_out(cluster, ["job", "info", "1"])[0]["tasks"], key=lambda t: t["id"])
    assert [(t["id"], t["state"]) for t in tasks] == [(i, "finished") for i in range(1, 5)]
    for task in tasks:
        task_id = task["id"]
        assert task["cwd"] == str(cluster.work_dir)
        assert task["stdout"] == str(cluster.work_dir / "job-1" / f"{task_id}.stdout")
        assert task["stderr"] == str(cluster.work_dir / "job-1" / f"{task_id}.stderr")
        assert task["worker"] == 1
        assert epoch(task["started_at"]) <= epoch(task["finished_at"])
        assert "error" not in task


def test_print_failed_task(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--", "bash", "-c", "exit 3"])
    cluster.wait_for_job_state(1, "FAILED")
    (task,) = json_out(cluster, ["task", "list", "1"])["1"]
    assert task["state"] == "failed"
    assert "exit code 3" in task["error"]
    assert "finished_at" in task


def test_print_job_summary(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--", "true"])
    cluster.command(["job", "open"])
    summary = json_out(cluster, ["job", "summary"])
    assert summary["Waiting"] == 1
    assert summary["Opened"] == 1
    assert summary["Running"] == summary["Finished"] == summary["Failed"] == 0


def test_print_hw(cluster: ClusterEnv) -> None:
    output = json_out(cluster, ["worker", "hwdetect"])
    cpus = [item for item in output["resources"] if item["name"] == "cpus"]
    assert len(cpus) == 1
    assert cpus[0]["kind"] in ("range", "list", "groups")


def test_json_error_goes_to_stdout(cluster: ClusterEnv) -> None:
    result = cluster.run(["--output-mode=json", "job", "list"], timeout=30)
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert set(error) == {"error"}
    assert "No running instance of HQ found" in error["error"]


def test_json_empty_output_is_object(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    assert json_out(cluster, ["worker", "wait", "1"]) == {}
    assert json_out(cluster, ["journal", "flush"]) == {}


def test_json_job_cat_refused(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--", "true"])
    result = cluster.run(["--output-mode=json", "job", "cat", "1", "stdout"], timeout=30)
    assert result.returncode == 1
    assert "JSON output mode doesn't support job output" in result.stdout + result.stderr


def test_worker_start_prints_json(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.env["HQ_OUTPUT_MODE"] = "json"
    cluster.start_worker(cpus="2")
    text = cluster.log_of("worker1")
    start = text.index("[")
    decoder = json.JSONDecoder()
    value, _ = decoder.raw_decode(text[start:])
    assert isinstance(value, list) and len(value) == 1
    assert value[0]["id"] == 1
    assert value[0]["runtime_info"] is None
    assert value[0]["configuration"]["hostname"] == "worker1"


def test_output_mode_flag_anywhere_and_env(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    for args in (
        ["worker", "--output-mode=json", "list"],
        ["worker", "list", "--output-mode", "json"],
    ):
        result = cluster.run(args, timeout=30)
        assert result.returncode == 0
        assert json.loads(result.stdout)[0]["id"] == 1
    env = dict(cluster.env, HQ_OUTPUT_MODE="json")
    result = subprocess.run(
        [*_hq(cluster), "worker", "list"], capture_output=True, text=True, env=env, timeout=30
    )
    assert json.loads(result.stdout)[0]["id"] == 1
    # The flag beats the environment.
    result = subprocess.run(
        [*_hq(cluster), "--output-mode=quiet", "worker", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.stdout == "1 RUNNING\n"


def _hq(cluster: ClusterEnv) -> list[str]:
    from tests.harness import HQ_ARGV

    return [*HQ_ARGV, "--server-dir", str(cluster.server_dir)]


# --- quiet --------------------------------------------------------------------------


def test_quiet_worker_list(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for _ in range(3):
        cluster.start_worker()
    cluster.command(["worker", "stop", "2"])
    cluster.wait_for_worker_state(2, "STOPPED")
    assert quiet_out(cluster, ["worker", "list"]).splitlines() == ["1 RUNNING", "3 RUNNING"]
    assert quiet_out(cluster, ["worker", "list", "--all"]).splitlines() == [
        "1 RUNNING",
        "2 STOPPED",
        "3 RUNNING",
    ]


def test_quiet_job_list(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    for _ in range(3):
        cluster.command(["submit", "echo", "tt"])
    for job_id in (1, 2, 3):
        cluster.wait_for_job_state(job_id, "FINISHED")
    out = quiet_out(cluster, ["job", "list", "--all"])
    assert out.splitlines() == [f"{job_id} FINISHED" for job_id in (1, 2, 3)]


def test_quiet_submit_and_open(cluster: ClusterEnv) -> None:
    cluster.start_server()
    assert quiet_out(cluster, ["submit", "echo", "tt"]) == "1\n"
    assert quiet_out(cluster, ["job", "open"]) == "2\n"


def test_quiet_summary_and_silent_commands(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--", "true"])
    cluster.wait_for_job_state(1, "FINISHED")
    summary = quiet_out(cluster, ["job", "summary"]).splitlines()
    assert "FINISHED 1" in summary and "RUNNING 0" in summary
    assert all(len(line.split()) == 2 for line in summary)
    for args in (
        ["server", "info"],
        ["worker", "info", "1"],
        ["job", "info", "1"],
        ["task", "list", "1"],
        ["worker", "wait", "1"],
    ):
        assert quiet_out(cluster, args) == "", args


def test_quiet_job_cat_prints_content(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--", "echo", "hello"])
    cluster.wait_for_job_state(1, "FINISHED")
    assert quiet_out(cluster, ["job", "cat", "1", "stdout"]) == "hello\n"
    assert os.path.exists(cluster.work_dir / "job-1" / "0.stdout")


# --- server tables (test_server.py) --------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_start_table_host_and_ports(cluster: ClusterEnv) -> None:
    client_port, worker_port = _free_port(), _free_port()
    # `--host` only names the server in the access record; it need not resolve.
    server = cluster.start_process(
        "server",
        [
            "--colors",
            "never",
            "--server-dir",
            str(cluster.server_dir),
            "server",
            "start",
            "--host",
            "abcd123",
            "--client-port",
            str(client_port),
            "--worker-port",
            str(worker_port),
        ],
    )
    wait_until(lambda: "Journal path" in cluster.log_of("server"), what="info table")
    table = parse_table(cluster.log_of("server"))
    assert len(table) == 10
    table.check_row_value("Server directory", str(cluster.server_dir))
    table.check_row_value("Client host", "abcd123")
    table.check_row_value("Worker host", "abcd123")
    table.check_row_value("Client port", str(client_port))
    table.check_row_value("Worker port", str(worker_port))
    table.check_row_value("Pid", str(server.pid))
    uid = table.get_row_value("Server UID")
    assert uid is not None and len(uid) == 6 and uid.isalnum()
    access = json.loads(cluster.access_path().read_text())
    assert access["client"] == {
        "host": "abcd123",
        "port": client_port,
        "secret_key": access["client"]["secret_key"],
    }
    assert access["worker"]["port"] == worker_port
    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=10) == 0

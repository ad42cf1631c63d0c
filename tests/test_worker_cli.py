"""`hq worker …` client commands against a fake session (see test_job_cli.FakeSession)."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest

from hyperq.common.resources import ResourceDescriptorItem
from tests import test_job_cli
from tests.tableparse import parse_multiline_cell, parse_table, parse_tables
from tests.test_job_cli import Hq
from tests.test_output import T0, wire_worker

# The fake-session fixtures are shared with the job command tests.
hq = test_job_cli.hq
server = test_job_cli.server


def workers() -> list[dict[str, Any]]:
    grouped = wire_worker(2)
    grouped["configuration"]["resources"] = {
        "resources": [
            {
                "name": "cpus",
                "kind": "groups",
                "groups": [[str(i + 5 * g) for i in range(5)] for g in range(4)],
            },
            {"name": "mem", "kind": "sum", "size": 1024 * 10_000},
        ],
        "coupling": {"weights": []},
    }
    grouped["allocation"] = {"manager": "Slurm", "id": "4711"}
    return [wire_worker(3, "CONNECTION LOST"), grouped, wire_worker(1)]


def test_worker_list_filters(hq: Hq, server: Any) -> None:
    server({"worker-list": {"workers": workers()}})
    table = parse_table(hq("worker", "list").out)
    assert table.header == ["ID", "State", "Hostname", "Resources", "Manager", "Manager Job ID"]
    assert table.rows == [
        ["1", "RUNNING", "worker1", "cpus 4", "None", "N/A"],
        ["2", "RUNNING", "worker2", "cpus 4x5; mem 1.00 GiB", "SLURM", "4711"],
    ]
    assert parse_table(hq("worker", "list", "--all").out).get_column_value("State") == [
        "RUNNING",
        "RUNNING",
        "CONNECTION LOST",
    ]
    offline = parse_table(hq("worker", "list", "--filter", "offline").out)
    assert offline.get_column_value("ID") == ["3"]
    assert hq("worker", "list", "--filter", "gone").code == 2


def test_worker_list_quiet_and_json(hq: Hq, server: Any) -> None:
    server({"worker-list": {"workers": workers()}})
    assert hq("--output-mode=quiet", "worker", "list", "--all").out == (
        "1 RUNNING\n2 RUNNING\n3 CONNECTION LOST\n"
    )
    data = json.loads(hq("--output-mode=json", "worker", "list").out)
    assert [worker["id"] for worker in data] == [1, 2]
    assert data[0]["runtime_info"] is None
    assert data[1]["allocation"] == {"manager": "Slurm", "id": "4711"}
    assert data[0]["configuration"]["resources"]["resources"] == [
        {"name": "cpus", "kind": "range", "start": 0, "end": 3}
    ]


def test_worker_info_rows(hq: Hq, server: Any) -> None:
    busy = wire_worker(
        1,
        last_task_started={"task_id": {"job_id": 2, "job_task_id": 7}, "time": T0 + 1},
        runtime_info={
            "SingleNodeTasks": {"assigned_tasks": 3, "running_tasks": 2, "is_reserved": True}
        },
    )
    busy["configuration"].update(idle_timeout=90.0, time_limit=1.2)
    busy["overview_interval"] = 2.0
    stopped = wire_worker(2, "STOPPED", pid=None)
    session = server({"worker-info": {"workers": [stopped, busy], "missing": [3]}})
    result = hq("worker", "info", "1-3")
    assert result.code == 0
    assert "ERROR Worker 3 not found" in result.err
    assert session.requests[0] == (
        "worker-info",
        {"selector": {"kind": "ids", "ranges": [[1, 3, 1]]}},
    )
    assert "+\n\n+" in result.out  # a blank line between the tables
    first, second = parse_tables(result.out)
    assert [row[0] for row in first.rows] == [
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
    first.check_row_value("Worker", "1")
    first.check_row_value("State", "RUNNING")
    first.check_row_value("Started", '"2024-05-01T10:00:00Z"')
    first.check_row_value("Data provider", "worker1:0")
    first.check_row_value("Heartbeat", "8s")
    first.check_row_value("Idle timeout", "1m 30s")
    first.check_row_value("Overview interval", "2s")
    second.check_row_value("Overview interval", "None")
    assert parse_multiline_cell(first.get_row_value("Resources")) == {"cpus": "4"}
    first.check_row_value("Time Limit", "1s 200ms")
    first.check_row_value("Process pid", "4242")
    first.check_row_value("Manager", "None")
    first.check_row_value("Manager Job ID", "N/A")
    first.check_row_value("Last task started", '2@7; Time: "2024-05-01T10:00:01Z"')
    first.check_row_value(
        "Runtime Info", "assigned tasks: 3; running tasks: 2; reserved for a multi-node task"
    )
    second.check_row_value("State", "STOPPED")
    second.check_row_value("Process pid", "N/A")
    second.check_row_value("Last task started", "")
    assert second.get_row_value("Runtime Info") is None


def test_worker_info_json(hq: Hq, server: Any) -> None:
    server({"worker-info": {"workers": [wire_worker(1)], "missing": []}})
    data = json.loads(hq("--output-mode=json", "worker", "info", "last").out)
    assert data[0]["id"] == 1
    assert data[0]["runtime_info"] == {
        "SingleNodeTasks": {"assigned_tasks": 0, "running_tasks": 0, "is_reserved": False}
    }
    assert data[0]["configuration"]["heartbeat_interval"] == 8.0


def test_worker_stop_log_lines(hq: Hq, server: Any) -> None:
    server(
        {
            "worker-stop": {
                "results": [
                    {"id": 3, "status": "missing"},
                    {"id": 1, "status": "stopped"},
                    {"id": 2, "status": "already-stopped"},
                ]
            }
        }
    )
    result = hq("worker", "stop", "1-3")
    assert result.code == 0 and result.out == ""
    assert [line.split(" ", 1)[1] for line in result.err.splitlines()] == [
        "INFO Worker 1 stopped",
        "WARN Stopping worker 2 failed; worker is already stopped",
        "ERROR Stopping worker 3 failed; worker not found",
    ]
    assert json.loads(hq("--output-mode=json", "worker", "stop", "all").out) == {}


def test_worker_address(hq: Hq, server: Any) -> None:
    session = server({"worker-info": {"workers": [wire_worker(4)], "missing": []}})
    assert hq("worker", "address", "4").out == "worker4\n"
    assert session.requests[0][1] == {"selector": {"kind": "ids", "ranges": [[4, 4, 1]]}}
    session.replies["worker-info"] = {"workers": [], "missing": [7]}
    missing = hq("worker", "address", "7")
    assert missing.code == 1 and "Worker 7 not found" in missing.err
    assert hq("worker", "address", "x").code == 2


def test_worker_wait_polls_until_enough(
    hq: Hq, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = [
        {"workers": [wire_worker(1, "CONNECTION LOST")]},
        {"workers": [wire_worker(1, "CONNECTION LOST"), wire_worker(2)]},
        {"workers": [wire_worker(2), wire_worker(3)]},
    ]
    session = server({"worker-list": [lambda fields, r=r: r for r in replies]})
    sleeps: list[float] = []
    monkeypatch.setattr("hyperq.cli.worker.time.sleep", sleeps.append)
    result = hq("worker", "wait", "2")
    assert (result.code, result.out) == (0, "")
    assert len(session.requests) == 3 and sleeps == [1.0, 1.0]


def test_hwdetect(hq: Hq, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def detect(what: str, *, no_hyper_threading: bool = False) -> list[ResourceDescriptorItem]:
        seen.append(no_hyper_threading)
        return [
            ResourceDescriptorItem.of_sum("mem", 2048 * 10_000),
            ResourceDescriptorItem.of_groups("cpus", [["0", "1"], ["2", "3"]]),
        ]

    monkeypatch.setattr("hyperq.common.resources.detect_resources", detect)
    result = hq("worker", "hwdetect", "--no-hyper-threading")
    assert result.out == (
        "Summary:\ncpus: 2x2\nmem: 2.00 GiB\n\n"
        "Full Description:\ncpus: [[0,1],[2,3]]\nmem: sum(2048)\n"
    )
    assert seen == [True]
    data = json.loads(hq("--output-mode=json", "worker", "hwdetect").out)
    assert data == {
        "resources": [
            {"name": "cpus", "kind": "groups", "groups": [["0", "1"], ["2", "3"]]},
            {"name": "mem", "kind": "sum", "size": 20_480_000},
        ],
        "coupling": {"weights": []},
    }
    assert hq("--output-mode=quiet", "worker", "hwdetect").out == ""


def test_worker_start_delegates(hq: Hq, monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperq.cli.worker import START_USAGE

    for option in (
        "--cpus",
        "--resource",
        "--detect-resources",
        "--no-hyper-threading",
        "--group",
        "--hostname",
        "--work-dir",
        "--heartbeat",
        "--idle-timeout",
        "--time-limit",
        "--on-server-lost",
        "--manager",
        "--overview-interval",
        "--min-utilization",
        "--retract-check-interval",
        "--coupling",
    ):
        assert f"  {option}" in START_USAGE
    assert "reconnect" in START_USAGE
    calls: list[dict[str, Any]] = []
    fake = types.ModuleType("hyperq.worker.cli")
    fake.start = lambda ctx, args: calls.append(args) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hyperq.worker.cli", fake)
    result = hq(
        "worker",
        "start",
        "--cpus=4",
        "--resource",
        "gpus=[0,1]",
        "--resource",
        "mem=sum(100)",
        "--on-server-lost=finish-running",
        "--detect-resources=none",
        "--hostname",
        "worker1",
    )
    assert result.code == 0
    args = calls[0]
    assert args["--cpus"] == "4" and args["--resource"] == ["gpus=[0,1]", "mem=sum(100)"]
    assert args["--on-server-lost"] == "finish-running"
    assert args["--heartbeat"] == "8s" and args["--manager"] == "detect"
    assert hq("worker", "start", "--bogus").code == 2


def test_deploy_ssh_needs_a_hostfile(hq: Hq) -> None:
    # The rest of deploy-ssh is tested against a real sshd in test_deploy_ssh.py.
    result = hq("worker", "deploy-ssh")
    assert result.code == 2 and "<HOSTFILE>" in result.err

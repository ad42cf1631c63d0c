"""The three renderers on canned wire data: JSON shapes, quiet lines, table helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperq.common.duration import format_timestamp
from hyperq.common.idrange import IdRanges
from hyperq.common.resources import ResourceDescriptor, ResourceDescriptorItem
from hyperq.output.base import Progress, is_job_completed, job_state, task_paths
from hyperq.output.cli import CliOutput, format_ranges, progress_bar, truncate_middle
from hyperq.output.jsonout import job_detail_json, task_json, worker_json
from hyperq.output.modes import make_output
from tests.tableparse import parse_table

T0 = 1_714_557_600.0  # 2024-05-01T10:00:00Z


def wire_task(task_id: int, state: str, **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "id": task_id,
        "state": state,
        "cwd": "/sub",
        "stdout": "/sub/job-1/%{TASK_ID}.stdout",
        "stderr": "/sub/job-1/%{TASK_ID}.stderr",
        "instance": None,
        "started_at": None,
        "finished_at": None,
        "workers": [],
        "error": None,
        "crash_count": 0,
    }
    if state in ("running", "finished", "failed", "canceled"):
        task.update(instance=0, started_at=T0, workers=[1])
    if state in ("finished", "failed", "canceled"):
        task["finished_at"] = T0 + 1.5
    if state == "failed":
        task["error"] = "Program terminated with exit code 1."
    task.update(extra)
    return task


def wire_worker(worker_id: int, state: str = "RUNNING", **extra: Any) -> dict[str, Any]:
    worker: dict[str, Any] = {
        "id": worker_id,
        "configuration": {
            "heartbeat_interval": 8.0,
            "idle_timeout": None,
            "time_limit": None,
            "work_dir": "/work",
            "hostname": f"worker{worker_id}",
            "group": "default",
            "listen_address": f"worker{worker_id}:0",
            "on_server_lost": "stop",
            "min_utilization": 0.0,
            "overview_interval": None,
            "resources": {
                "resources": [{"name": "cpus", "kind": "range", "start": 0, "end": 3}],
                "coupling": {"weights": []},
            },
            "manager": None,
            "manager_job_id": None,
        },
        "allocation": None,
        "runtime_info": {
            "SingleNodeTasks": {"assigned_tasks": 0, "running_tasks": 0, "is_reserved": False}
        },
        "last_task_started": None,
        "started": T0,
        "ended": None if state == "RUNNING" else {"at": T0 + 60},
        "state": state,
        "pid": 4242,
    }
    worker.update(extra)
    return worker


# Table helpers


def test_progress_bar_rounds_up_and_fills() -> None:
    assert progress_bar({}, 0) == "[" + "." * 40 + "]"
    assert progress_bar({"finished": 1}, 3) == "[" + "#" * 14 + "." * 26 + "]"
    assert progress_bar({"finished": 3}, 3) == "[" + "#" * 40 + "]"
    # Rounding up twice never overflows the width.
    assert progress_bar({"canceled": 1, "failed": 1, "finished": 1}, 3) == "[" + "#" * 40 + "]"


def test_progress_bar_colors_only_when_enabled() -> None:
    assert "\x1b" not in progress_bar({"failed": 1}, 2, colors=False)
    assert "\x1b[31m" in progress_bar({"failed": 1}, 2, colors=True)


def test_truncate_middle_matches_original() -> None:
    name = "a" * 45 + "b" * 31
    assert truncate_middle(name, 50) == "a" * 24 + "..." + "b" * 23
    assert truncate_middle("x" * 50, 50) == "x" * 50


@given(st.text(min_size=51, max_size=200))
def test_truncate_middle_length(name: str) -> None:
    out = truncate_middle(name, 50)
    assert len(out) == 50 and out.startswith(name[:24]) and out.endswith(name[-23:])


def test_format_ranges_collapses_steps() -> None:
    assert format_ranges(IdRanges.parse("2,7,9,20-30")) == "2,7,9,20-30"
    assert format_ranges(IdRanges.parse("0-6:2,1")) == "0-2,4,6"
    assert format_ranges(IdRanges()) == ""


# State and path helpers


def test_job_state_rules() -> None:
    assert job_state({"state": "RUNNING"}) == "running"
    assert job_state({"task_stats": {"failed": 1, "waiting": 1}}) == "waiting"
    assert job_state({"task_stats": {"failed": 1, "canceled": 3}}) == "failed"
    assert job_state({"task_stats": {}, "is_open": True}) == "opened"
    assert job_state({"task_stats": {}}) == "finished"
    assert is_job_completed({"task_stats": {"finished": 2}, "is_open": False})
    assert not is_job_completed({"task_stats": {"finished": 2}, "is_open": True})
    assert not is_job_completed({"task_stats": {"running": 1}})


def test_task_paths_stage_two() -> None:
    assert task_paths(wire_task(3, "waiting"), 1) is None
    task = wire_task(3, "finished", instance=2, stdout="out-%{INSTANCE_ID}", stderr=None)
    assert task_paths(task, 1) == ("/sub", "/sub/out-2", None)
    relative = wire_task(
        0,
        "running",
        cwd="%{INSTANCE_ID}-dir",
        stdout="%{CWD}/%{TASK_ID}.out",
        stderr="<pipe>",
        submit_dir="/d",
    )
    assert task_paths(relative, 1) == ("/d/0-dir", "/d/0-dir/0.out", "<pipe>")


# JSON shapes


def test_task_json_fields_per_state() -> None:
    assert task_json(wire_task(0, "waiting"), 1) == {"id": 0, "state": "waiting"}
    assert task_json(wire_task(1, "running"), 1) == {
        "id": 1,
        "state": "running",
        "cwd": "/sub",
        "stdout": "/sub/job-1/1.stdout",
        "stderr": "/sub/job-1/1.stderr",
        "started_at": "2024-05-01T10:00:00Z",
        "worker": 1,
    }
    failed = task_json(wire_task(2, "failed", workers=[1, 2]), 1)
    assert failed["workers"] == [1, 2] and "worker" not in failed
    assert failed["finished_at"] == "2024-05-01T10:00:01.500Z"
    assert failed["error"] == "Program terminated with exit code 1."
    canceled = task_json(wire_task(3, "canceled"), 1)
    assert set(canceled) == {"id", "state", "cwd", "stdout", "stderr"}


def test_job_detail_json_shape() -> None:
    desc = {
        "program": {
            "args": ["echo", "tt"],
            "env": {"A": "1"},
            "cwd": "/sub",
            "stdout": "/sub/job-1/%{TASK_ID}.stdout",
            "stderr": None,
        },
        "resources": [
            {
                "n_nodes": 0,
                "min_time": 0.0,
                "weight": 10000,
                "resources": [{"resource": "cpus", "request": {"Compact": 10000}}],
            }
        ],
        "pin_mode": "omp",
        "priority": 0,
        "time_limit": None,
        "task_dir": False,
        "crash_limit": 5,
    }
    job = {
        "info": {
            "id": 1,
            "name": "echo",
            "task_count": 1,
            "is_open": False,
            "cancel_reason": None,
            "task_stats": {"waiting": 1},
            "state": "waiting",
        },
        "max_fails": None,
        "started_at": T0,
        "finished_at": None,
        "submits": [{"array": desc, "ids": [[0, 0, 1]], "submit_dir": "/sub"}],
        "tasks": [wire_task(0, "waiting")],
        "state": "waiting",
        "workers": [],
        "failed_tasks": [],
        "failed_count": 0,
    }
    out = job_detail_json(job)
    assert set(out) == {"info", "max_fails", "started_at", "finished_at", "submits", "tasks"}
    assert out["info"] == {
        "id": 1,
        "name": "echo",
        "task_count": 1,
        "is_open": False,
        "cancel_reason": None,
        "task_stats": {
            "running": 0,
            "finished": 0,
            "failed": 0,
            "canceled": 0,
            "aborted": 0,
            "waiting": 1,
        },
    }
    assert out["started_at"] == "2024-05-01T10:00:00Z" and out["finished_at"] is None
    assert out["submits"] == [{"array": {**desc, "pin_mode": "openmp"}}]
    assert out["tasks"] == [{"id": 0, "state": "waiting"}]


def test_worker_json_shape() -> None:
    worker = wire_worker(
        1,
        last_task_started={"task_id": {"job_id": 1, "job_task_id": 0}, "time": T0 + 1},
    )
    out = worker_json(worker, runtime=True)
    assert set(out) == {
        "id",
        "configuration",
        "allocation",
        "runtime_info",
        "last_task_started",
        "started",
        "ended",
    }
    assert set(out["configuration"]) == {
        "heartbeat_interval",
        "idle_timeout",
        "time_limit",
        "work_dir",
        "hostname",
        "group",
        "listen_address",
        "on_server_lost",
        "min_utilization",
        "resources",
    }
    assert out["allocation"] is None
    assert out["last_task_started"] == {
        "task_id": {"job_id": 1, "job_task_id": 0},
        "time": "2024-05-01T10:00:01Z",
    }
    assert out["started"] == "2024-05-01T10:00:00Z" and out["ended"] is None
    assert out["runtime_info"]["SingleNodeTasks"]["assigned_tasks"] == 0
    assert worker_json(worker, runtime=False)["runtime_info"] is None
    lost = worker_json(wire_worker(2, "CONNECTION LOST"), runtime=False)
    assert lost["ended"] == {"at": format_timestamp(T0 + 60)}
    slurm = wire_worker(3)
    slurm["configuration"].update(manager="Slurm", manager_job_id="77")
    assert worker_json(slurm, runtime=False)["allocation"] == {"manager": "Slurm", "id": "77"}


def test_json_summary_and_task_ids(capsys: pytest.CaptureFixture[str]) -> None:
    out = make_output("json", False)
    out.job_summary({"running": 1, "finished": 2, "opened": 0})
    assert json.loads(capsys.readouterr().out) == {
        "Running": 1,
        "Waiting": 0,
        "Finished": 2,
        "Failed": 0,
        "Aborted": 0,
        "Canceled": 0,
    }
    out.job_summary({"opened": 3})
    assert json.loads(capsys.readouterr().out)["Opened"] == 3
    out.task_ids({2: IdRanges.parse("1-3"), 1: IdRanges()})
    assert json.loads(capsys.readouterr().out) == {"1": [], "2": [1, 2, 3]}


# Quiet


def test_quiet_lines(capsys: pytest.CaptureFixture[str]) -> None:
    out = make_output("quiet", False)
    out.job_summary({"failed": 2})
    assert capsys.readouterr().out.splitlines() == [
        "RUNNING 0",
        "WAITING 0",
        "FINISHED 0",
        "FAILED 2",
        "ABORTED 0",
        "CANCELED 0",
    ]
    out.worker_list([wire_worker(1), wire_worker(2, "STOPPED")])
    assert capsys.readouterr().out == "1 RUNNING\n2 STOPPED\n"
    out.job_list([{"id": 3, "state": "opened", "is_open": True}], 5, False)
    assert capsys.readouterr().out == "3 OPENED\n"
    out.task_list({1: [wire_task(0, "finished")]}, {}, False)
    out.worker_info([wire_worker(1)])
    out.job_progress(Progress(0, 1, 1, 1, 0, 0, 0, 0), final=False)
    out.nothing()
    assert capsys.readouterr().out == ""


# CLI renderer pieces


def test_cli_progress_line_without_tty(capsys: pytest.CaptureFixture[str]) -> None:
    CliOutput(False).job_progress(Progress(1, 2, 4, 1, 2, 1, 0, 0), final=False)
    line = capsys.readouterr().out
    assert line == (
        "[" + "#" * 10 + "#" * 20 + "#" * 10 + "]" + " 1/2 jobs, 3/4 tasks 1 RUNNING 2 FINISHED"
        " 1 FAILED\n"
    )


def test_cli_hwdetect(capsys: pytest.CaptureFixture[str]) -> None:
    descriptor = ResourceDescriptor(
        (
            ResourceDescriptorItem.of_range("cpus", 0, 3),
            ResourceDescriptorItem.of_groups("gpus", [["a", "b"], ["c"]]),
        )
    )
    CliOutput(False).hwdetect(descriptor)
    assert capsys.readouterr().out == (
        "Summary:\ncpus: 4\ngpus: 1x1 1x2\n\nFull Description:\ncpus: range(0-3)\n"
        "gpus: [[a,b],[c]]\n"
    )


def test_cli_task_list_running_makespan_uses_clock(capsys: pytest.CaptureFixture[str]) -> None:
    out = CliOutput(False, clock=lambda: T0 + 2.25)
    out.task_list({1: [wire_task(0, "running")]}, {1: "worker1"}, False)
    table = parse_table(capsys.readouterr().out)
    assert table.header == ["Task ID", "State", "Worker", "Makespan", "Error"]
    assert table.rows == [["0", "RUNNING", "worker1", "2s 250ms", ""]]

"""`hq dashboard` (cluster.md §7): the pure event model, the Textual UI driven headless by
its pilot over prepared events, and one end-to-end run in tmux against a real server."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperq.common.resources import ResourceDescriptor, ResourceDescriptorItem
from hyperq.dashboard.data import DashboardData, TimeWindow, bar, sparkline
from hyperq.server.model.events import (
    Event,
    JobCompleted,
    JobCreated,
    ServerStart,
    TaskFailed,
    TaskFinished,
    TaskStarted,
    WorkerConnected,
    WorkerLost,
    WorkerOverview,
    to_export_json,
)
from tests.harness import HQ_ARGV, ClusterEnv, wait_until
from tests.test_model import submit_desc

pytest.importorskip("textual", reason="Textual (the dashboard extra) is not installed")

T0 = 1_714_557_600.0  # 2024-05-01T10:00:00Z
NOW = T0 + 100


def worker_config(hostname: str, cpus: int) -> dict[str, Any]:
    descriptor = ResourceDescriptor((ResourceDescriptorItem.of_range("cpus", 0, cpus - 1),))
    return {
        "hostname": hostname,
        "work_dir": f"/work/{hostname}",
        "listen_address": f"{hostname}:0",
        "heartbeat_interval": 8.0,
        "overview_interval": 2.0,
        "idle_timeout": None,
        "time_limit": 3600.0,
        "resources": descriptor.to_json(),
    }


def overview(t: float, worker: int, cpu: list[float], free: int) -> WorkerOverview:
    return WorkerOverview(
        t,
        worker,
        {
            "timestamp": int(t),
            "cpu_usage": {"cpu_per_core_percent_usage": cpu},
            "memory_usage": {"total": 1000 << 20, "free": free << 20},
            "network_usage": {},
            "nvidia_gpus": None,
            "amd_gpus": None,
        },
    )


EVENTS: list[Event] = [
    ServerStart(T0, "uid"),
    WorkerConnected(T0 + 1, 1, worker_config("alpha", 2)),
    WorkerConnected(T0 + 2, 2, worker_config("beta", 2)),
    JobCreated(T0 + 5, 1, True, {"name": "sim", "max_fails": None}, submit_desc([[0, 2, 1]])),
    TaskStarted(T0 + 10, 1, 0, 0, (1,)),
    TaskStarted(T0 + 10, 1, 1, 0, (2,)),
    TaskStarted(T0 + 11, 1, 2, 0, (1,)),
    overview(T0 + 20, 1, [90.0, 80.0, 5.0], 200),  # the node has a 3rd CPU hq does not manage
    overview(T0 + 20, 2, [10.0, 20.0], 900),
    TaskFinished(T0 + 30, 1, 0),
    TaskFailed(T0 + 40, 1, 1, "Program terminated with exit code 1."),
    WorkerLost(T0 + 50, 2, "Stopped"),
    TaskFinished(T0 + 60, 1, 2),
    JobCompleted(T0 + 60, 1),
]
LINES = [to_export_json(e) for e in EVENTS]


def prepared() -> DashboardData:
    data = DashboardData()
    data.add_all(reversed(LINES))  # sorted by time on the way in
    return data


def test_model_as_of() -> None:
    data = prepared()
    assert data.count == len(EVENTS) and data.first == T0 and data.last == T0 + 60
    assert [w.id for w in data.workers_at(T0 + 55)] == [1, 2]
    assert data.workers[2].status_at(T0 + 55) == "offline: stopped"
    assert data.workers[2].status_at(T0 + 20) == "online"
    assert data.task_counts(1, T0 + 35) == {
        "running": 2,
        "finished": 1,
        "failed": 0,
        "canceled": 0,
        "aborted": 0,
    }
    assert data.task_counts(1, T0 + 60)["finished"] == 2
    assert [t.task for t in data.tasks_of(1, T0 + 35)] == [1, 2, 0]  # running first
    assert data.workers[1].overview_at(T0 + 19) is None
    assert data.workers[1].overview_at(T0 + 25).cpu_avg == pytest.approx(58.33, abs=0.01)
    assert data.workers[1].overview_at(T0 + 25).mem_percent == 80.0
    assert data.jobs[1].n_tasks == 3 and data.jobs[1].completed == T0 + 60


def test_window_keys_and_drawing_helpers() -> None:
    window = TimeWindow(NOW, 300, live=False)
    window.earlier()
    assert window.end == NOW - 75
    window.later(now=NOW)
    window.later(now=NOW)
    assert window.end == NOW  # a fixed window never ends in the future
    window.zoom_in()
    window.zoom_in()
    window.zoom_in()
    assert window.length == 60
    window.length = 5 * 24 * 3600
    window.zoom_out()
    assert window.length == 7 * 24 * 3600
    assert sparkline([0, 5, 10]) == " ▄█"
    assert bar(30).startswith("[green]███") and bar(60).startswith("[yellow]")
    assert bar(90).startswith("[red]")


def run_app(scenario: Callable[[Any, Any], Awaitable[None]], data: DashboardData) -> None:
    """Textual runs on asyncio: the pilot scenario gets its own loop."""
    from hyperq.dashboard.app import Dashboard

    async def main() -> None:
        app = Dashboard(data, live=False, clock=lambda: NOW)
        async with app.run_test(size=(160, 48)) as pilot:
            await scenario(app, pilot)

    asyncio.run(main())


def rows(app: Any, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}")
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text(app: Any, widget_id: str) -> str:
    return str(app.query_one(f"#{widget_id}").render())


def test_pilot_jobs_workers_and_detail() -> None:
    async def scenario(app: Any, pilot: Any) -> None:
        header = text(app, "header")
        assert "Jobs" in header and "AutoAllocator" in header and "Workers" in header
        assert "[replay]" in header
        # The replay window: 5 minutes ending at the last event, in local time.
        assert f"{_local(T0 + 60 - 300)} - {_local(T0 + 60)} (5m)" in header
        assert rows(app, "jobs-table") == [["1", "sim"]]
        assert "Job 1" in text(app, "job-detail") and "Tasks: 3" in text(app, "job-detail")
        assert "cpus=1 compact" in text(app, "job-detail")
        assert "finished 2, failed 1" in text(app, "job-chart")
        tasks = rows(app, "tasks-table")
        assert [r[:3] for r in tasks] == [["0", "1", "finished"], ["1", "2", "failed"],
                                          ["2", "1", "finished"]]
        assert tasks[0][5] == "20s"

        await pilot.press("w")
        await pilot.pause()
        workers = rows(app, "workers-table")
        assert [r[:4] for r in workers] == [["1", "alpha", "online", "0"],
                                            ["2", "beta", "offline: stopped", ""]]
        assert "█" in workers[0][4] and "80%" in workers[0][5]

        await pilot.press("i")
        await pilot.pause()
        assert "Worker 1" in text(app, "wd-header")
        cpu_table = app.query_one("#cpu-table")
        assert cpu_table.border_title.startswith("Worker CPUs Utilization (2 CPUs)")
        assert "Mem = 80.0% (800 MiB/1000 MiB)" in cpu_table.border_title
        assert ["Hostname", "alpha"] in rows(app, "wd-config")
        assert ["Overview interval", "2s"] in rows(app, "wd-config")
        await pilot.press("c")  # assigned CPUs: nothing runs at the end of the window
        await pilot.pause()
        assert cpu_table.border_title.startswith("Assigned CPUs Utilization (0 CPUs)")
        await pilot.press("c")  # the node has a CPU the worker does not manage
        await pilot.pause()
        assert cpu_table.border_title.startswith("Node CPUs Utilization (3 CPUs)")
        await pilot.press("backspace")
        await pilot.pause()
        assert app.detail_worker is None and app.query_one("#workers-table").display

        # Back in time: at 10:00:35 two tasks ran, beta was online.
        await pilot.press("k", "k", "k")
        await pilot.press("o")
        await pilot.pause()
        assert app.window.length == 60 and app.window.end == T0 + 45
        workers = rows(app, "workers-table")
        assert [r[2] for r in workers] == ["online", "online"]
        await pilot.press("j")
        await pilot.pause()
        assert [r[2] for r in rows(app, "tasks-table")] == ["running", "finished", "failed"]
        await pilot.press("a")
        await pilot.pause()
        assert "No allocation queues" in text(app, "alloc-timeline")
        await pilot.press("q")

    run_app(scenario, prepared())


def _local(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def test_pilot_warning_popup_closes_on_any_key() -> None:
    from hyperq.dashboard.app import Dashboard, WarningPopup

    async def main() -> None:
        app = Dashboard(prepared(), live=True, warning="rebuilt", clock=lambda: NOW)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, WarningPopup)
            await pilot.press("x")
            await pilot.pause()
            assert not isinstance(app.screen, WarningPopup)
            assert "[stream]" in text(app, "header")

    asyncio.run(main())


# --- end to end in tmux -------------------------------------------------------------------
TMUX = shutil.which("tmux")


class Tmux:
    def __init__(self, socket: Path) -> None:
        assert TMUX is not None
        self.base = [TMUX, "-S", str(socket)]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=20)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "dash").stdout


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if TMUX is None:
        pytest.skip("tmux not installed")
    session = Tmux(tmp_path / "tmux.sock")
    try:
        yield session
    finally:
        session("kill-server")


def test_dashboard_in_tmux(cluster: ClusterEnv, tmux: Tmux) -> None:
    cluster.start_server("--journal", str(cluster.work_dir / "journal.bin"))
    cluster.start_worker("--overview-interval", "200ms", cpus=2, hostname="tmuxnode")
    cluster.command(["submit", "--", "true"])
    wait_until(lambda: cluster.job_states().get(1) == "finished", what="job 1")

    argv = [*HQ_ARGV, "--server-dir", str(cluster.server_dir), "dashboard"]
    env = {k: v for k, v in cluster.env.items() if k.startswith(("PATH", "HQ_", "HOME", "LANG"))}
    command = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = f"env {command} {shlex.join(argv)}; echo DASHBOARD-EXIT=$?; sleep 30"
    result = tmux("new-session", "-d", "-s", "dash", "-x", "160", "-y", "48", command)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: "[stream]" in tmux.screen(), timeout=30, what="the dashboard")
    screen = tmux.screen()
    assert "Jobs" in screen and "Job ID" in screen and "Task ID" in screen

    tmux("send-keys", "-t", "dash", "w")
    wait_until(
        lambda: "tmuxnode" in tmux.screen() and "online" in tmux.screen(),
        timeout=20,
        what="the workers view",
    )
    # Live overviews arrive: the worker's CPU bar shows a percentage.
    wait_until(lambda: "%" in tmux.screen(), timeout=20, what="a utilization bar")
    tmux("send-keys", "-t", "dash", "i")
    wait_until(lambda: "Worker 1" in tmux.screen(), timeout=20, what="the worker detail")
    tmux("send-keys", "-t", "dash", "q")
    wait_until(lambda: "DASHBOARD-EXIT=0" in tmux.screen(), timeout=20, what="a clean exit")


def alloc_line(t: float, kind: str, **fields: Any) -> dict[str, Any]:
    from hyperq.common.duration import format_timestamp

    event = {"type": kind, **{k.replace("_", "-"): v for k, v in fields.items()}}
    return {"time": format_timestamp(t), "event": event}


def test_pilot_autoallocator_and_idle() -> None:
    data = prepared()
    data.add_all(
        [
            alloc_line(T0 + 3, "autoalloc-queue-created", queue_id=1,
                       params={"manager": "slurm", "backlog": 1}),
            alloc_line(T0 + 4, "autoalloc-allocation-queued", queue_id=1,
                       allocation_id="4711", worker_count=2),
            alloc_line(T0 + 8, "autoalloc-allocation-started", queue_id=1, allocation_id="4711"),
            alloc_line(T0 + 9, "autoalloc-allocation-queued", queue_id=1,
                       allocation_id="4712", worker_count=1),
            alloc_line(T0 + 50, "autoalloc-allocation-finished", queue_id=1,
                       allocation_id="4711"),
        ]
    )
    drawn: list[float] = []

    async def scenario(app: Any, pilot: Any) -> None:
        original = app._draw_all

        def counting() -> None:
            drawn.append(1)
            original()

        app._draw_all = counting
        await pilot.pause()
        idle_from = len(drawn)
        await asyncio.sleep(0.5)
        # A replayed, untouched dashboard does not redraw itself.
        assert len(drawn) == idle_from

        await pilot.press("a")
        await pilot.pause()
        assert rows(app, "queues-table") == [["1", "2", _local(T0 + 3), ""]]
        assert [r[:3] for r in rows(app, "allocations-table")] == [
            ["4711", "finished", "2"],
            ["4712", "queued", "1"],
        ]
        assert "manager: slurm" in text(app, "queue-params")
        timeline = text(app, "alloc-timeline")
        assert "Allocations of queue 1" in timeline and "4711" in timeline

    run_app(scenario, data)


def test_big_array_shows_a_bounded_task_table() -> None:
    from hyperq.common.duration import format_timestamp

    def line(t: float, **event: Any) -> dict[str, Any]:
        return {"time": format_timestamp(t), "event": event}

    data = prepared()
    n = 700
    ids = {"ranges": [{"start": 0, "count": n, "step": 1}]}
    lines = [
        line(T0 + 61, type="job-created", job=2, closed_job=True,
             job_desc={"name": "big", "max_fails": None}, submit_desc={"task_desc": {"ids": ids}})
    ]
    for task in range(n):
        lines.append(line(T0 + 62, type="task-started", job=2, task=task, instance=0, worker=1))
        if task % 2:
            lines.append(line(T0 + 63, type="task-finished", job=2, task=task))
    data.add_all(lines)
    assert data.task_count_series(2, [T0 + 61, T0 + 62, T0 + 64]) == {
        "running": [0, n, n // 2],
        "finished": [0, 0, n // 2],
        "failed": [0, 0, 0],
        "canceled": [0, 0, 0],
        "aborted": [0, 0, 0],
    }

    async def scenario(app: Any, pilot: Any) -> None:
        await pilot.press("down")  # job 2
        await pilot.pause()
        table = app.query_one("#tasks-table")
        assert table.row_count == 500 and table.border_title == f"Tasks (first 500 of {n})"
        states = [r[2] for r in rows(app, "tasks-table")]
        assert states == ["running"] * (n // 2) + ["finished"] * (500 - n // 2)

    run_app(scenario, data)


def test_pilot_assigned_cpus_come_from_the_overview() -> None:
    data = DashboardData()
    lines = [to_export_json(e) for e in EVENTS]
    # Worker 1 at 10:00:35: task 1@2 holds CPU 1 (the dashboard's stream carries this
    # beside the overview event).
    extra = to_export_json(overview(T0 + 35, 1, [3.0, 95.0, 40.0], 500))
    extra["running_cpus"] = [[1, 2, ["1"]]]
    data.add_all([*lines, extra])
    assert data.workers[1].overview_at(T0 + 36).assigned == {1}

    async def scenario(app: Any, pilot: Any) -> None:
        app.window.end = T0 + 36
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("i")
        await pilot.press("c")
        await pilot.pause()
        table = app.query_one("#cpu-table")
        assert table.border_title.startswith("Assigned CPUs Utilization (1 CPUs)")
        assert rows(app, "cpu-table") == [["CPU 1", "[red] 95.0%[/]"]]
        await pilot.press("c")  # all node CPUs: assigned in load colour, idle, unmanaged
        await pilot.pause()
        assert [r[1] for r in rows(app, "cpu-table")] == [
            "[#87cefa]  3.0%[/]",
            "[red] 95.0%[/]",
            "[magenta] 40.0%[/]",
        ]

    run_app(scenario, data)

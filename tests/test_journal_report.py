"""`hq journal report` (cluster.md §6): the numbers from prepared events, the page from a
real run's journal, and the page rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from hyperq.common.errors import HqError
from hyperq.common.resources import (
    ResourceDescriptor,
    ResourceDescriptorItem,
    parse_task_request,
)
from hyperq.report.data import Window, build_report
from hyperq.report.render import render_html
from hyperq.server.model.events import (
    Event,
    JobCreated,
    ServerStart,
    ServerStop,
    TaskCanceled,
    TaskFailed,
    TaskFinished,
    TaskStarted,
    WorkerConnected,
    WorkerLost,
)
from tests.harness import HQ_ARGV, ClusterEnv, wait_until
from tests.test_model import submit_desc

T0 = 1_714_557_600.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def worker(worker_id: int, at: float, cpus: int = 4, gpus: int = 0) -> WorkerConnected:
    items = [ResourceDescriptorItem.of_range("cpus", 0, cpus - 1)]
    if gpus:
        items.append(ResourceDescriptorItem.of_range("gpus", 0, gpus - 1))
    descriptor = ResourceDescriptor(tuple(items))
    return WorkerConnected(T0 + at, worker_id, {"hostname": "w", "resources": descriptor.to_json()})


def job(
    job_id: int, at: float, ids: list[list[int]], cpus: str = "1", nodes: int = 0
) -> JobCreated:
    desc = submit_desc(ids, cpus=cpus)
    if nodes:
        desc["resources"] = parse_task_request(None, (), n_nodes=nodes).to_wire()
    return JobCreated(T0 + at, job_id, True, {"name": "j", "max_fails": None}, desc)


EVENTS = [
    ServerStart(T0, "uid"),
    worker(1, 1),
    worker(2, 2),
    worker(3, 2, cpus=2, gpus=1),
    job(1, 3, [[0, 3, 1]], cpus="2"),
    TaskStarted(T0 + 4, 1, 0, 0, (1,)),
    TaskStarted(T0 + 4, 1, 1, 0, (2,)),
    TaskStarted(T0 + 5, 1, 2, 0, (1,)),
    TaskFinished(T0 + 6, 1, 0),
    TaskFailed(T0 + 8, 1, 1, "Program terminated with exit code 1."),
    TaskFinished(T0 + 9, 1, 2),
    job(2, 10, [[0, 0, 1]], nodes=2),
    TaskStarted(T0 + 11, 2, 0, 0, (1, 2)),
    TaskCanceled(T0 + 12, ((2, ((0, 0, 1),)),)),
    WorkerLost(T0 + 13, 2, "Stopped"),
    ServerStop(T0 + 20),
]


def test_worker_series_and_task_statistics() -> None:
    data = build_report(EVENTS)
    series = data.worker_series
    assert list(series) == [
        "Running workers cpus:4",
        "cpus alloc on cpus:4",
        "Running workers cpus:2, gpus:1",
        "cpus alloc on cpus:2, gpus:1",
        "gpus alloc on cpus:2, gpus:1",
    ]
    assert series["Running workers cpus:4"] == [(1, 1), (2, 2), (13, 1), (20, 0)]
    # 2 of 4 CPUs = 0.5 per task; the multi-node task adds 1.0 on each of its workers.
    assert series["cpus alloc on cpus:4"] == [
        (1, 0),
        (4, 1.0),
        (5, 1.5),
        (6, 1.0),
        (8, 0.5),
        (9, 0.0),
        (11, 2.0),
        (12, 0.0),
        (20, 0.0),
    ]
    assert series["gpus alloc on cpus:2, gpus:1"] == [(2, 0), (20, 0)]
    assert data.requests == {"T1": "cpus: 2 compact", "T2": "nodes: 2"}
    assert data.finished == {"T1": [2.0, 4.0]}
    assert data.failed == {"T1": [4.0]}
    assert data.x_range == (0, 20)


def test_time_window_folds_earlier_changes() -> None:
    data = build_report(EVENTS, Window(start=5.5, end=10))
    assert data.x_range == (5.5, 10)
    # Everything before 5.5 s is folded into the value at 5.5 s; nothing after 10 s.
    assert data.worker_series["cpus alloc on cpus:4"] == [
        (5.5, 1.5),
        (6, 1.0),
        (8, 0.5),
        (9, 0.0),
        (10, 0.0),
    ]
    assert data.worker_series["Running workers cpus:4"] == [(5.5, 2), (10, 2)]
    assert data.finished == {"T1": [2.0, 4.0]} and data.failed == {"T1": [4.0]}
    assert Window(5.5, 10).card() == "between 5s 500ms and 10s"
    assert Window(None, 60).card() == "upto 1m"
    assert Window(90, None).card() == "since 1m 30s"
    page = render_html(data)
    assert "Time filtering" in page and "between 5s 500ms and 10s" in page


def test_report_errors() -> None:
    with pytest.raises(HqError, match=r"^Empty journal$"):
        build_report([])
    with pytest.raises(HqError, match=r"^Journal does not start with server start event$"):
        build_report(EVENTS[1:])


def test_page_is_self_contained() -> None:
    page = render_html(build_report(EVENTS))
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>HQ Journal Report</title>" in page
    assert "Server started" in page and "2024-05-01T10:00:00Z" in page
    assert "Time filtering" not in page
    for title in ("Global worker statistics", "Task counts", "Task durations"):
        assert title in page
    # Nothing is fetched: no external scripts, styles or images.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert "T1 = cpus: 2 compact" in page and "T2 = nodes: 2" in page
    assert page.count('class="series"') == 5
    assert page.count('class="bar"') == 4  # finished/failed for T1 and T2
    assert 'data-name="Finished T1"' in page and 'data-name="Failed T1"' in page
    assert 'data-name="Finished T2"' not in page  # empty boxes are omitted


def render_in_chromium(page: Path, screenshot: Path) -> str:
    """The DOM after Chromium loaded the page (and ran its layout check), plus a PNG."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1040,1500", f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dom


def test_journal_report_of_a_real_run(cluster: ClusterEnv) -> None:
    journal = cluster.work_dir / "journal.bin"
    cluster.start_server("--journal", str(journal))
    cluster.start_worker(cpus=4)
    cluster.start_worker(cpus=4)
    cluster.command(["submit", "--array=1-10", "--cpus=2", "--", "true"])
    cluster.command(["submit", "--array=1-2", "--", "false"])
    cluster.command(["submit", "--nodes=2", "--", "hostname"])
    wait_until(
        lambda: all(cluster.job_states()[j] in ("finished", "failed") for j in (1, 2)),
        what="jobs 1 and 2 to end",
    )
    cluster.command(["journal", "flush"])

    out = cluster.work_dir / "report.html"
    result = subprocess.run(
        [*HQ_ARGV, "journal", "report", str(journal), str(out)],
        capture_output=True,
        text=True,
        env=cluster.env,
    )
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Running workers cpus:4" in page and "cpus alloc on cpus:4" in page
    assert "T1 = cpus: 2 compact" in page and "T2 = cpus: 1 compact" in page
    assert 'data-name="Finished T1"' in page and 'data-name="Failed T2"' in page
    assert re.search(r"<title>finished T1: 10</title>", page)
    assert re.search(r"<title>failed T2: 2</title>", page)

    filtered = cluster.work_dir / "filtered.html"
    result = subprocess.run(
        [*HQ_ARGV, "journal", "report", str(journal), str(filtered), "--end-time", "1h"],
        capture_output=True,
        text=True,
        env=cluster.env,
    )
    assert result.returncode == 0, result.stderr
    assert "upto 1h" in filtered.read_text()

    missing = subprocess.run(
        [*HQ_ARGV, "journal", "report", str(cluster.work_dir / "nope"), str(filtered)],
        capture_output=True,
        text=True,
        env=cluster.env,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"Cannot open event log file at {cluster.work_dir / 'nope'}")

    if CHROMIUM is None:
        pytest.skip("chromium not installed: the browser check did not run")
    screenshot = cluster.work_dir / "report.png"
    dom = render_in_chromium(out, screenshot)
    # The page's own check ran in the browser: every chart has marks with a real size.
    assert 'data-charts-drawn="3/3"' in dom
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


@dataclass(frozen=True)
class Queued(Event):
    kind: ClassVar[str] = "autoalloc-allocation-queued"
    queue_id: int
    allocation_id: str
    worker_count: int


@dataclass(frozen=True)
class Started(Event):
    kind: ClassVar[str] = "autoalloc-allocation-started"
    queue_id: int
    allocation_id: str


def test_queued_workers_from_allocation_events() -> None:
    """Allocation events (alloc.md §6) feed `Queued workers`; they are read through their
    export form, so any event class with those fields works."""
    events = [
        ServerStart(T0, "uid"),
        Queued(T0 + 1, 1, "a1", 2),
        Queued(T0 + 2, 1, "a2", 1),
        Started(T0 + 5, 1, "a1"),
        ServerStop(T0 + 9),
    ]
    data = build_report(events)
    assert data.worker_series["Queued workers"] == [(1, 2), (2, 3), (5, 1), (9, 0)]


def test_report_of_an_empty_journal_fails(tmp_path: Path) -> None:
    from hyperq.server.journal.format import create_journal

    journal = tmp_path / "empty.bin"
    create_journal(str(journal))
    result = subprocess.run(
        [*HQ_ARGV, "journal", "report", str(journal), str(tmp_path / "out.html")],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr.strip()) == (1, "Empty journal")
    assert not (tmp_path / "out.html").exists()
    bad = subprocess.run(
        [*HQ_ARGV, "journal", "report", str(journal), "x.html", "--start-time", "soon"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "invalid value 'soon' for '--start-time <DUR>'" in bad.stderr

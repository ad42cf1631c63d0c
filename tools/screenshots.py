"""Make the README's pictures of `hq journal report` and `hq dashboard` from a real run.

A small cluster (the tests' harness: real `hq` processes in a temp dir) runs two jobs
with worker overviews on; its journal becomes the report (rendered by headless Chromium,
as tests/test_journal_report.py does) and is replayed in the dashboard under Textual's
pilot (as tests/test_dashboard.py does), whose SVG screenshot Chromium turns into a PNG.

    .venv/bin/python tools/screenshots.py [OUT_DIR]   (default: docs/images)
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hyperq.dashboard.app import Dashboard  # noqa: E402
from hyperq.dashboard.data import DashboardData  # noqa: E402
from hyperq.dashboard.main import load_journal_events  # noqa: E402
from tests.harness import HQ_ARGV, ClusterEnv, wait_until  # noqa: E402


def chromium_png(source: Path, out: Path, size: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is needed for the screenshots")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size}",
            f"--screenshot={out}",
            source.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def run_cluster(work: Path) -> Path:
    cluster = ClusterEnv(work)
    journal = work / "journal.bin"
    try:
        cluster.start_server("--journal", str(journal))
        for _ in range(2):
            cluster.start_worker("--overview-interval", "500ms", cpus=4)
        cluster.command(["submit", "--name", "simulate", "--array=1-16", "--cpus=2", "--",
                         "bash", "-c", "sleep $((RANDOM % 3 + 1))"])
        cluster.command(["submit", "--name", "check", "--array=1-4", "--", "bash", "-c",
                         "sleep 0.5; exit $((HQ_TASK_ID % 2))"])
        wait_until(
            lambda: all(s in ("finished", "failed") for s in cluster.job_states().values()),
            timeout=120,
            what="the jobs",
        )
        cluster.command(["journal", "flush"])
    finally:
        cluster.kill_all()
    return journal


def dashboard_svg(journal: Path, out: Path) -> None:
    data = DashboardData()
    data.add_all(load_journal_events(str(journal)))

    async def main() -> None:
        app = Dashboard(data, live=False)
        async with app.run_test(size=(150, 44)) as pilot:
            await pilot.press("k", "k", "k")  # a one-minute window: the run is short
            await pilot.pause()
            app.save_screenshot(filename=out.name, path=str(out.parent))

    asyncio.run(main())


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        journal = run_cluster(work)
        report = work / "report.html"
        subprocess.run([*HQ_ARGV, "journal", "report", str(journal), str(report)], check=True)
        chromium_png(report, out_dir / "journal-report.png", "1040,1500")
        svg = work / "dashboard.svg"
        dashboard_svg(journal, svg)
        chromium_png(svg, out_dir / "dashboard.png", "1320,1000")
    print(f"wrote {out_dir / 'journal-report.png'} and {out_dir / 'dashboard.png'}")


if __name__ == "__main__":
    main()

"""`hq dashboard` command line: usage, and the message when Textual is missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tests.harness import HQ_ARGV, HqEnv


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HQ_ARGV, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )


def test_dashboard_without_textual(tmp_path: Path) -> None:
    # A `textual` package that cannot be imported stands for a missing extra.
    shim = tmp_path / "shim" / "textual"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named textual')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shim")}
    result = run(tmp_path, "dashboard", "replay", str(tmp_path / "journal.bin"), env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "`hq dashboard` needs the Textual package: install hyperq with the dashboard extra, "
        "e.g. `pip install 'hyperq[dashboard]'`"
    )


def test_dashboard_usage_and_errors(tmp_path: Path) -> None:
    bad = run(tmp_path, "dashboard", "rewind")
    assert bad.returncode == 2 and "unexpected argument 'rewind' found" in bad.stderr
    missing = run(tmp_path, "dashboard", "replay", str(tmp_path / "nope.bin"))
    assert missing.returncode == 1
    assert missing.stdout == f"Loading journal {tmp_path / 'nope.bin'}\n"
    assert missing.stderr.startswith(f"Cannot open event log file at {tmp_path / 'nope.bin'}")
    help_text = run(tmp_path, "--help").stdout
    assert "dashboard  Terminal dashboard" in help_text


def test_live_marker_says_when_history_was_rebuilt(hq_env: HqEnv) -> None:
    """The dashboard learns where history ends and whether the server has a journal
    (without one it warns that the history was rebuilt)."""
    from hyperq.client.session import connect_to_server
    from hyperq.common.context import Context

    hq_env.start_server()
    hq_env.command(["submit", "--", "true"])
    ctx = Context.from_options(str(hq_env.server_dir), None, "never", False)
    history: list[dict[str, Any]] = []
    with connect_to_server(ctx) as session:
        session.request("journal-stream", follow=True, live_marker=True, overviews=True)
        while True:
            message = session.recv()
            history.extend(message.get("events", ()))
            if "live" in message:
                break
    assert message == {"live": True, "journal": False}
    assert [e["event"]["type"] for e in history][:2] == ["server-start", "job-open"]

"""`hq dashboard` command line: usage, and the message when Textual is missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.harness import HQ_ARGV


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

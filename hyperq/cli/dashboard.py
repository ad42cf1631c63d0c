"""`hq dashboard`: the terminal UI lives in hyperq.dashboard, imported only when run."""

from __future__ import annotations

from typing import Any

from hyperq.common.context import Context

DASHBOARD_USAGE = """Terminal dashboard: live from the server, or replayed from a journal file

Usage:
  hq dashboard [stream]
  hq dashboard replay <JOURNAL>
"""


def dashboard(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.dashboard.main import run

    return run(ctx, args)


COMMANDS = {"dashboard": (DASHBOARD_USAGE, dashboard, False)}

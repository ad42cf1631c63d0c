"""`hq journal …`: a placeholder until the journal exists; every command exits 1 with a note."""

from __future__ import annotations

from typing import Any

from hyperq.cli.context import Context
from hyperq.common.errors import HqError

GROUP_USAGE = """Commands for the event journal

Usage:
  hq journal export <JOURNAL>
  hq journal stream
  hq journal replay
  hq journal prune
  hq journal flush
  hq journal report [<ARGS>...]
"""


def _not_supported(name: str) -> Any:
    def command(ctx: Context, args: dict[str, Any]) -> int:
        raise HqError(f"`hq journal {name}` is not supported by hyperq yet")

    return command


COMMANDS = {
    name: (
        f"Event journal: {name} (not supported by hyperq yet)\n\n"
        f"Usage:\n  hq journal {name} [<ARGS>...]\n",
        _not_supported(name),
        True,
    )
    for name in ("export", "stream", "replay", "prune", "flush", "report")
}

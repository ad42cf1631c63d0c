"""One interface for everything a command prints, with three renderers behind it.

Commands hand plain data to an `Output`; the renderer for the chosen mode (cli tables,
JSON, quiet) decides how it looks. Adding a printable thing means adding one method
here and one in each renderer, so the three modes never drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyperq.server.info import ServerInfo


class Output:
    """Base renderer: every method must be overridden by the three modes."""

    mode = "base"

    def server_info(self, info: ServerInfo, server_dir: Path | None) -> None:
        raise NotImplementedError

    def job_submitted(self, job_id: int) -> None:
        raise NotImplementedError

    def job_opened(self, job_id: int) -> None:
        raise NotImplementedError

    def generated_access(self, path: Path) -> None:
        """After `server generate-access`: nothing to print in any mode."""

    def nothing(self) -> None:
        """A command with no result: JSON mode still prints one value."""


def make_output(mode: str, colors: bool) -> Output:
    if mode == "json":
        from hyperq.output.jsonout import JsonOutput

        return JsonOutput()
    if mode == "quiet":
        from hyperq.output.quiet import QuietOutput

        return QuietOutput()
    from hyperq.output.cli import CliOutput

    return CliOutput(colors)


def print_json(value: Any) -> None:
    import json

    print(json.dumps(value, indent=2))

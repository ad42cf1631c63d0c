"""What every command gets: the global options, resolved once by the entry point."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hyperq.common.errors import UsageError
from hyperq.common.serverdir import absolute_server_dir

OUTPUT_MODES = ("cli", "json", "quiet")
COLOR_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class Context:
    server_dir: Path
    server_dir_is_default: bool
    output_mode: str
    colors: bool
    debug: bool

    @classmethod
    def from_options(
        cls, server_dir: str | None, output_mode: str | None, colors: str | None, debug: bool
    ) -> Context:
        mode = output_mode or os.environ.get("HQ_OUTPUT_MODE") or "cli"
        if mode not in OUTPUT_MODES:
            raise UsageError(
                f"error: invalid value '{mode}' for '--output-mode <OUTPUT_MODE>'\n"
                f"  [possible values: {', '.join(OUTPUT_MODES)}]"
            )
        color = colors or "auto"
        if color not in COLOR_MODES:
            raise UsageError(
                f"error: invalid value '{color}' for '--colors <COLORS>'\n"
                f"  [possible values: {', '.join(COLOR_MODES)}]"
            )
        use_colors = color == "always" or (color == "auto" and sys.stdout.isatty())
        path, is_default = absolute_server_dir(server_dir)
        return cls(path, is_default, mode, use_colors, debug)

    def server_dir_hint(self) -> str:
        """The ` --server-dir <dir>` suffix for hints, empty for the default dir."""
        return "" if self.server_dir_is_default else f" --server-dir {self.server_dir}"

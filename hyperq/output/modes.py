"""Picks the renderer of an output mode; each is imported only when chosen."""

from __future__ import annotations

from hyperq.output.base import Output


def make_output(mode: str, colors: bool) -> Output:
    if mode == "json":
        from hyperq.output.jsonout import JsonOutput

        return JsonOutput()
    if mode == "quiet":
        from hyperq.output.quiet import QuietOutput

        return QuietOutput()
    from hyperq.output.cli import CliOutput

    return CliOutput(colors)

"""Helpers that the job, task, worker and journal commands share: wire forms of
selectors and ranges, state filters, and the lazily imported client session and output."""

from __future__ import annotations

from typing import Any

from hyperq.common.context import Context
from hyperq.common.errors import UsageError
from hyperq.common.idrange import IdRanges, Selector


def selector_wire(selector: Selector) -> dict[str, Any]:
    """A selector in the contract's wire form."""
    if selector.is_last:
        return {"kind": "last"}
    if selector.is_all:
        return {"kind": "all"}
    assert selector.ids is not None
    return {"kind": "ids", "ranges": ranges_wire(selector.ids)}


def ranges_wire(ranges: IdRanges) -> list[list[int]]:
    return [list(item) for item in ranges.items]


def parse_states(
    text: str | None, allowed: tuple[str, ...], option: str = "--filter"
) -> list[str] | None:
    """A comma-separated state list (case-insensitive); None when the option is absent."""
    if text is None:
        return None
    states: list[str] = []
    for raw in text.split(","):
        state = raw.strip().lower()
        if state not in allowed:
            raise UsageError(
                f"error: invalid value '{raw.strip()}' for '{option} <STATES>'\n"
                f"  [possible values: {', '.join(allowed)}]"
            )
        if state not in states:
            states.append(state)
    return states


def parse_ranges(text: str | None) -> IdRanges | None:
    return IdRanges.parse(text) if text is not None else None


def connect(ctx: Context) -> Any:
    """The client session (imported here so that usage errors never pay for it)."""
    from hyperq.client.session import connect_to_server

    return connect_to_server(ctx)


def output_of(ctx: Context) -> Any:
    from hyperq.output.modes import make_output

    return make_output(ctx.output_mode, ctx.colors)

"""The bordered CLI tables of `hq` (lists and detail views), byte-compatible with the original.

Scripts and the original's test suite parse these tables (`tests/utils/table.py`), so the
layout is fixed: `+`/`-`/`|` borders, one space of padding, column width = widest line,
multi-line cells continued on extra lines whose other cells are blank. Colour is opt-in
and must never reach the output when disabled, nor count towards column widths.
Standard library only and cheap to import: every CLI command renders through here.

Parsing constraints the callers must respect (the original has them too): the first
column of a table must be non-empty and single-line in every row (an empty first cell
reads as a continuation of the previous row), and cells must not contain `|`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

_ESC = "\x1b"
_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"

COLOR_CODES: dict[str, str] = {
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "blue": "\x1b[34m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
    "bright_red": "\x1b[91m",
}

# The original's colours: jobs and tasks...
STATE_COLORS: dict[str, str] = {
    "WAITING": "cyan",
    "OPENED": "cyan",
    "RUNNING": "yellow",
    "FINISHED": "green",
    "FAILED": "red",
    "CANCELED": "magenta",
    "ABORTED": "magenta",
    "INVALID": "bright_red",
}
# ...and workers, where RUNNING is good news and therefore green.
WORKER_STATE_COLORS: dict[str, str] = {
    "RUNNING": "green",
    "CONNECTION LOST": "red",
    "HEARTBEAT LOST": "red",
    "IDLE TIMEOUT": "cyan",
    "STOPPED": "magenta",
    "TIME LIMIT REACHED": "cyan",
}


def paint(text: str, color: str | None, *, colors: bool) -> str:
    """Wraps each line of text in a colour (COLOR_CODES name, or "bold"); no-op if disabled.

    Lines are wrapped separately so a multi-line cell never colours the table borders.
    """
    if not colors or not color or not text:
        return text
    code = _BOLD if color == "bold" else COLOR_CODES[color]
    return "\n".join(f"{code}{line}{_RESET}" if line else line for line in text.split("\n"))


def color_state(state: str, *, colors: bool, worker: bool = False) -> str:
    """A state word (`RUNNING`, `FAILED`, ...) in the original's colour for it."""
    palette = WORKER_STATE_COLORS if worker else STATE_COLORS
    return paint(state, palette.get(state), colors=colors)


def strip_ansi(text: str) -> str:
    """Removes ANSI CSI sequences (`ESC [ ... final`) and any other stray ESC characters."""
    if _ESC not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != _ESC:
            out.append(ch)
            i += 1
            continue
        i += 1
        if i < n and text[i] == "[":
            i += 1
            while i < n and not "@" <= text[i] <= "~":
                i += 1
            i += 1  # the final byte
    return "".join(out)


def display_width(text: str) -> int:
    """Terminal columns taken by text (ANSI codes take none, East Asian wide chars two)."""
    text = strip_ansi(text)
    if text.isascii():
        return len(text)
    import unicodedata

    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


_Line = tuple[str, int]  # (text, display width), measured once per line


def _cell_lines(cell: object, colors: bool) -> list[_Line]:
    text = str(cell)
    if not colors:
        text = strip_ansi(text)
    if "\n" not in text and "\r" not in text:
        # Most cells are one short ASCII line: skip the general path.
        return [(text, len(text) if text.isascii() and _ESC not in text else display_width(text))]
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    # Like Rust's str::lines(): one trailing newline ends the last line, it adds no line.
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return [(line, display_width(line)) for line in lines]


_EMPTY: list[_Line] = [("", 0)]


def _plain_line(texts: list[str]) -> bool:
    """Every cell one line of plain ASCII (no escape codes): display width = len."""
    joined = "".join(texts)
    return joined.isascii() and "\n" not in joined and "\r" not in joined and _ESC not in joined


def _widen(widths: list[int], cells: list[list[_Line]]) -> None:
    """Columns at least as wide as the widest line of each of `cells`."""
    for index, lines in enumerate(cells):
        for _text, width in lines:
            if width > widths[index]:
                widths[index] = width


def _render(
    header: Sequence[object] | None,
    rows: Sequence[Sequence[object]],
    columns: int,
    right_align: Collection[int],
    bold_first_column: bool,
    colors: bool,
) -> str:
    # A row is kept as its cells' texts when they are all plain single lines (nearly
    # every row of a big list: `hq task list` of a 100,000-task array), and measured
    # line by line otherwise.
    grid: list[list[str] | list[list[_Line]]] = []
    widths = [0] * columns
    plain_allowed = not (colors and bold_first_column)
    for row in rows:
        if len(row) > columns:
            raise ValueError(f"row has {len(row)} cells, the table has {columns} columns")
        texts = [str(cell) for cell in row]
        texts.extend([""] * (columns - len(row)))
        if plain_allowed and _plain_line(texts):
            grid.append(texts)
            for index, text in enumerate(texts):
                if len(text) > widths[index]:
                    widths[index] = len(text)
            continue
        cells = [_cell_lines(text, colors) for text in texts]
        grid.append(cells)
        _widen(widths, cells)
    header_cells = [_cell_lines(cell, colors) for cell in header] if header is not None else None
    if header_cells is not None:
        _widen(widths, header_cells)

    border = "+" + "+".join("-" * (width + 2) for width in widths) + "+"
    out = [border]
    aligned = [index in right_align for index in range(columns)]
    left = [False] * columns
    justify = [str.rjust if right else str.ljust for right in aligned]

    def emit(cells: list[list[_Line]], right: list[bool], bold: int) -> None:
        height = max(len(lines) for lines in cells)
        for line_no in range(height):
            parts = []
            for index, lines in enumerate(cells):
                text, width = lines[line_no] if line_no < len(lines) else _EMPTY[0]
                pad = " " * (widths[index] - width)
                if colors and index < bold and text:
                    text = f"{_BOLD}{text}{_RESET}"
                parts.append(pad + text if right[index] else text + pad)
            out.append("| " + " | ".join(parts) + " |")

    if header_cells is not None:
        emit(header_cells, left, columns)
        out.append(border)
    bold = 1 if bold_first_column else 0
    for cells in grid:
        if cells and isinstance(cells[0], str):
            line = [
                just(text, width) for just, text, width in zip(justify, cells, widths, strict=True)
            ]
            out.append("| " + " | ".join(line) + " |")  # type: ignore[arg-type]
        else:
            emit(cells, aligned, bold)  # type: ignore[arg-type]
    if grid or header_cells is None:
        out.append(border)
    return "\n".join(out)


def render_horizontal(
    header: Sequence[object],
    rows: Sequence[Sequence[object]],
    right_align: Collection[int] = frozenset(),
    *,
    colors: bool = False,
) -> str:
    """A list table: border, header, border, one line per row (more if multi-line), border.

    With no rows it is just border, header, border. `right_align` holds the indices of
    data columns to right-justify (ID columns); headers stay left-justified like the
    original's. Rows shorter than the header are padded with empty cells. The result
    has no trailing newline.
    """
    if not header:
        raise ValueError("a horizontal table needs a header")
    return _render(header, rows, len(header), right_align, False, colors)


def render_vertical(rows: Sequence[tuple[object, object]], *, colors: bool = False) -> str:
    """A detail table: border, one `| Label | Value |` row per field, border.

    Labels are bold when colours are on. The result has no trailing newline.
    """
    return _render(None, rows, 2, (), True, colors)

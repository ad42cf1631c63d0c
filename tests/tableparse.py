"""Reads `hq` CLI tables back into cells, the way the original's test suite does.

The original's `tests/utils/table.py::parse_table` is the contract our tables must
meet (README §3.2); this module restates its rules so that our tests check the same
thing: `+-` lines are borders, lines starting with `[` and lines without `|` are
ignored, a row whose first cell is empty continues the previous row (its non-empty
cells are appended after a newline, so blank lines inside a value disappear), and when
exactly one row sits between the first two borders it is the header.

`parse_table` keeps the original's behaviour for back-to-back tables (their rows are
concatenated into one Table); `parse_tables` splits them into one Table each.
"""

from __future__ import annotations

from collections.abc import Iterator


class Table:
    """Parsed cells: `header` is None for vertical (label/value) tables."""

    def __init__(self, rows: list[list[str]], header: list[str] | None) -> None:
        self.rows = rows
        self.header = header

    def __getitem__(self, item: int | slice) -> list[str] | Table:
        if isinstance(item, slice):
            return Table(self.rows[item], header=self.header)
        return self.rows[item]

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and (self.header, self.rows) == (other.header, other.rows)

    def __repr__(self) -> str:
        lines = [self.header] if self.header else []
        lines.extend(self.rows)
        return "\n".join(" | ".join(cells) for cells in lines)

    def as_horizontal(self) -> Table:
        """Treats the first row as the header (for tables parsed without one)."""
        if self.header is not None:
            return self
        assert self.rows, "an empty table cannot become horizontal"
        return Table(self.rows[1:], self.rows[0])

    def get_row_value(self, label: str) -> str | None:
        """The value of the row labelled `label` in a vertical table, None if absent."""
        matches = [row for row in self.rows if row and row[0] == label]
        if not matches:
            return None
        assert len(matches) == 1, f"label {label!r} occurs {len(matches)} times\n{self}"
        return matches[0][1]

    def check_row_value(self, label: str, value: str) -> None:
        found = self.get_row_value(label)
        if found is None:
            raise AssertionError(f"label {label!r} not found in\n{self}")
        assert found == value, f"{label}: {found!r} != {value!r}"

    def get_column_value(self, name: str) -> list[str] | None:
        """All values of column `name` of a horizontal table, None if there is no such column."""
        if self.header is None:
            raise AssertionError(f"this table is not horizontal:\n{self}")
        if name not in self.header:
            return None
        index = self.header.index(name)
        return [row[index] for row in self.rows]

    def check_column_value(self, name: str, index: int, value: str) -> None:
        column = self.get_column_value(name)
        if not column:
            raise AssertionError(f"column {name!r} not found or empty in\n{self}")
        assert column[index] == value, f"{name}[{index}]: {column[index]!r} != {value!r}"

    def check_columns_value(self, names: list[str], index: int, values: list[str]) -> None:
        assert len(names) == len(values)
        for name, value in zip(names, values, strict=True):
            self.check_column_value(name, index, value)


def _is_border(line: str) -> bool:
    return line.startswith("+-")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("|")[1:-1]]


def parse_table(text: str) -> Table:
    """One Table from text, by the original's rules (several tables merge into one)."""
    rows: list[list[str]] = []
    pending: list[list[str]] = []
    borders = 0
    header: list[str] | None = None
    for raw in text.strip().split("\n"):
        line = raw.strip()
        if line.startswith("["):
            continue
        if _is_border(line):
            if borders == 1 and header is None and len(pending) == 1:
                header = pending.pop()
            elif borders > 0:
                rows.extend(pending)
                pending = []
            borders += 1
            continue
        cells = _cells(line)
        if not cells:
            continue
        if cells[0]:
            pending.append(cells)
            continue
        assert pending, f"continuation line without a row: {line!r}"
        for index, cell in enumerate(cells):
            if cell:
                pending[-1][index] += "\n" + cell
    return Table(rows, header=header)


def parse_tables(text: str) -> list[Table]:
    """Back-to-back tables, one Table each.

    Every table starts and ends with a border, so two borders in a row (ignoring the
    lines the parser skips) separate two tables, unless nothing but borders came before.
    A zero-row horizontal table (border, header, border) therefore parses like a
    one-row vertical one would: as a header with no rows, the same as the original.
    """
    blocks: list[list[str]] = []
    current: list[str] = []
    has_cells = False
    previous_was_border = False
    for raw in text.strip().split("\n"):
        line = raw.strip()
        if line.startswith("["):
            continue
        if _is_border(line):
            if previous_was_border and has_cells:
                blocks.append(current)
                current, has_cells = [], False
            current.append(line)
            previous_was_border = True
        elif _cells(line):
            current.append(line)
            has_cells = True
            previous_was_border = False
    if current:
        blocks.append(current)
    return [parse_table("\n".join(block)) for block in blocks]


def parse_multiline_cell(cell: str) -> dict[str, str]:
    """`key: value` lines of a cell (e.g. worker Resources) as a dict."""
    return dict(line.split(": ", 1) for line in cell.splitlines())

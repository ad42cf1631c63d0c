"""CLI tables (README §3.2): exact layout, and parsing back by the original's rules."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperq.output.table import (
    color_state,
    display_width,
    paint,
    render_horizontal,
    render_vertical,
    strip_ansi,
)
from tests.tableparse import Table, parse_multiline_cell, parse_table, parse_tables


def test_horizontal_layout() -> None:
    text = render_horizontal(
        ["ID", "Name", "State", "Tasks"],
        [["1", "echo", "FINISHED", "1"], ["*12", "a long name", "RUNNING", "10"]],
        right_align={0},
    )
    assert text == (
        "+-----+-------------+----------+-------+\n"
        "| ID  | Name        | State    | Tasks |\n"
        "+-----+-------------+----------+-------+\n"
        "|   1 | echo        | FINISHED | 1     |\n"
        "| *12 | a long name | RUNNING  | 10    |\n"
        "+-----+-------------+----------+-------+"
    )
    table = parse_table(text)
    assert table.header == ["ID", "Name", "State", "Tasks"]
    assert table.rows == [["1", "echo", "FINISHED", "1"], ["*12", "a long name", "RUNNING", "10"]]
    assert table.get_column_value("State") == ["FINISHED", "RUNNING"]
    table.check_column_value("ID", 1, "*12")


def test_zero_row_horizontal_table_is_three_lines() -> None:
    text = render_horizontal(["ID", "Name"], [])
    assert text == "+----+------+\n| ID | Name |\n+----+------+"
    table = parse_table(text)
    assert table.header == ["ID", "Name"]
    assert table.rows == []
    assert table.get_column_value("Name") == []


def test_vertical_layout_with_multiline_and_empty_values() -> None:
    text = render_vertical(
        [
            ("ID", "1"),
            ("State", "[####....]\nRUNNING (4)\nFINISHED (4)\n"),
            ("Environment", ""),
            ("Resources", "# Variant 1\ncpus: 1\n\n# Variant 2\ngpus: 1"),
            ("Command", "bash\n-c\necho hi"),
        ]
    )
    assert text == (
        "+-------------+--------------+\n"
        "| ID          | 1            |\n"
        "| State       | [####....]   |\n"
        "|             | RUNNING (4)  |\n"
        "|             | FINISHED (4) |\n"
        "| Environment |              |\n"
        "| Resources   | # Variant 1  |\n"
        "|             | cpus: 1      |\n"
        "|             |              |\n"
        "|             | # Variant 2  |\n"
        "|             | gpus: 1      |\n"
        "| Command     | bash         |\n"
        "|             | -c           |\n"
        "|             | echo hi      |\n"
        "+-------------+--------------+"
    )
    table = parse_table(text)
    assert table.header is None
    assert len(table) == 5
    assert table.get_row_value("State") == "[####....]\nRUNNING (4)\nFINISHED (4)"
    assert table.get_row_value("Environment") == ""
    # The parser drops blank lines inside a value (README §3.2).
    assert table.get_row_value("Resources") == "# Variant 1\ncpus: 1\n# Variant 2\ngpus: 1"
    assert table.get_row_value("Missing") is None
    table.check_row_value("Command", "bash\n-c\necho hi")
    assert table[1][0] == "State"


def test_multiline_cells_in_horizontal_table() -> None:
    text = render_horizontal(
        ["Task ID", "Worker", "Makespan", "Error"],
        [["0", "worker1\nworker2\n", "1s", ""], ["10", "", "", "Error: boom\nmore"]],
        right_align={0},
    )
    assert text.splitlines()[3:6] == [
        "|       0 | worker1 | 1s       |             |",
        "|         | worker2 |          |             |",
        "|      10 |         |          | Error: boom |",
    ]
    table = parse_table(text)
    assert table.rows == [["0", "worker1\nworker2", "1s", ""], ["10", "", "", "Error: boom\nmore"]]


def test_short_rows_are_padded_and_long_rows_rejected() -> None:
    table = parse_table(render_horizontal(["A", "B", "C"], [["x"], ["y", "z"]]))
    assert table.rows == [["x", "", ""], ["y", "z", ""]]
    with pytest.raises(ValueError):
        render_horizontal(["A"], [["x", "y"]])
    with pytest.raises(ValueError):
        render_horizontal([], [])


def test_empty_vertical_table() -> None:
    text = render_vertical([])
    assert text == "+--+--+\n+--+--+"
    assert parse_table(text) == Table([], None)


def test_column_width_is_widest_line() -> None:
    text = render_vertical([("Key", "short\na much longer line\nmid")])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[0] == "+-----+--------------------+"


def test_colors_never_leak_when_disabled() -> None:
    rows = [[color_state("RUNNING", colors=True), paint("x\ny", "red", colors=True)]]
    plain = render_horizontal(["State", "Info"], rows)
    assert "\x1b" not in plain
    colored = render_horizontal(["State", "Info"], rows, colors=True)
    assert "\x1b[33mRUNNING\x1b[0m" in colored
    assert "\x1b[1mState\x1b[0m" in colored
    # Escape codes take no columns: without them the coloured table is the plain one.
    assert strip_ansi(colored) == plain
    assert parse_table(plain).rows == [["RUNNING", "x\ny"]]
    vertical = render_vertical([("State", color_state("FAILED", colors=True))], colors=True)
    assert "\x1b[1mState\x1b[0m" in vertical and "\x1b[31mFAILED\x1b[0m" in vertical
    assert "\x1b" not in render_vertical([("State", color_state("FAILED", colors=True))])


def test_state_colours() -> None:
    assert color_state("RUNNING", colors=False) == "RUNNING"
    assert color_state("RUNNING", colors=True) == "\x1b[33mRUNNING\x1b[0m"
    assert color_state("RUNNING", colors=True, worker=True) == "\x1b[32mRUNNING\x1b[0m"
    assert color_state("FINISHED", colors=True) == "\x1b[32mFINISHED\x1b[0m"
    assert color_state("UNKNOWN", colors=True) == "UNKNOWN"
    assert paint("a\n\nb", "cyan", colors=True) == "\x1b[36ma\x1b[0m\n\n\x1b[36mb\x1b[0m"


def test_display_width() -> None:
    assert display_width("abc") == 3
    assert display_width("\x1b[31mabc\x1b[0m") == 3
    assert display_width("日本") == 4
    assert display_width("e\u0301") == 1
    text = render_vertical([("Name", "日本"), ("Other", "abcd")])
    assert len({display_width(line) for line in text.splitlines()}) == 1


def test_text_around_tables_is_ignored() -> None:
    table = render_horizontal(["ID", "State"], [["1", "RUNNING"]], {0})
    output = (
        "2024-05-01T10:00:00Z WARN Something odd\n"
        f"{table}\n"
        "* = Open jobs\n"
        "There are 2 jobs in total. Use `--all` to display all jobs.\n"
    )
    parsed = parse_table(output)
    assert parsed.header == ["ID", "State"]
    assert parsed.rows == [["1", "RUNNING"]]


def test_back_to_back_tables() -> None:
    job1 = render_vertical([("ID", "1"), ("State", "FAILED"), ("Tasks", "1; Ids: 0")])
    failures = render_horizontal(["Task ID", "Worker", "Error"], [["0", "w1", "Error: x"]], {0})
    job2 = render_vertical([("ID", "2"), ("State", "FINISHED")])
    empty = render_horizontal(["ID", "State"], [])
    output = f"{job1}\n{failures}\n1 tasks failed.\n{job2}\n{empty}\n{job1}\n"
    tables = parse_tables(output)
    assert [t.header for t in tables] == [
        None,
        ["Task ID", "Worker", "Error"],
        None,
        ["ID", "State"],
        None,
    ]
    assert tables[0].get_row_value("Tasks") == "1; Ids: 0"
    assert tables[1].rows == [["0", "w1", "Error: x"]]
    assert tables[2].get_row_value("ID") == "2"
    assert tables[3] == Table([], ["ID", "State"])
    assert tables[4] == tables[0]
    # The single-table parser keeps the original's behaviour: rows of all tables merged.
    merged = parse_table(f"{job1}\n{job2}")
    assert merged.rows == [*tables[0].rows, *tables[2].rows]
    assert parse_tables("no tables here") == []


def test_original_parser_examples() -> None:
    # The cases of the original's tests/test_utils.py, including sloppy hand-made rows.
    horizontal = parse_table(
        "+---------+--------------+\n| Id      | Name            |\n"
        "+---------+--------------+\n| a | b |\n| c   | d |\n+---------+--------------+\n"
    )
    assert (horizontal.header, horizontal.rows) == (["Id", "Name"], [["a", "b"], ["c", "d"]])
    vertical = parse_table(
        "+---------+--------------+\n| Id      | 1            |\n| Name | line1 |\n"
        "| | line2 |\n| | line3 |\n| Value   | c |\n+---------+--------------+\n"
    )
    assert vertical.header is None
    assert vertical.rows == [["Id", "1"], ["Name", "line1\nline2\nline3"], ["Value", "c"]]
    assert parse_table("\n+------+------+\n+------+------+\n    ") == Table([], None)
    suffixed = parse_table(
        "\n+-----+\n|a|b|\n+-----+\n|c|d|\n+-----+\nhello world\n[log] |x|y|\n    "
    )
    assert (suffixed.header, suffixed.rows) == (["a", "b"], [["c", "d"]])
    assert vertical.as_horizontal().header == ["Id", "1"]
    assert parse_multiline_cell("cpus: 4\nmem: 1 GiB") == {"cpus": "4", "mem": "1 GiB"}


# Cell text the parser can read back: no `|`, no CR/ESC; other characters are fair game.
_line = st.text(
    st.characters(blacklist_characters="|\r\n\x1b", blacklist_categories=("Cs", "Cc")),
    max_size=12,
)
_cell = st.lists(_line, min_size=1, max_size=3).map("\n".join)
_first_cell = _line.filter(lambda s: s.strip() != "")


def _as_parsed(cell: str) -> str:
    """What the parser reads back from a cell: stripped lines, blank continuation lines gone."""
    lines = cell.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    value = lines[0].strip()
    for line in lines[1:]:
        if line.strip():
            value += "\n" + line.strip()
    return value


def _height(cell: str) -> int:
    """Lines a cell takes: a trailing newline ends the last line, it adds none."""
    lines = cell.split("\n")
    return len(lines) - 1 if len(lines) > 1 and lines[-1] == "" else len(lines)


@st.composite
def _horizontal(draw: st.DrawFn) -> tuple[list[str], list[list[str]], set[int]]:
    columns = draw(st.integers(1, 5))
    header = [draw(_first_cell)] + [draw(_line) for _ in range(columns - 1)]
    rows = draw(
        st.lists(
            st.tuples(_first_cell, st.lists(_cell, min_size=columns - 1, max_size=columns - 1)),
            max_size=6,
        )
    )
    align = draw(st.sets(st.integers(0, columns - 1)))
    return header, [[first, *rest] for first, rest in rows], align


@given(_horizontal())
def test_horizontal_round_trip(case: tuple[list[str], list[list[str]], set[int]]) -> None:
    header, rows, align = case
    text = render_horizontal(header, rows, align)
    lines = text.split("\n")
    assert len(lines) == 3 + sum(max(map(_height, row)) for row in rows) + bool(rows)
    assert len({display_width(line) for line in lines}) == 1
    table = parse_table(text)
    assert table.header == [_as_parsed(cell) for cell in header]
    assert table.rows == [[_as_parsed(cell) for cell in row] for row in rows]
    assert parse_tables(text) == [table]


_ascii_line = st.text(
    st.characters(min_codepoint=32, max_codepoint=126).filter(lambda c: c != "|"), max_size=10
)


@given(
    st.integers(1, 4).flatmap(
        lambda columns: st.tuples(
            st.lists(_ascii_line.filter(str.strip), min_size=columns, max_size=columns),
            st.lists(st.lists(_ascii_line, min_size=1, max_size=columns), max_size=5),
            st.sets(st.integers(0, columns - 1)),
        )
    )
)
def test_plain_rows_render_as_measured_rows_do(
    case: tuple[list[str], list[list[str]], set[int]],
) -> None:
    # Rows of plain ASCII lines take a shortcut; a colour code (stripped when colours
    # are off) sends the same text down the general path, which must agree byte for byte.
    header, rows, align = case
    coloured = [[f"\x1b[31m{cell}\x1b[0m" for cell in row] for row in rows]
    assert render_horizontal(header, rows, align) == render_horizontal(header, coloured, align)


@given(st.lists(st.tuples(_first_cell, _cell), min_size=2, max_size=8))
def test_vertical_round_trip(rows: list[tuple[str, str]]) -> None:
    text = render_vertical(rows)
    table = parse_table(text)
    assert table.header is None
    assert table.rows == [[_as_parsed(label), _as_parsed(value)] for label, value in rows]
    assert parse_tables(f"{text}\n{text}") == [table, table]


def test_import_is_light() -> None:
    code = (
        "import sys, hyperq.output; before = set(sys.modules);"
        "import hyperq.output.table;"
        "print(sorted(set(sys.modules) - before))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert set(ast.literal_eval(result.stdout)) <= {"hyperq.output.table", "__future__"}

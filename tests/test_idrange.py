"""ID range lists and selectors: the README §4 syntax, errors, and compact storage."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from itertools import islice

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperq.common.errors import UsageError
from hyperq.common.idrange import IdRanges, Selector, format_ids, parse_selector


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("7", [7]),
        ("0", [0]),
        ("3-5", [3, 4, 5]),
        ("101-101", [101]),
        ("2-4, 6", [2, 3, 4, 6]),
        ("  1 ,\t3 ", [1, 3]),
        ("1_000", [1000]),
        ("1___0__0_0", [1000]),
        ("1_", [1]),
        ("0-10:2", [0, 2, 4, 6, 8, 10]),
        ("0-10:3", [0, 3, 6, 9]),
        ("2-10:3", [2, 5, 8]),
        ("34-40,45", [34, 35, 36, 37, 38, 39, 40, 45]),
        ("5,1-3", [1, 2, 3, 5]),
        ("0-10:2,1-11:2", list(range(12))),
        ("0-10:3,4-20:4", [0, 3, 4, 6, 8, 9, 12, 16, 20]),
        ("4294967295", [4294967295]),
    ],
)
def test_parse_examples(text: str, ids: list[int]) -> None:
    ranges = IdRanges.parse(text)
    assert list(ranges) == ids
    assert len(ranges) == len(ids)
    assert ranges.min() == ids[0]
    assert ranges.max() == ids[-1]
    for value in {*ids, *(i + 1 for i in ids), *(i - 1 for i in ids), *range(12)}:
        assert (value in ranges) == (value in ids)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'Invalid range "": expected N, A-B or A-B:S'),
        ("1,,2", 'Invalid range ""'),
        ("1,", 'Invalid range ""'),
        ("x", 'Invalid range "x"'),
        ("12-x", 'Invalid range "12-x"'),
        ("_1", 'Invalid range "_1"'),
        ("-1", 'Invalid range "-1"'),
        ("1 - 3", 'Invalid range "1 - 3"'),
        ("1-2-3", 'Invalid range "1-2-3"'),
        ("1.5", 'Invalid range "1.5"'),
        ("101-100", 'Invalid range "101-100": the end is smaller than the start'),
        ("5:2", 'Invalid range "5:2": a step needs an end'),
        ("0-10:0", 'Invalid range "0-10:0": the step must be between 1 and 10'),
        ("0-10:11", 'Invalid range "0-10:11": the step must be between 1 and 10'),
        ("5-5:1", 'Invalid range "5-5:1": a step needs at least two IDs'),
        ("4294967296", "is too large (maximum 4294967295)"),
        ("0-10, 5", 'Ranges overlap: "0-10" and "5" both contain ID 5'),
        ("3,3", 'Ranges overlap: "3" and "3" both contain ID 3'),
        ("0-10:2,1-9:2,3", 'Ranges overlap: "1-9:2" and "3" both contain ID 3'),
        ("0-100:6,50-100:4", "both contain ID 54"),
        ("last,1", 'Invalid range "last"'),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        IdRanges.parse(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_canonical_printing() -> None:
    assert format_ids([2, 7, 9, *range(20, 31)]) == "2,7,9,20-30"
    assert format_ids([]) == ""
    assert format_ids([5]) == "5"
    assert format_ids([1, 2]) == "1-2"
    assert format_ids(iter([1, 1, 2, 4])) == "1-2,4"
    assert format_ids([0, 2, 4]) == "0,2,4"
    with pytest.raises(ValueError):
        format_ids([3, 1])
    # A parsed list prints sorted and merged; steps stay (as in the original's job info).
    assert str(IdRanges.parse("4-6,1-3, 8")) == "1-6,8"
    assert str(IdRanges.parse("0-10:2")) == "0-10:2"
    assert str(IdRanges.parse("0-10:3")) == "0-9:3"
    assert str(IdRanges.parse("7,8,9")) == "7-9"
    assert str(IdRanges()) == ""


def test_from_ids_and_items() -> None:
    ranges = IdRanges.from_ids([9, 3, 4, 5, 3, 20])
    assert ranges.items == ((3, 5, 1), (9, 9, 1), (20, 20, 1))
    assert str(ranges) == "3-5,9,20"
    assert IdRanges(ranges.items) == ranges
    assert IdRanges.from_range(0, 1).items == ((0, 0, 1),)
    assert len(IdRanges.from_range(10, 0)) == 0
    assert not IdRanges.from_ids([])
    with pytest.raises(ValueError):
        IdRanges([(0, 10, 1), (5, 5, 1)])
    with pytest.raises(ValueError):
        IdRanges.from_ids([-1])
    with pytest.raises(ValueError):
        IdRanges().min()
    assert hash(IdRanges.parse("1-3")) == hash(IdRanges.from_ids([1, 2, 3]))


def test_million_ids_stay_compact() -> None:
    started = time.perf_counter()
    ranges = IdRanges.parse("0-999999")
    big = IdRanges.parse("0-4294967295")
    assert len(ranges) == 1_000_000
    assert len(big) == 2**32
    assert ranges.items == ((0, 999_999, 1),)
    assert 999_999 in ranges and 1_000_000 not in ranges
    assert 4_000_000_000 in big
    assert big.max() == 4294967295
    assert list(islice(big, 3)) == [0, 1, 2]
    assert str(big) == "0-4294967295"
    assert time.perf_counter() - started < 0.1


def test_selectors() -> None:
    assert parse_selector("last") == Selector.last()
    assert parse_selector("last").is_last
    assert parse_selector("all").is_all
    selector = parse_selector("1-3,7")
    assert selector.kind == Selector.IDS
    assert selector.ids is not None and list(selector.ids) == [1, 2, 3, 7]
    assert str(selector) == "1-3,7"
    with pytest.raises(UsageError, match='"all" is not accepted here'):
        parse_selector("all", allow_all=False)
    assert parse_selector("last", allow_all=False).is_last
    with pytest.raises(UsageError):
        parse_selector("LAST")
    with pytest.raises(ValueError):
        Selector(Selector.IDS)


# Small items so that overlaps are common and the naive expansion stays cheap.
_items = st.tuples(st.integers(0, 60), st.integers(0, 12), st.integers(1, 5), st.booleans())


def _item_text(item: tuple[int, int, int, bool]) -> tuple[str, set[int]]:
    start, length, step, stepped = item
    if length == 0:
        return str(start), {start}
    end = start + length
    if stepped and step <= length:
        return f"{start}-{end}:{step}", set(range(start, end + 1, step))
    return f"{start}-{end}", set(range(start, end + 1))


@given(st.lists(_items, min_size=1, max_size=6), st.sampled_from([",", ", ", " , "]))
def test_parse_matches_naive_expansion(items: list, separator: str) -> None:
    texts, sets = zip(*(_item_text(item) for item in items), strict=True)
    text = separator.join(texts)
    overlapping = sum(len(s) for s in sets) != len(set().union(*sets))
    if overlapping:
        with pytest.raises(UsageError, match="Ranges overlap"):
            IdRanges.parse(text)
        return
    expected = sorted(set().union(*sets))
    ranges = IdRanges.parse(text)
    assert list(ranges) == expected
    assert len(ranges) == len(expected)
    assert (ranges.min(), ranges.max()) == (expected[0], expected[-1])
    for value in range(-1, 80):
        assert (value in ranges) == (value in expected)
    # Printing and parsing again gives the same set, in as few items or fewer.
    again = IdRanges.parse(str(ranges))
    assert again == ranges
    assert list(IdRanges.parse(format_ids(ranges))) == expected


@given(st.lists(st.integers(0, 2_000), max_size=50))
def test_format_ids_round_trip(ids: list[int]) -> None:
    expected = sorted(set(ids))
    text = format_ids(expected)
    assert text == str(IdRanges.from_ids(ids))
    if expected:
        assert list(IdRanges.parse(text)) == expected
        # Canonical: no two printed items could be merged into one run.
        assert "," not in text or all(
            not a.split("-")[-1].isdigit() or int(a.split("-")[-1]) + 1 < int(b.split("-")[0])
            for a, b in zip(text.split(","), text.split(",")[1:], strict=False)
        )
    assert list(IdRanges.from_ids(ids)) == expected


def test_import_is_light() -> None:
    code = (
        "import sys, hyperq.common.errors; before = set(sys.modules);"
        "import hyperq.common.idrange;"
        "print(sorted(set(sys.modules) - before))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert set(ast.literal_eval(result.stdout)) <= {"hyperq.common.idrange", "math", "__future__"}

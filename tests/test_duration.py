"""Duration parsing/printing (README §4) and the timestamp formats of tables and JSON."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperq.common.duration import (
    format_date,
    format_duration,
    format_elapsed,
    format_local,
    format_timestamp,
    parse_duration,
    parse_timestamp,
)
from hyperq.common.errors import UsageError

DAY = 86_400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("0", 0),
        ("01:00:00", 3600),
        ("1:1", 61),
        ("80:02", 4802),
        ("02:03:04", 2 * 3600 + 3 * 60 + 4),
        ("1_000", 1000),
        (" 5 ", 5),
        ("500ms", 0.5),
        ("1s 200ms", 1.2),
        ("18s500ms", 18.5),
        ("10min", 600),
        ("2h5m10s", 7510),
        ("15days 2min 2s", 15 * DAY + 122),
        ("2 h", 7200),
        ("1ns", 1e-9),
        ("3nsec", 3e-9),
        ("7us", 7e-6),
        ("7usec", 7e-6),
        ("2msec", 0.002),
        ("1sec 1second 2seconds", 4),
        ("1m 1minute 2minutes", 240),
        ("1hr 1hour 2hours", 4 * 3600),
        ("1d 1day 2days", 4 * DAY),
        ("1w 1week 2weeks", 28 * DAY),
        ("1M", 2_630_016),
        ("2months", 2 * 2_630_016),
        ("1y", 31_557_600),
        ("1year 1years", 2 * 31_557_600),
        ("3secs 2mins 1hrs", 3 + 120 + 3600),
    ],
)
def test_parse_examples(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("1.5h", "unexpected character `.`"),
        ("1h 30", "the number 30 needs a time unit"),
        ("abc", "expected a number"),
        ("-5s", "expected a number"),
        ("5 parsecs", "unknown time unit `parsecs`"),
        ("5H", "unknown time unit `H`"),
        ("12:", "each `:`-separated part must be a number"),
        ("12:x", "each `:`-separated part must be a number"),
        ("1h:30", "each `:`-separated part must be a number"),
        ("1:2:3:4", "at most three"),
        ("99999999999999999999999y", "it is too long"),
    ],
)
def test_parse_errors(text: str, reason: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(text)
    message = str(info.value)
    assert message.startswith(f'Invalid duration "{text}": {reason}')
    assert "[[HH:]MM:]SS" in message and "\n" not in message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-5, "0s"),
        (0.5, "500ms"),
        (3, "3s"),
        (1.2, "1s 200ms"),
        (70, "1m 10s"),
        (3529, "58m 49s"),
        (8, "8s"),
        (7 * DAY + 8 * 3600 + 9 * 60 + 11, "7days 8h 9m 11s"),
        (DAY, "1day"),
        (2_630_016, "1month"),
        (2 * 31_557_600 + 2_630_016 + DAY, "2years 1month 1day"),
        (0.000123, "123us"),
        (1.000001001, "1s 1us 1ns"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        # The original's own examples (common/format.rs) plus README §4.
        (0.000123456, "0s"),
        (123.456890123, "2m 3s"),
        (1.5, "1s 500ms"),
        (1.0, "1s"),
        (62.111, "1m 2s"),
        (100.0000001, "1m 40s"),
        (11111, "3h 5m"),
        (7 * DAY + 8 * 3600 + 9 * 60 + 11, "7days 8h 9m"),
        (0.503, "503ms"),
        (1.012, "1s 12ms"),
        (59.9999, "59s 999ms"),
        (3599.9, "59m 59s"),
        (-1, "0s"),
    ],
)
def test_format_elapsed(seconds: float, text: str) -> None:
    assert format_elapsed(seconds) == text


@given(st.integers(0, 10**15))
def test_parse_of_formatted_duration(nanos: int) -> None:
    text = format_duration(nanos / 1e9)
    assert round(parse_duration(text) * 1e9) == nanos


@given(st.integers(0, 10**10))
def test_parse_of_formatted_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(0, 10**8), st.integers(0, 999_999))
def test_elapsed_is_truncated_duration(whole: int, micros: int) -> None:
    seconds = whole + micros / 1e6
    if whole >= 3600:
        expected = whole - whole % 60
    elif whole >= 60:
        expected = whole
    else:
        expected = whole + micros // 1000 / 1000
    assert parse_duration(format_elapsed(seconds)) == pytest.approx(expected, abs=1e-9)


_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600, "d": DAY, "w": 7 * DAY}


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(_UNITS))), min_size=1),
    st.sampled_from(["", " ", "  "]),
)
def test_humantime_items_sum(items: list[tuple[int, str]], separator: str) -> None:
    text = separator.join(f"{n}{unit}" for n, unit in items)
    expected = sum(n * _UNITS[unit] for n, unit in items)
    assert parse_duration(text) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_hms(hours: int, minutes: int, seconds: int) -> None:
    assert parse_duration(f"{hours:02d}:{minutes:02d}:{seconds:02d}") == (
        hours * 3600 + minutes * 60 + seconds
    )
    assert parse_duration(f"{minutes}:{seconds}") == minutes * 60 + seconds


def test_timestamp_examples() -> None:
    assert format_timestamp(1714557600) == "2024-05-01T10:00:00Z"
    assert format_timestamp(1714557600.5) == "2024-05-01T10:00:00.500Z"
    assert format_timestamp(1714557600.123456) == "2024-05-01T10:00:00.123456Z"
    assert format_timestamp(1714557600.123456, fraction=False) == "2024-05-01T10:00:00Z"
    assert format_timestamp(1714557599.9999999) == "2024-05-01T10:00:00Z"
    assert format_date(1714557600.4) == "2024-05-01 10:00:00 UTC"
    assert format_date(1714557600.6) == "2024-05-01 10:00:01 UTC"
    assert parse_timestamp("2024-05-01T10:00:00Z") == 1714557600
    assert parse_timestamp("2024-05-01T12:00:00+02:00") == 1714557600
    assert parse_timestamp("2024-05-01T10:00:00.123456789Z") == pytest.approx(1714557600.123456789)
    for bad in ["", "2024-05-01", "2024-05-01T10:00:00", "2024-13-01T10:00:00Z", "x" * 25]:
        with pytest.raises(ValueError):
            parse_timestamp(bad)


_epochs = st.integers(0, 4_000_000_000 * 10**6).map(lambda us: us / 1e6)


@given(_epochs)
def test_timestamps_agree_with_datetime(epoch: float) -> None:
    utc = dt.datetime.fromtimestamp(round(epoch * 1e6) / 1e6, dt.UTC)
    text = format_timestamp(epoch)
    assert dt.datetime.fromisoformat(text) == utc
    assert text.endswith("Z") and len(text) in (20, 24, 27)
    assert parse_timestamp(text) == pytest.approx(epoch, abs=1e-6)
    assert format_date(epoch) == (
        dt.datetime.fromtimestamp(int(epoch + 0.5), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    )
    assert format_local(epoch) == (
        dt.datetime.fromtimestamp(int(epoch)).strftime("%d.%m.%Y %H:%M:%S")
    )


def test_import_is_light() -> None:
    code = (
        "import sys, hyperq.common.errors; before = set(sys.modules);"
        "import hyperq.common.duration;"
        "print(sorted(set(sys.modules) - before))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert set(ast.literal_eval(result.stdout)) <= {"hyperq.common.duration", "__future__"}

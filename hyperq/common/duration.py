"""Durations and timestamps as users type and read them.

One duration parser (`[[HH:]MM:]SS` or humantime items such as `1h 30min`) and the
printers whose exact text scripts and tests match: humantime durations, truncated
elapsed times, RFC3339 UTC timestamps and the table date formats. Imported by every CLI
command: standard library builtins only (`time`, no datetime/calendar/re), and no
clock reads here; callers pass the times in.
"""

from __future__ import annotations

import time

from hyperq.common.errors import UsageError

_NS = 1_000_000_000
_DAY = 86_400
_MONTH = 2_630_016  # 30.44 days, humantime's month
_YEAR = 31_557_600  # 365.25 days, humantime's year

# Unit spellings accepted by humantime (the original's parser), in nanoseconds. The
# README lists the common ones; the rest (`nanos`, `secs`, `mins`, `hrs`, ...) are
# humantime aliases kept so that every value the original accepts works here too.
_UNIT_NS: dict[str, int] = {}
for _names, _ns in (
    (("ns", "nsec", "nanos"), 1),
    (("us", "usec"), 1_000),
    (("ms", "msec", "millis"), 1_000_000),
    (("s", "sec", "secs", "second", "seconds"), _NS),
    (("m", "min", "mins", "minute", "minutes"), 60 * _NS),
    (("h", "hr", "hrs", "hour", "hours"), 3_600 * _NS),
    (("d", "day", "days"), _DAY * _NS),
    (("w", "week", "weeks"), 7 * _DAY * _NS),
    (("M", "month", "months"), _MONTH * _NS),
    (("y", "year", "years"), _YEAR * _NS),
):
    for _name in _names:
        _UNIT_NS[_name] = _ns
del _names, _ns, _name

_MAX_NS = 2**64 * _NS  # the original stores durations as u64 seconds
_DIGITS = frozenset("0123456789")
_NUMBER_CHARS = frozenset("0123456789_")
_HMS_CHARS = frozenset("0123456789_:")


def _bad_duration(text: str, why: str) -> UsageError:
    return UsageError(
        f'Invalid duration "{text}": {why}; use [[HH:]MM:]SS (e.g. 01:30:00) '
        "or humantime items (e.g. 90s, 10min, 2h 30m)"
    )


def parse_duration(text: str) -> float:
    """`30`, `01:30`, `1:00:00`, `500ms`, `1s 200ms`, `18s500ms`, ... → float seconds."""
    stripped = text.strip()
    if not stripped:
        raise _bad_duration(text, "it is empty")
    if stripped[0] in _DIGITS and (":" in stripped or _HMS_CHARS.issuperset(stripped)):
        return float(_parse_hms(text, stripped))
    return _parse_humantime(text, stripped) / _NS


def _parse_hms(text: str, stripped: str) -> int:
    parts = stripped.split(":")
    if len(parts) > 3:
        raise _bad_duration(text, "at most three `:`-separated parts are allowed")
    seconds = 0
    for part in parts:
        if not part or part[0] not in _DIGITS or not _NUMBER_CHARS.issuperset(part):
            raise _bad_duration(text, "each `:`-separated part must be a number")
        seconds = seconds * 60 + int(part.replace("_", ""))
    return seconds


def _parse_humantime(text: str, stripped: str) -> int:
    total = 0
    pos, end = 0, len(stripped)
    while pos < end:
        while pos < end and stripped[pos].isspace():
            pos += 1
        if pos == end:
            break
        start = pos
        while pos < end and stripped[pos] in _DIGITS:
            pos += 1
        if start == pos:
            raise _bad_duration(text, f"expected a number at `{stripped[start:]}`")
        number = int(stripped[start:pos])
        while pos < end and stripped[pos].isspace():
            pos += 1
        unit_start = pos
        while pos < end and stripped[pos].isascii() and stripped[pos].isalpha():
            pos += 1
        unit = stripped[unit_start:pos]
        if not unit:
            if pos == end:
                raise _bad_duration(text, f"the number {number} needs a time unit")
            raise _bad_duration(text, f"unexpected character `{stripped[pos]}`")
        factor = _UNIT_NS.get(unit)
        if factor is None:
            raise _bad_duration(text, f"unknown time unit `{unit}`")
        total += number * factor
    if total >= _MAX_NS:
        raise _bad_duration(text, "it is too long")
    return total


def _split(seconds: float) -> tuple[int, int]:
    """Non-negative float seconds → (whole seconds, nanoseconds), rounding to the ns."""
    if not seconds > 0:  # also maps NaN to zero
        return 0, 0
    whole = int(seconds)
    nanos = round((seconds - whole) * _NS)
    if nanos >= _NS:
        whole, nanos = whole + 1, nanos - _NS
    return whole, nanos


def _humantime(secs: int, nanos: int) -> str:
    if secs == 0 and nanos == 0:
        return "0s"
    years, rest = divmod(secs, _YEAR)
    months, rest = divmod(rest, _MONTH)
    days, rest = divmod(rest, _DAY)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts: list[str] = []
    for value, name in ((years, "year"), (months, "month"), (days, "day")):
        if value:
            parts.append(f"{value}{name}s" if value > 1 else f"{value}{name}")
    for value, name in (
        (hours, "h"),
        (minutes, "m"),
        (seconds, "s"),
        (nanos // 1_000_000, "ms"),
        (nanos // 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ):
        if value:
            parts.append(f"{value}{name}")
    return " ".join(parts)


def format_duration(seconds: float) -> str:
    """Humantime printing: `0s`, `500ms`, `1s 200ms`, `1m 10s`, `2days 3h`; negatives → `0s`."""
    return _humantime(*_split(seconds))


def format_elapsed(seconds: float) -> str:
    """A Makespan: truncated to ms below 1 min, to s below 1 h, else to minutes."""
    if not seconds > 0:
        return "0s"
    # Float timestamps carry about a microsecond of precision; rounding to it first keeps
    # 0.503 s (stored as 0.50299999...) from truncating to 502 ms.
    micros = round(seconds * 1_000_000)
    whole, micros = divmod(micros, 1_000_000)
    if whole >= 3_600:
        return _humantime(whole - whole % 60, 0)
    if whole >= 60:
        return _humantime(whole, 0)
    return _humantime(whole, micros // 1_000 * 1_000_000)


def format_timestamp(epoch: float, *, fraction: bool = True) -> str:
    """RFC3339 UTC: `2024-05-01T10:00:00.123456Z` (fraction: none, 3 or 6 digits as needed).

    `fraction=False` gives whole seconds (`2024-05-01T10:00:00Z`, the log line format).
    """
    micros = round(epoch * 1_000_000)
    secs, micros = divmod(micros, 1_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if not fraction or micros == 0:
        return stamp + "Z"
    if micros % 1_000 == 0:
        return f"{stamp}.{micros // 1_000:03d}Z"
    return f"{stamp}.{micros:06d}Z"


def format_date(epoch: float) -> str:
    """`2024-05-01 10:00:00 UTC`, rounded to the nearest second (job info submission date)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime((epoch + 0.5) // 1))


def format_local(epoch: float) -> str:
    """Local time `01.05.2024 12:00:00`, seconds truncated (task info Start/End)."""
    return time.strftime("%d.%m.%Y %H:%M:%S", time.localtime(epoch // 1))


def parse_timestamp(text: str) -> float:
    """RFC3339 (`2024-05-01T10:00:00.123456789Z`, or a `+hh:mm` offset) → epoch seconds.

    Raises ValueError: timestamps come from our own JSON and journals, not from users.
    """
    s = text.strip()
    if len(s) < 20 or s[4] != "-" or s[7] != "-" or s[10] not in "Tt " or s[13] != ":":
        raise ValueError(f"not an RFC3339 timestamp: {text!r}")
    if s[16] != ":":
        raise ValueError(f"not an RFC3339 timestamp: {text!r}")
    fields = (s[0:4], s[5:7], s[8:10], s[11:13], s[14:16], s[17:19])
    if not all(f.isascii() and f.isdigit() for f in fields):
        raise ValueError(f"not an RFC3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(f) for f in fields)
    rest = s[19:]
    frac = 0.0
    if rest.startswith("."):
        digits = 1
        while digits < len(rest) and rest[digits].isdigit():
            digits += 1
        if digits == 1:
            raise ValueError(f"not an RFC3339 timestamp: {text!r}")
        frac = float("0" + rest[:digits])
        rest = rest[digits:]
    if rest in ("Z", "z"):
        offset = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":" and rest[1:3].isdigit():
        if not rest[4:6].isdigit():
            raise ValueError(f"not an RFC3339 timestamp: {text!r}")
        offset = (int(rest[1:3]) * 3_600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        raise ValueError(f"not an RFC3339 timestamp: {text!r}")
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise ValueError(f"not an RFC3339 timestamp: {text!r}")
    days = _days_from_civil(year, month, day)
    return days * _DAY + hour * 3_600 + minute * 60 + second - offset + frac


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468

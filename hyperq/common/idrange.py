"""ID range lists (`--array`, job/worker/task selectors) and their canonical printing.

One parser for every place that takes IDs, so `1-10:2, 20` means the same everywhere.
A range list is kept as a few (start, last, step) items and must never be expanded into
its IDs: an array can have a million tasks. Imported by every CLI command, so it uses
nothing beyond the standard library's builtins.
"""

from __future__ import annotations

from math import gcd

from hyperq.common.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

MAX_ID = 0xFFFF_FFFF  # IDs are u32 in the original; bigger input is an error, not a wrap
_DIGITS = frozenset("0123456789")
_NUMBER_CHARS = frozenset("0123456789_")

Item = tuple[int, int, int]  # (start, last, step): `last` is the last ID actually included


class IdRanges:
    """An immutable set of IDs stored as sorted (start, last, step) items."""

    __slots__ = ("_disjoint", "_items", "_len")

    def __init__(self, items: Iterable[Item] = ()) -> None:
        normalized, clash = _normalize(items)
        if clash is not None:
            a, b, x = clash
            raise ValueError(f"ID ranges {a} and {b} overlap at {x}")
        self._set(normalized)

    def _set(self, items: tuple[Item, ...]) -> None:
        self._items = items
        self._len = sum((last - start) // step + 1 for start, last, step in items)
        disjoint = True
        top = -1
        for start, last, _step in items:
            if start <= top:
                disjoint = False
                break
            top = last
        # Disjoint spans (the usual case) allow bisecting and plain chaining; interleaved
        # stepped items such as "0-10:2,1-11:2" need a merge instead.
        self._disjoint = disjoint

    @classmethod
    def parse(cls, text: str) -> IdRanges:
        """Parses `N`, `A-B` and `A-B:S` items separated by commas; raises UsageError."""
        parsed: list[tuple[Item, str]] = []
        for raw in text.split(","):
            item = raw.strip()
            parsed.append((_parse_item(item), item))
        names = {value: name for value, name in parsed}
        normalized, clash = _normalize(value for value, _ in parsed)
        if clash is not None:
            a, b, x = clash
            raise UsageError(
                f'Ranges overlap: "{names.get(a, _format_item(a))}" and '
                f'"{names.get(b, _format_item(b))}" both contain ID {x}'
            )
        result = cls.__new__(cls)
        result._set(normalized)
        return result

    @classmethod
    def from_ids(cls, ids: Iterable[int]) -> IdRanges:
        """Collapses any iterable of IDs (duplicates allowed) into consecutive runs."""
        ordered = sorted(set(ids))
        if ordered and ordered[-1] > MAX_ID:
            raise ValueError(f"ID {ordered[-1]} is larger than {MAX_ID}")
        result = cls.__new__(cls)
        result._set(tuple(runs(ordered)))
        return result

    @classmethod
    def from_range(cls, start: int, count: int) -> IdRanges:
        """IDs start .. start+count-1 (the default array of one task is from_range(0, 1))."""
        return cls(((start, start + count - 1, 1),) if count > 0 else ())

    @property
    def items(self) -> tuple[Item, ...]:
        """The normalized (start, last, step) items, sorted by start; for codecs."""
        return self._items

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[int]:
        if self._disjoint:
            for start, last, step in self._items:
                yield from range(start, last + 1, step)
        else:
            import heapq

            yield from heapq.merge(*(range(s, last + 1, step) for s, last, step in self._items))

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        if self._disjoint:
            from bisect import bisect_right

            index = bisect_right(self._items, (value, MAX_ID + 1, 0)) - 1
            if index < 0:
                return False
            start, last, step = self._items[index]
            return value <= last and (value - start) % step == 0
        return any(
            start <= value <= last and (value - start) % step == 0
            for start, last, step in self._items
        )

    def min(self) -> int:
        if not self._items:
            raise ValueError("empty ID range list has no minimum")
        return self._items[0][0]

    def max(self) -> int:
        if not self._items:
            raise ValueError("empty ID range list has no maximum")
        return max(last for _start, last, _step in self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdRanges) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __str__(self) -> str:
        """Items as stored: `N`, `A-B`, or `A-B:S` where B is the last included ID.

        The original prints a single `--array` this way in `job info` (`Tasks`), keeping
        steps; `format_ids` is the step-less form used for sets of IDs.
        """
        return ",".join(_format_item(item) for item in self._items)

    def __repr__(self) -> str:
        return f"IdRanges({str(self)!r})"


def format_ids(ids: Iterable[int]) -> str:
    """Sorted IDs as `2,7,9,20-30` (consecutive runs collapsed, no steps); streams its input.

    Duplicates are skipped; a descending ID is a programming error (ValueError).
    """
    return ",".join(_format_item(item) for item in runs(ids))


class Selector:
    """`last`, `all`, or an explicit IdRanges, as given on the command line."""

    __slots__ = ("ids", "kind")

    LAST = "last"
    ALL = "all"
    IDS = "ids"

    def __init__(self, kind: str, ids: IdRanges | None = None) -> None:
        if (kind == Selector.IDS) != (ids is not None) or kind not in (
            Selector.LAST,
            Selector.ALL,
            Selector.IDS,
        ):
            raise ValueError(f"invalid selector {kind!r}, {ids!r}")
        self.kind = kind
        self.ids = ids

    @classmethod
    def last(cls) -> Selector:
        return cls(cls.LAST)

    @classmethod
    def all(cls) -> Selector:
        return cls(cls.ALL)

    @classmethod
    def of(cls, ids: IdRanges) -> Selector:
        return cls(cls.IDS, ids)

    @property
    def is_last(self) -> bool:
        return self.kind == Selector.LAST

    @property
    def is_all(self) -> bool:
        return self.kind == Selector.ALL

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and (self.kind, self.ids) == (other.kind, other.ids)

    def __hash__(self) -> int:
        return hash((self.kind, self.ids))

    def __str__(self) -> str:
        return self.kind if self.ids is None else str(self.ids)

    def __repr__(self) -> str:
        return f"Selector({str(self)!r})"


def parse_selector(text: str, allow_all: bool = True) -> Selector:
    """`last`, `all` (when the command accepts it) or an ID range list; raises UsageError."""
    if text == Selector.LAST:
        return Selector.last()
    if text == Selector.ALL:
        if not allow_all:
            raise UsageError('"all" is not accepted here; use "last" or an ID range such as 1-3')
        return Selector.all()
    return Selector.of(IdRanges.parse(text))


def _parse_number(token: str, item: str) -> int:
    if not token or token[0] not in _DIGITS or not _NUMBER_CHARS.issuperset(token):
        raise UsageError(f'Invalid range "{item}": expected N, A-B or A-B:S')
    value = int(token.replace("_", ""))
    if value > MAX_ID:
        raise UsageError(f'Invalid range "{item}": {token} is too large (maximum {MAX_ID})')
    return value


def _parse_item(item: str) -> Item:
    span, colon, step_token = item.partition(":")
    first, dash, second = span.partition("-")
    start = _parse_number(first, item)
    end = _parse_number(second, item) if dash else None
    step = _parse_number(step_token, item) if colon else None
    if end is None:
        if step is not None:
            raise UsageError(f'Invalid range "{item}": a step needs an end (A-B:S)')
        return (start, start, 1)
    if end < start:
        raise UsageError(f'Invalid range "{item}": the end is smaller than the start')
    if step is None:
        return (start, end, 1)
    if not 0 < step <= end - start:
        if end == start:
            raise UsageError(f'Invalid range "{item}": a step needs at least two IDs (A<B)')
        raise UsageError(f'Invalid range "{item}": the step must be between 1 and {end - start}')
    return (start, start + (end - start) // step * step, step)


def common_id(a: Item, b: Item) -> int | None:
    """The smallest ID in both items, or None (CRT on the two arithmetic progressions)."""
    (a0, a_last, sa), (b0, b_last, sb) = a, b
    low, high = max(a0, b0), min(a_last, b_last)
    if low > high:
        return None
    g = gcd(sa, sb)
    if (b0 - a0) % g:
        return None
    mb = sb // g
    k = (b0 - a0) // g * pow(sa // g, -1, mb) % mb if mb > 1 else 0
    period = sa // g * sb
    first = low + (a0 + sa * k - low) % period
    return first if first <= high else None


def clean_item(item: Item, what: str = "ID range") -> Item:
    """`item` with `last` on its progression (and step 1 for a single ID); ValueError if
    it is no valid item."""
    start, last, step = item
    if not (0 <= start <= last <= MAX_ID) or step < 1:
        raise ValueError(f"invalid {what} item {(start, last, step)}")
    last = start + (last - start) // step * step
    return (start, last, 1) if start == last else (start, last, step)


def merge_adjacent(items: Iterable[Item]) -> list[Item]:
    """Sorted items with runs (step 1) that touch joined into one."""
    merged: list[Item] = []
    for item in items:
        if merged and item[2] == 1 and merged[-1][2] == 1 and merged[-1][1] + 1 == item[0]:
            merged[-1] = (merged[-1][0], item[1], 1)
        else:
            merged.append(item)
    return merged


def _normalize(items: Iterable[Item]) -> tuple[tuple[Item, ...], tuple[Item, Item, int] | None]:
    """Validates, sorts and merges items; returns them or the first clash (a, b, id)."""
    fixed = sorted(clean_item(item) for item in items)
    active: list[Item] = []
    for item in fixed:
        active = [other for other in active if other[1] >= item[0]]
        for other in active:
            common = common_id(other, item)
            if common is not None:
                return (), (other, item, common)
        active.append(item)
    return tuple(merge_adjacent(fixed)), None


def runs(ids: Iterable[int]) -> Iterator[Item]:
    """Ascending IDs (repeats are skipped) as consecutive runs; ValueError if unsorted."""
    start = previous = -1
    for value in ids:
        if previous < 0:
            if value < 0:
                raise ValueError(f"negative ID {value}")
            start = previous = value
        elif value == previous + 1:
            previous = value
        elif value > previous:
            yield (start, previous, 1)
            start = previous = value
        elif value < previous:
            raise ValueError(f"IDs are not sorted: {value} after {previous}")
    if previous >= 0:
        yield (start, previous, 1)


def _format_item(item: Item) -> str:
    start, last, step = item
    if start == last:
        return str(start)
    if step == 1:
        return f"{start}-{last}"
    return f"{start}-{last}:{step}"


def ordered_runs(ids: Sequence[int]) -> list[Item]:
    """Distinct IDs in any order as (start, last, step) runs (step > 0) that expand back
    to the same sequence, order included: a worker's batch of finished tasks keeps its
    report order (the worker's `finished-ids` items, the model's `tasks-finished`)."""
    out: list[Item] = []
    index = 0
    count = len(ids)
    while index < count:
        start = ids[index]
        if index + 1 < count and ids[index + 1] > start:
            step = ids[index + 1] - start
            last = index + 1
            while last + 1 < count and ids[last + 1] - ids[last] == step:
                last += 1
            out.append((start, ids[last], step))
            index = last + 1
        else:
            out.append((start, start, 1))
            index += 1
    return out

"""The task IDs of one submit as a few ranges, with positions (ranks) but no per-task cost.

A million-task array is one (start, last, step) item here. The model tracks progress
through a submit by rank (position in ascending ID order), so this set answers
rank ↔ ID and slices of ranks in O(log items). Pure data: no I/O, never expanded except
for pathological interleaved input (`0-10:2,1-11:2`), which is rebuilt as plain runs.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from math import gcd

from hyperq.common.idrange import MAX_ID

Item = tuple[int, int, int]  # (start, last, step): `last` is the last ID included


class DuplicateTaskId(ValueError):
    """Two items of one submit (or a new submit and its job) share a task ID."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} is defined more than once")
        self.task_id = task_id


def first_common(a: Item, b: Item) -> int | None:
    """The smallest ID in both items, or None (two arithmetic progressions: CRT)."""
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


def _clean(item: Sequence[int]) -> Item:
    start, last, step = (int(v) for v in item)
    if not (0 <= start <= last <= MAX_ID) or step < 1:
        raise ValueError(f"invalid task ID item {tuple(item)}")
    last = start + (last - start) // step * step
    return (start, last, 1) if start == last else (start, last, step)


def _runs(ids: Iterable[int]) -> list[Item]:
    out: list[Item] = []
    for value in ids:
        if out and out[-1][2] == 1 and out[-1][1] + 1 == value:
            out[-1] = (out[-1][0], value, 1)
        else:
            out.append((value, value, 1))
    return out


def find_clash(items: Sequence[Item], others: Sequence[Item]) -> int | None:
    """Smallest ID present in both item lists (each list already sorted by start)."""
    best: int | None = None
    for a in items:
        for b in others:
            if b[0] > a[1]:
                break
            common = first_common(a, b)
            if common is not None and (best is None or common < best):
                best = common
    return best


class TaskIdSet:
    """Sorted items with disjoint spans; rank = position in ascending ID order."""

    __slots__ = ("_len", "_prefix", "_starts", "items")

    def __init__(self, items: Sequence[Item]) -> None:
        """`items` must be clean, sorted and span-disjoint; use `build` for raw input."""
        self.items: tuple[Item, ...] = tuple(items)
        self._starts = [item[0] for item in self.items]
        prefix = [0]
        for start, last, step in self.items:
            prefix.append(prefix[-1] + (last - start) // step + 1)
        self._prefix = prefix
        self._len = prefix[-1]

    @classmethod
    def build(cls, raw: Iterable[Sequence[int]]) -> TaskIdSet:
        """Validates raw (start, last, step) items; raises DuplicateTaskId or ValueError."""
        items = sorted(_clean(item) for item in raw)
        clash: int | None = None
        interleaved = False
        active: list[Item] = []
        for item in items:
            active = [other for other in active if other[1] >= item[0]]
            for other in active:
                interleaved = True
                common = first_common(other, item)
                if common is not None and (clash is None or common < clash):
                    clash = common
            active.append(item)
        if clash is not None:
            raise DuplicateTaskId(clash)
        if interleaved:
            merged = heapq.merge(*(range(s, last + 1, step) for s, last, step in items))
            return cls(_runs(merged))
        return cls(merge_adjacent(items))

    @classmethod
    def single_run(cls, start: int, count: int) -> TaskIdSet:
        return cls([(start, start + count - 1, 1)] if count > 0 else [])

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        for start, last, step in self.items:
            yield from range(start, last + 1, step)

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, int) and self.rank(task_id) is not None

    def min(self) -> int | None:
        return self.items[0][0] if self.items else None

    def max(self) -> int | None:
        return self.items[-1][1] if self.items else None

    def rank(self, task_id: int) -> int | None:
        """Position of `task_id` (0-based), or None when it is not in the set."""
        index = bisect_right(self._starts, task_id) - 1
        if index < 0:
            return None
        start, last, step = self.items[index]
        if task_id > last or (task_id - start) % step:
            return None
        return self._prefix[index] + (task_id - start) // step

    def select(self, rank: int) -> int:
        """The ID at position `rank` (0 <= rank < len)."""
        index = bisect_right(self._prefix, rank) - 1
        start, _last, step = self.items[index]
        return start + (rank - self._prefix[index]) * step

    def slice(self, first: int, end: int) -> list[Item]:
        """IDs at ranks first..end-1 as clean items."""
        out: list[Item] = []
        if first >= end:
            return out
        index = bisect_right(self._prefix, first) - 1
        while first < end:
            start, _last, step = self.items[index]
            offset = first - self._prefix[index]
            stop = min(end, self._prefix[index + 1])
            a = start + offset * step
            b = start + (stop - 1 - self._prefix[index]) * step
            out.append((a, b, 1) if a == b else (a, b, step))
            first = stop
            index += 1
        return out


def merge_adjacent(items: list[Item]) -> list[Item]:
    merged: list[Item] = []
    for item in items:
        if merged and item[2] == 1 and merged[-1][2] == 1 and merged[-1][1] + 1 == item[0]:
            merged[-1] = (merged[-1][0], item[1], 1)
        else:
            merged.append(item)
    return merged


def items_to_ids(items: Iterable[Item]) -> Iterator[int]:
    for start, last, step in items:
        yield from range(start, last + 1, step)


def ids_to_items(sorted_ids: Iterable[int]) -> list[Item]:
    """Ascending distinct IDs as consecutive runs."""
    return _runs(sorted_ids)

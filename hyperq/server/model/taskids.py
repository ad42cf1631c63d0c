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

from hyperq.common.idrange import Item, clean_item, common_id, merge_adjacent, runs


class DuplicateTaskId(ValueError):
    """Two items of one submit (or a new submit and its job) share a task ID."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} is defined more than once")
        self.task_id = task_id


def find_clash(items: Sequence[Item], others: Sequence[Item]) -> int | None:
    """Smallest ID present in both item lists (each list already sorted by start)."""
    best: int | None = None
    for a in items:
        for b in others:
            if b[0] > a[1]:
                break
            common = common_id(a, b)
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
        items = sorted(clean_item(_ints(item), "task ID") for item in raw)
        clash: int | None = None
        interleaved = False
        active: list[Item] = []
        for item in items:
            active = [other for other in active if other[1] >= item[0]]
            for other in active:
                interleaved = True
                common = common_id(other, item)
                if common is not None and (clash is None or common < clash):
                    clash = common
            active.append(item)
        if clash is not None:
            raise DuplicateTaskId(clash)
        if interleaved:
            merged = heapq.merge(*(range(s, last + 1, step) for s, last, step in items))
            return cls(list(runs(merged)))
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


class SingleTaskId(TaskIdSet):
    """The IDs of a graph task: exactly one. A third of the memory of a general set,
    which a graph of 100,000 tasks holds 100,000 times."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: int) -> None:  # no ranges to index: nothing of the base
        self.task_id = task_id

    @property  # type: ignore[override]
    def items(self) -> tuple[Item, ...]:
        return ((self.task_id, self.task_id, 1),)

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[int]:
        yield self.task_id

    def min(self) -> int | None:
        return self.task_id

    def max(self) -> int | None:
        return self.task_id

    def rank(self, task_id: int) -> int | None:
        return 0 if task_id == self.task_id else None

    def select(self, rank: int) -> int:
        return self.task_id

    def slice(self, first: int, end: int) -> list[Item]:
        return [(self.task_id, self.task_id, 1)] if first < 1 <= end and first <= 0 else []


def items_to_ids(items: Iterable[Item]) -> Iterator[int]:
    for start, last, step in items:
        yield from range(start, last + 1, step)


def ids_to_items(sorted_ids: Iterable[int]) -> list[Item]:
    """Ascending distinct IDs as consecutive runs."""
    return list(runs(sorted_ids))


def _ints(item: Sequence[int]) -> Item:
    start, last, step = (int(v) for v in item)
    return (start, last, step)

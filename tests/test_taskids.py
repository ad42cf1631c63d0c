"""A submit's task IDs as ranges (`TaskIdSet`), checked against plain sets of IDs."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperq.server.model.taskids import (
    DuplicateTaskId,
    TaskIdSet,
    find_clash,
    ids_to_items,
    items_to_ids,
)

_item = st.tuples(st.integers(0, 60), st.integers(0, 30), st.integers(1, 7)).map(
    lambda t: (t[0], t[0] + t[1], t[2])
)


def _expand(items: list[tuple[int, int, int]]) -> list[int]:
    return [i for start, last, step in items for i in range(start, last + 1, step)]


@given(st.lists(_item, max_size=6))
def test_build_matches_the_expanded_ids(items: list[tuple[int, int, int]]) -> None:
    expanded = _expand(items)
    repeated = sorted(i for i, n in Counter(expanded).items() if n > 1)
    if repeated:
        with pytest.raises(DuplicateTaskId) as caught:
            TaskIdSet.build(items)
        assert caught.value.task_id == repeated[0]
        return
    ids = TaskIdSet.build(items)
    expected = sorted(expanded)
    assert list(ids) == expected
    assert len(ids) == len(expected)
    assert ids.min() == (expected[0] if expected else None)
    assert ids.max() == (expected[-1] if expected else None)
    for rank, task_id in enumerate(expected):
        assert ids.rank(task_id) == rank
        assert ids.select(rank) == task_id
        assert task_id in ids
    for absent in set(range(100)) - set(expected):
        assert ids.rank(absent) is None
        assert absent not in ids
    for first in range(len(expected) + 1):
        for end in range(first, len(expected) + 1):
            assert list(items_to_ids(ids.slice(first, end))) == expected[first:end]
    # Stored compactly: no two touching runs of step 1 are left unjoined.
    for a, b in pairwise(ids.items):
        assert not (a[2] == b[2] == 1 and a[1] + 1 == b[0])


@given(st.lists(_item, max_size=4), st.lists(_item, max_size=4))
def test_find_clash_is_the_smallest_shared_id(
    a: list[tuple[int, int, int]], b: list[tuple[int, int, int]]
) -> None:
    shared = set(_expand(a)) & set(_expand(b))
    clean_a = [(s, s + (last - s) // step * step, step) for s, last, step in sorted(a)]
    clean_b = [(s, s + (last - s) // step * step, step) for s, last, step in sorted(b)]
    assert find_clash(clean_a, clean_b) == (min(shared) if shared else None)


@given(st.sets(st.integers(0, 200)))
def test_ids_to_items_round_trip(ids: set[int]) -> None:
    items = ids_to_items(sorted(ids))
    assert list(items_to_ids(items)) == sorted(ids)
    assert all(step == 1 for _, _, step in items)
    assert all(a[1] + 1 < b[0] for a, b in pairwise(items))


def test_bad_items_are_refused() -> None:
    for bad in [(-1, 3, 1), (5, 3, 1), (0, 3, 0), (0, 2**32, 1)]:
        with pytest.raises(ValueError, match="invalid task ID item"):
            TaskIdSet.build([bad])


def test_a_million_ids_stay_one_item() -> None:
    ids = TaskIdSet.build([(1, 1_000_000, 1)])
    assert ids.items == ((1, 1_000_000, 1),)
    assert ids.rank(1_000_000) == 999_999
    assert ids.select(0) == 1

"""Resource coupling (cluster.md §2): parsing and validation of `--coupling`, the
descriptor's display and JSON, and the joint choice of groups in the allocator."""

from __future__ import annotations

import collections

import pytest

from hyperq.common.errors import HqError
from hyperq.common.resources import (
    ResourceDescriptor,
    ResourceDescriptorItem,
    WorkerAllocator,
    parse_coupling,
    parse_task_request,
)


def groups(name: str, *gs: list[int]) -> ResourceDescriptorItem:
    return ResourceDescriptorItem.of_groups(name, [[str(v) for v in g] for g in gs])


def output_descriptor() -> ResourceDescriptor:
    return ResourceDescriptor(
        (
            groups("cpus", [1, 2, 3], [4, 5, 6]),
            ResourceDescriptorItem.of_sum("ddd", 123 * 10_000),
            groups("foo", [10, 20, 30], [40, 50, 60]),
        )
    )


def test_output_and_json() -> None:
    # test_coupling_output
    d = parse_coupling("cpus[0]:foo[0],cpus[1]:foo[1]", output_descriptor())
    assert d.summary_lines() == "cpus: 2x3 [coupled]\nddd: 123\nfoo: 2x3 [coupled]"
    assert d.summary_line() == "cpus 2x3 [coupled]; ddd 123; foo 2x3 [coupled]"
    assert d.to_json()["coupling"] == {
        "weights": [
            {
                "group1_idx": 0,
                "group2_idx": 0,
                "resource1_idx": 0,
                "resource2_idx": 2,
                "weight": 256,
            },
            {
                "group1_idx": 1,
                "group2_idx": 1,
                "resource1_idx": 0,
                "resource2_idx": 2,
                "weight": 256,
            },
        ]
    }
    assert ResourceDescriptor.from_json(d.to_json()) == d


def test_normalisation_swaps_and_sorts() -> None:
    d = parse_coupling(" foo[1] : cpus[0] = 7 , cpus[0]:cpus[1]", output_descriptor())
    assert d.coupling == ((0, 0, 0, 1, 256), (0, 0, 2, 1, 7))


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("goo[0]:foo[1]", "Resource not found: goo"),
        ("cpus[0]:foo[1]=x", "Invalid weight: x"),
        ("cpus[0]:foo[1]=70000", "Invalid weight: 70000"),
        ("cpus[0]foo[1]", "Missing ':'"),
        ("cpus[0:foo[1]", "Missing ']'"),
        ("cpus0]:foo[1]", "Missing '['"),
        ("cpus[a]:foo[1]", "Invalid group index: a"),
        ("cpus[256]:foo[1]", "Invalid group index: 256"),
        ("cpus[0]:foo[0],foo[0]:cpus[0]=3", "Repeated coupling definition"),
        ("cpus[0]:ddd[0]", "Resource 'ddd' has only a single group"),
        ("cpus[0]:foo[3]", "Invalid group id 3 for resource 'foo'"),
    ],
)
def test_errors(spec: str, error: str) -> None:
    with pytest.raises(HqError) as info:
        parse_coupling(spec, output_descriptor())
    assert str(info.value) == error


def test_single_group_kinds_are_refused() -> None:
    d = ResourceDescriptor(
        (
            ResourceDescriptorItem.of_range("cpus", 0, 3),
            ResourceDescriptorItem.of_list("xxx", ["1", "2", "3"]),
            groups("yyy", [1, 2, 3], [10, 11]),
        )
    )
    with pytest.raises(HqError, match="Resource 'xxx' has only a single group"):
        parse_coupling("xxx[0]:yyy[0]", d)
    with pytest.raises(HqError, match="Resource 'cpus' has only a single group"):
        parse_coupling("cpus[0]:yyy[0]", d)


def combined_worker() -> WorkerAllocator:
    d = ResourceDescriptor(
        (
            groups("cpus", [1, 2, 3, 4], [11, 12, 13, 14], [21, 22, 23, 24]),
            groups("foo", [1, 2], [10, 11], [22, 21]),
        )
    )
    return WorkerAllocator(parse_coupling("cpus[0]:foo[0],cpus[1]:foo[1],cpus[2]:foo[2]", d))


def counts(labels: list[str]) -> list[int]:
    return sorted(collections.Counter(int(label) // 10 for label in labels).values())


@pytest.mark.parametrize(
    ("cpus", "foo", "expected"),
    [
        # test_coupling_combined, as the original's test states it.
        ("6 tight", "2 tight", ([2, 4], [2])),
        ("6 scatter", "2 scatter", ([2, 2, 2], [1, 1])),
        ("6 compact", "2 compact", ([3, 3], [1, 1])),
        ("6 tight", "2 compact", ([2, 4], [1, 1])),
        ("6 compact", "2 tight", ([3, 3], [2])),
        ("6 scatter", "2 tight", ([2, 2, 2], [2])),
        ("6 scatter", "2 compact", ([2, 2, 2], [2])),
        ("6 tight!", "2 tight!", ([2, 4], [2])),
    ],
)
def test_combined(cpus: str, foo: str, expected: tuple[list[int], list[int]]) -> None:
    allocation = combined_worker().try_allocate(parse_task_request(cpus, [f"foo={foo}"]))
    assert allocation is not None
    assert (counts(allocation.labels("cpus")), counts(allocation.labels("foo"))) == expected


def test_tight_foo_lands_in_a_group_coupled_with_the_cpus() -> None:
    allocation = combined_worker().try_allocate(parse_task_request("6 tight", ["foo=2 tight"]))
    assert allocation is not None
    cpu_groups = {int(label) // 10 for label in allocation.labels("cpus")}
    foo_groups = {int(label) // 10 for label in allocation.labels("foo")}
    assert foo_groups <= cpu_groups


def test_every_task_from_one_coupled_pair() -> None:
    # test_coupling_alloc1: cpus=1 + foo=3/1 compact! tasks fill the worker pair by pair.
    d = ResourceDescriptor(
        (
            groups("cpus", [1, 2, 3], [4, 5, 6]),
            ResourceDescriptorItem.of_sum("ddd", 123 * 10_000),
            groups("foo", [10, 20, 30, 40], [50, 60, 70, 80]),
        )
    )
    allocator = WorkerAllocator(parse_coupling("cpus[0]:foo[0],cpus[1]:foo[1]", d))
    held = []
    for request in (
        parse_task_request("1", ["foo=3 compact!"]),
        parse_task_request("1", ["foo=1 compact!"]),
    ) * 3:
        allocation = allocator.try_allocate(request)
        if allocation is None:
            continue
        held.append(allocation)
        cpu = {(int(v) - 1) // 3 for v in allocation.labels("cpus")}
        foo = {int(v) // 50 for v in allocation.labels("foo")}
        assert cpu == foo and len(cpu) == 1
    assert len(held) == 4  # two pairs, each one foo=3 and one foo=1
    for allocation in held:
        allocator.release(allocation)
    assert allocator.is_idle()


def test_multi_group_requests_stay_on_coupled_pairs() -> None:
    # test_coupling_alloc2: each task touches exactly two coupled pairs.
    d = ResourceDescriptor(
        (
            groups("cpus", [1, 2, 3], [10, 11, 12], [21, 22, 23]),
            ResourceDescriptorItem.of_sum("ddd", 123 * 10_000),
            groups("foo", [1, 2, 3], [10, 11, 12], [20, 21, 23]),
        )
    )
    coupled = parse_coupling("cpus[0]:foo[0],cpus[1]:foo[1],cpus[2]:foo[2]", d)
    for cpus, foo in (("4", "2"), ("2", "4")):
        allocation = WorkerAllocator(coupled).try_allocate(parse_task_request(cpus, [f"foo={foo}"]))
        assert allocation is not None
        touched = {int(v) // 10 for v in allocation.labels("cpus") + allocation.labels("foo")}
        assert len(touched) == 2


def test_strict_policy_waits_for_a_good_enough_choice() -> None:
    allocator = combined_worker()
    blocker = allocator.try_allocate(parse_task_request("3 scatter"))
    assert blocker is not None
    # One CPU gone from every group: 8 CPUs now need three groups where two would do on
    # an empty worker, so the strict request waits (cluster.md §2.2).
    strict = parse_task_request("8 compact!", ["foo=2 compact!"])
    assert allocator.try_allocate(strict) is None
    allocator.release(blocker)
    assert allocator.try_allocate(strict) is not None

"""Resource descriptors, requests and the per-worker allocator (pure, no I/O but /proc)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperq.common.errors import HqError, UsageError
from hyperq.common.resources import (
    AMOUNT_SCALE,
    CPUS,
    AllocationPolicy,
    ResourceDescriptor,
    ResourceDescriptorItem,
    ResourceKind,
    ResourceRequest,
    ResourceRequestEntry,
    WorkerAllocator,
    detect_cpus,
    detect_gpus,
    detect_memory,
    detect_resources,
    env_name_suffix,
    fits_ever,
    format_amount,
    parse_amount,
    parse_detect_list,
    parse_request_entry,
    parse_resource_definition,
    parse_task_request,
    parse_worker_resources,
)
from hyperq.common.resources import Allocation as Alloc


def workers(cpus: str | None, *resources: str) -> ResourceDescriptor:
    return parse_worker_resources(cpus, list(resources), detect="none")


def cpu_request(text: str) -> ResourceRequest:
    return parse_task_request(text)


def groups_of(labels: list[str], size: int) -> set[int]:
    return {int(label) // size for label in labels}


# --- amounts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount"),
    [("1", 10_000), ("0.5", 5_000), ("1.1", 11_000), ("2.0001", 20_001), ("1_000", 10_000_000)],
)
def test_parse_amount(text: str, amount: int) -> None:
    assert parse_amount(text) == amount


@pytest.mark.parametrize("text", ["", "x", "1.23456", "-1", "1.", ".5", "1e3"])
def test_parse_amount_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_amount(text)


@given(st.integers(min_value=0, max_value=10**12))
def test_amount_text_round_trip(amount: int) -> None:
    assert parse_amount(format_amount(amount)) == amount


def test_format_amount() -> None:
    assert format_amount(20_000) == "2"
    assert format_amount(11_000) == "1.1"
    assert format_amount(1) == "0.0001"


def test_env_name_suffix() -> None:
    assert env_name_suffix("gpus/nvidia") == "gpus_nvidia"
    assert env_name_suffix("a-b:1") == "a_b_1"


# --- worker definitions ---------------------------------------------------------------


def test_parse_definition_forms() -> None:
    assert parse_resource_definition("cpus", "4") == ResourceDescriptorItem.of_range("cpus", 0, 3)
    assert parse_resource_definition("cpus", "0") == ResourceDescriptorItem.of_sum("cpus", 0)
    assert parse_resource_definition("cpus", "1x3") == ResourceDescriptorItem.of_range("cpus", 0, 2)
    assert parse_resource_definition("cpus", "2x3").groups == (("0", "1", "2"), ("3", "4", "5"))
    assert parse_resource_definition("x", "range(3-7)") == ResourceDescriptorItem.of_range(
        "x", 3, 7
    )
    assert parse_resource_definition("x", " range( 3 - 3 ) ").end == 3
    assert parse_resource_definition("x", "sum(1000_1000)").size == 10_001_000 * AMOUNT_SCALE
    assert parse_resource_definition("x", "sum(0.5)").size == 5_000
    assert parse_resource_definition("x", "[1,3,5,2]").values == ("1", "3", "5", "2")
    item = parse_resource_definition("x", "[[100, 200, 300], [400, 500, 600]]")
    assert item.kind == ResourceKind.GROUPS
    assert item.groups == (("100", "200", "300"), ("400", "500", "600"))
    # A single group degrades to a list.
    assert parse_resource_definition("x", "[[a, b]]") == ResourceDescriptorItem.of_list(
        "x", ["a", "b"]
    )
    quoted = parse_resource_definition("x", '["foo [,]", bar, "my resource"]')
    assert quoted.values == ("foo [,]", "bar", "my resource")


@pytest.mark.parametrize(
    "text",
    ["", "abc", "[", "[a,", "[a b", "[]", "[a,a]", "[[a],b]", "[[a],[a]]", "[[a],[]]",
     "range(5-3)", "range(1)", "[a]x", "0x3", '["a]', "[[[a]],[b]]", "sum(-1)", "sum(x)"],
)  # fmt: skip
def test_parse_definition_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_resource_definition("x", text)


def test_cpus_cannot_be_sum() -> None:
    message = "Resource kind `sum` cannot be used with CPUs. CPUs must have identity"
    with pytest.raises(HqError, match=message):
        parse_resource_definition("cpus", "sum(4)")
    with pytest.raises(HqError, match=message):
        workers(None, "cpus=sum(4)")


def test_worker_resources_errors() -> None:
    with pytest.raises(HqError, match=r"^Parameters --cpus and --resource cpus=\.\.\. cannot"):
        workers("4", "cpus=4")
    with pytest.raises(HqError, match="You have to specify --cpus explicitly"):
        workers(None)
    with pytest.raises(HqError, match="You have to specify --cpus explicitly"):
        parse_worker_resources(None, ["gpus=[0]"], detect="mem,gpus/nvidia")
    with pytest.raises(HqError, match="defined more than once"):
        workers("4", "a=[1]", "a=[2]")
    with pytest.raises(UsageError):
        workers("4", "novalue")
    with pytest.raises(UsageError):
        workers("4", "1abc=[1]")
    with pytest.raises(UsageError):
        parse_worker_resources("4", [], detect="cpus,disks")


def test_cpus_via_resource_option() -> None:
    desc = workers(None, "cpus=[[0,1],[2,3]]", "gpus/nvidia=[0,1]")
    assert desc.names() == ["cpus", "gpus/nvidia"]
    assert desc.get(CPUS) is not None


def test_worker_list_summary() -> None:
    desc = workers("4x2", "potato=range(1-12)", "fairy=sum(1000_1000)", "shark=[1,3,5,2]")
    assert desc.summary_line() == "cpus 4x2; fairy 10001000; potato 12; shark 4"
    assert desc.summary_lines() == "cpus: 4x2\nfairy: 10001000\npotato: 12\nshark: 4"


@pytest.mark.parametrize(
    ("cpus", "summary"),
    [
        ("10", "10"),
        ("4x5", "4x5"),
        ("[[100, 200, 300], [400, 500, 600]]", "2x3"),
        ("[[0, 1], [2], [10, 11, 12]]", "1x1 1x2 1x3"),
        ("[[0], [1, 2], [3], [4, 5]]", "2x1 2x2"),
        ("[a,b,c]", "3"),
    ],
)
def test_cpu_summaries(cpus: str, summary: str) -> None:
    assert workers(cpus).summary_line() == f"cpus {summary}"


@pytest.mark.parametrize(
    ("mib", "shown"),
    [("100", "100.00 MiB"), ("511.5", "511.50 MiB"), ("512", "0.50 GiB"), ("2048", "2.00 GiB")],
)
def test_mem_summary(mib: str, shown: str) -> None:
    assert workers("1", f"mem=sum({mib})").get("mem").summary() == shown  # type: ignore[union-attr]


def test_full_description() -> None:
    desc = workers("2x2", "a=range(3-3)", "b=range(1-4)", "c=sum(5)", 'd=[x,"y z"]')
    assert desc.full_description() == (
        'a: [3]\nb: range(1-4)\nc: sum(5)\ncpus: [[0,1],[2,3]]\nd: [x,"y z"]'
    )


def test_item_json_shapes() -> None:
    desc = workers("2x2", "r=range(1-3)", "s=sum(2)", "l=[a,b]")
    assert desc.to_json() == {
        "resources": [
            {"name": "cpus", "kind": "groups", "groups": [["0", "1"], ["2", "3"]]},
            {"name": "l", "kind": "list", "values": ["a", "b"]},
            {"name": "r", "kind": "range", "start": 1, "end": 3},
            {"name": "s", "kind": "sum", "size": 20_000},
        ],
        "coupling": {"weights": []},
    }
    assert workers("3").to_json()["resources"] == [
        {"name": "cpus", "kind": "range", "start": 0, "end": 2}
    ]
    assert ResourceDescriptor.from_json(json.loads(json.dumps(desc.to_json()))) == desc


def test_descriptor_sorted_by_name() -> None:
    desc = ResourceDescriptor(
        (ResourceDescriptorItem.of_sum("z", 1), ResourceDescriptorItem.of_range("cpus", 0, 0))
    )
    assert desc.names() == ["cpus", "z"]


labels = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1)
names = st.from_regex(r"[A-Za-z][A-Za-z0-9/]{0,8}", fullmatch=True)
items = st.one_of(
    st.builds(
        lambda n, a, b: ResourceDescriptorItem.of_range(n, min(a, b), max(a, b)),
        names,
        st.integers(0, 1000),
        st.integers(0, 1000),
    ),
    st.builds(ResourceDescriptorItem.of_sum, names, st.integers(0, 10**15)),
    st.builds(ResourceDescriptorItem.of_list, names, st.lists(labels, min_size=1, unique=True)),
    st.builds(
        lambda n, ls, cut: ResourceDescriptorItem.of_groups(n, [ls[:cut], ls[cut:]]),
        names,
        st.lists(labels, min_size=2, max_size=8, unique=True),
        st.integers(1, 1),
    ),
)


@given(items)
def test_item_json_round_trip(item: ResourceDescriptorItem) -> None:
    assert ResourceDescriptorItem.from_json(json.loads(json.dumps(item.to_json()))) == item


@given(items.filter(lambda i: i.kind != ResourceKind.SUM))
def test_kind_text_parses_back(item: ResourceDescriptorItem) -> None:
    parsed = parse_resource_definition(item.name, item.kind_text())
    assert parsed.label_groups() == item.label_groups()


# --- detection -------------------------------------------------------------------------


def test_detect_list() -> None:
    assert parse_detect_list("all") == ["cpus", "mem", "gpus/nvidia", "gpus/amd"]
    assert parse_detect_list("none") == []
    assert parse_detect_list("mem, cpus,mem") == ["mem", "cpus"]
    assert detect_resources("none") == []


@pytest.mark.parametrize("no_ht", [False, True])
def test_detect_cpus(no_ht: bool) -> None:
    item = detect_cpus(no_ht)
    assert item.name == CPUS
    assert item.is_indexed and item.unit_count() >= 1


def test_detect_cpus_through_worker_resources() -> None:
    desc = parse_worker_resources(None, [], detect="cpus")
    assert desc.names() == ["cpus"]
    # An explicit definition wins over detection.
    assert parse_worker_resources("7", [], detect="all").get(CPUS).unit_count() == 7  # type: ignore[union-attr]


def test_detect_memory(tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    item = detect_memory(str(meminfo))
    assert item == ResourceDescriptorItem.of_sum("mem", 16000 * AMOUNT_SCALE)
    assert item.summary() == "15.62 GiB"
    assert detect_memory(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("var", "name"),
    [
        ("CUDA_VISIBLE_DEVICES", "gpus/nvidia"),
        ("HIP_VISIBLE_DEVICES", "gpus/amd"),
        ("ROCR_VISIBLE_DEVICES", "gpus/amd"),
    ],
)
def test_detect_gpus_from_env(var: str, name: str) -> None:
    item = detect_gpus(name, {var: "1,3"})
    assert item is not None
    assert f"{item.name}: {item.kind_text()}" == f"{name}: [1,3]"


def test_detect_gpu_uuids_and_absence() -> None:
    item = detect_gpus("gpus/nvidia", {"CUDA_VISIBLE_DEVICES": "foo,bar"})
    assert item is not None and item.kind_text() == "[foo,bar]"
    assert detect_gpus("gpus/amd", {}) is None


# --- requests -------------------------------------------------------------------------


def test_request_default_cpus_first() -> None:
    req = parse_task_request(None, ["fairy=2", "gpus/nvidia=1 scatter"])
    assert [e.text() for e in req.entries] == ["1 compact", "2 compact", "1 scatter"]
    assert req.entries[0].name == "cpus"
    assert req.display_lines() == ["cpus: 1 compact", "fairy: 2 compact", "gpus/nvidia: 1 scatter"]
    # Multi-node tasks store the implicit CPUs too (cluster.md §1.1), shown as nodes only.
    multi = parse_task_request(None, [], n_nodes=2)
    assert [e.text() for e in multi.entries] == ["1 compact"]
    assert multi.display_lines() == ["nodes: 2"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("2", "2 compact"),
        ("4 compact!", "4 compact!"),
        ("2 scatter", "2 scatter"),
        ("1.1", "1.1 compact"),
        ("3 tight", "3 tight"),
        (" 3   tight! ", "3 tight!"),
        ("all", "all"),
        ("1_000", "1000 compact"),
    ],
)
def test_request_display(text: str, shown: str) -> None:
    assert parse_task_request(text).entries[0].text() == shown


def test_request_errors() -> None:
    with pytest.raises(HqError, match=r"^Zero resources cannot be requested$"):
        parse_task_request("0")
    with pytest.raises(HqError, match=r"^Zero resources cannot be requested$"):
        parse_task_request(None, ["x=0.0"])
    with pytest.raises(HqError, match=r"^--cpus and --resource cpus=\.\.\. cannot be combined$"):
        parse_task_request("1", ["cpus=2"])
    with pytest.raises(HqError, match=r"^Resource 'x' defined more than once$"):
        parse_task_request(None, ["x=1", "x=2"])
    for bad in ("two", "1 loose", "1 compact extra", "", "all compact"):
        with pytest.raises(UsageError):
            parse_task_request(bad)


def test_request_cpus_via_resource() -> None:
    req = parse_task_request(None, ["x=1", "cpus=3 scatter"])
    assert [(e.name, e.text()) for e in req.entries] == [("x", "1 compact"), ("cpus", "3 scatter")]


def test_request_json_shape() -> None:
    req = parse_task_request("2 compact!", ["a=1.5 tight", "b=all", "c=1 tight!", "d=3 scatter"])
    assert req.to_json() == {
        "n_nodes": 0,
        "min_time": 0.0,
        "weight": 10000,
        "resources": [
            {"resource": "cpus", "request": {"ForceCompact": 20_000}},
            {"resource": "a", "request": {"Tight": 15_000}},
            {"resource": "b", "request": "All"},
            {"resource": "c", "request": {"ForceTight": 10_000}},
            {"resource": "d", "request": {"Scatter": 30_000}},
        ],
    }
    assert parse_task_request(None).to_json()["resources"] == [
        {"resource": "cpus", "request": {"Compact": 10_000}}
    ]
    assert ResourceRequest.from_json(json.loads(json.dumps(req.to_json()))) == req


def test_request_is_hashable_and_shared() -> None:
    a = parse_task_request("2", ["x=1"], min_time=5.0)
    b = parse_task_request("2", ["x=1"], min_time=5.0)
    assert a == b and hash(a) == hash(b)
    assert len({a, b, parse_task_request("3")}) == 2
    with pytest.raises(ValueError):
        ResourceRequest((ResourceRequestEntry("x", 1), ResourceRequestEntry("x", 2)))


def test_request_weight_and_nodes_display() -> None:
    req = parse_task_request(None, [], weight=15_000)
    assert req.display_lines() == ["cpus: 1 compact", "[weight: 1.5]"]
    # Multi-node: exactly `nodes: N`, no weight (cluster.md §1.6).
    req = parse_task_request(None, [], n_nodes=2, weight=15_000)
    assert req.display_lines() == ["nodes: 2"]


entries = st.builds(
    ResourceRequestEntry,
    names,
    st.integers(1, 10**9),
    st.sampled_from(list(AllocationPolicy)),
)
requests = st.builds(
    ResourceRequest,
    st.lists(entries, max_size=4, unique_by=lambda e: e.name).map(tuple),
    st.integers(0, 8),
    st.floats(0, 1e6, allow_nan=False),
    st.integers(1, 10**6),
)


@given(requests)
def test_request_wire_round_trip(req: ResourceRequest) -> None:
    assert ResourceRequest.from_wire(json.loads(json.dumps(req.to_wire()))) == req


# --- allocator ------------------------------------------------------------------------


def test_compact_strict_on_groups() -> None:
    alloc = WorkerAllocator(workers("3x4"))
    four = alloc.try_allocate(cpu_request("4 compact!"))
    assert four is not None
    assert len(four.cpu_labels()) == 4 and len(groups_of(four.cpu_labels(), 4)) == 1
    alloc.release(four)
    five = alloc.try_allocate(cpu_request("5 compact!"))
    assert five is not None
    assert len(five.cpu_labels()) == 5 and len(groups_of(five.cpu_labels(), 4)) == 2


def test_compact_strict_waits_when_fragmented() -> None:
    alloc = WorkerAllocator(workers("3x4"))
    singles = [alloc.try_allocate(cpu_request("1 scatter")) for _ in range(3)]
    assert all(s is not None for s in singles)
    # Every group has 3 free CPUs: 4 fit in total but not in one group.
    assert alloc.try_allocate(cpu_request("4 compact!")) is None
    assert alloc.try_allocate(cpu_request("4 tight!")) is None
    relaxed = alloc.try_allocate(cpu_request("4 compact"))
    assert relaxed is not None and len(groups_of(relaxed.cpu_labels(), 4)) == 2


def test_scatter_spreads() -> None:
    alloc = WorkerAllocator(workers("3x4"))
    two = alloc.try_allocate(cpu_request("2 scatter"))
    assert two is not None and len(groups_of(two.cpu_labels(), 4)) == 2
    five = alloc.try_allocate(cpu_request("5 scatter"))
    assert five is not None and len(groups_of(five.cpu_labels(), 4)) == 3


@pytest.mark.parametrize(
    ("request_text", "shape"),
    [("6 compact", [3, 3]), ("6 tight", [4, 2]), ("6 scatter", [2, 2, 2]), ("4 compact", [4])],
)
def test_policy_shapes_from_docs(request_text: str, shape: list[int]) -> None:
    alloc = WorkerAllocator(workers("3x4"))
    got = alloc.try_allocate(cpu_request(request_text))
    assert got is not None
    per_group = Counter(int(label) // 4 for label in got.cpu_labels())
    assert sorted(per_group.values(), reverse=True) == shape


def test_compact_keeps_whole_groups_free() -> None:
    alloc = WorkerAllocator(workers("3x4"))
    first = alloc.try_allocate(cpu_request("2"))
    second = alloc.try_allocate(cpu_request("2"))
    assert first is not None and second is not None
    # Both small tasks share a group, so two whole groups remain.
    assert groups_of(first.cpu_labels() + second.cpu_labels(), 4) == {0}
    assert alloc.try_allocate(cpu_request("4 compact!")) is not None
    assert alloc.try_allocate(cpu_request("4 compact!")) is not None


def test_all_takes_everything() -> None:
    alloc = WorkerAllocator(workers("3x4"))
    got = alloc.try_allocate(cpu_request("all"))
    assert got is not None
    assert got.cpu_labels() == [str(i) for i in range(12)]
    assert got.env()["HQ_CPUS"] == ",".join(str(i) for i in range(12))
    assert alloc.try_allocate(cpu_request("1")) is None
    alloc.release(got)
    assert alloc.is_idle()
    one = alloc.try_allocate(cpu_request("1"))
    assert one is not None and alloc.try_allocate(cpu_request("all")) is None


def test_all_needs_one_unit() -> None:
    desc = workers("0", "s=sum(0)", "t=sum(3)")
    req_cpu = parse_task_request("all")
    assert not fits_ever(desc, req_cpu)
    alloc = WorkerAllocator(desc)
    assert alloc.try_allocate(req_cpu) is None
    assert not fits_ever(desc, ResourceRequest((parse_request_entry("s", "all"),)))
    whole = alloc.try_allocate(ResourceRequest((parse_request_entry("t", "all"),)))
    assert whole is not None and whole.get("t").amount == 30_000  # type: ignore[union-attr]


def test_sum_resources() -> None:
    alloc = WorkerAllocator(workers("4", "mem=sum(1000)"))
    req = parse_task_request("1", ["mem=400"])
    a = alloc.try_allocate(req)
    b = alloc.try_allocate(req)
    assert a is not None and b is not None
    assert alloc.try_allocate(req) is None
    assert alloc.free_amount("mem") == 200 * AMOUNT_SCALE
    assert alloc.free_amount("cpus") == 2 * AMOUNT_SCALE
    env = a.env()
    assert env["HQ_RESOURCE_REQUEST_mem"] == "400 compact"
    assert "HQ_RESOURCE_VALUES_mem" not in env
    alloc.release(a)
    alloc.release(b)
    assert alloc.is_idle()


def test_whole_allocation_or_nothing() -> None:
    alloc = WorkerAllocator(workers("4", "gpus/nvidia=[0,1]"))
    assert alloc.try_allocate(parse_task_request("2", ["gpus/nvidia=3"])) is None
    assert alloc.is_idle()
    assert alloc.try_allocate(parse_task_request("1", ["missing=1"])) is None
    assert alloc.is_idle()


def test_fractional_sharing() -> None:
    alloc = WorkerAllocator(workers("2"))
    halves = [alloc.try_allocate(cpu_request("0.5")) for _ in range(4)]
    assert all(h is not None for h in halves)
    assert alloc.try_allocate(cpu_request("0.5")) is None
    assert sorted(h.cpu_labels()[0] for h in halves) == ["0", "0", "1", "1"]  # type: ignore[union-attr]
    for h in halves:
        alloc.release(h)  # type: ignore[arg-type]
    assert alloc.is_idle()


def test_fraction_from_a_single_unit() -> None:
    alloc = WorkerAllocator(workers("2"))
    a = alloc.try_allocate(cpu_request("0.75"))
    b = alloc.try_allocate(cpu_request("0.75"))
    assert a is not None and b is not None
    assert alloc.free_amount("cpus") == 5_000
    # 0.5 is free in total but no single unit has it.
    assert alloc.try_allocate(cpu_request("0.5")) is None
    assert alloc.try_allocate(cpu_request("0.25")) is not None


def test_fraction_above_one() -> None:
    alloc = WorkerAllocator(workers("4"))
    got = alloc.try_allocate(cpu_request("2.5"))
    assert got is not None
    shares = got.get("cpus").units  # type: ignore[union-attr]
    assert [s for _, s in shares] == [10_000, 10_000, 5_000]
    assert got.whole_cpu_count() is None
    assert got.env()["HQ_CPUS"] == ",".join(label for label, _ in shares)


def test_env_variables() -> None:
    alloc = WorkerAllocator(
        workers("4", "gpus/nvidia=[0,1]", "gpus/amd=[a,b]", "fpga=range(30-35)")
    )
    req = parse_task_request("2", ["gpus/nvidia=2", "gpus/amd=1", "fpga=1"])
    got = alloc.try_allocate(req)
    assert got is not None
    env = got.env()
    assert env["HQ_CPUS"] == "0,1"
    assert env["HQ_RESOURCE_REQUEST_cpus"] == "2 compact"
    assert env["HQ_RESOURCE_VALUES_cpus"] == "0,1"
    assert env["HQ_RESOURCE_VALUES_gpus_nvidia"] == "0,1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["ROCR_VISIBLE_DEVICES"] == env["HQ_RESOURCE_VALUES_gpus_amd"] == "a"
    assert env["HQ_RESOURCE_REQUEST_fpga"] == "1 compact"
    assert 30 <= int(env["HQ_RESOURCE_VALUES_fpga"]) <= 35
    assert got.whole_cpu_count() == 2


def test_allocation_wire_round_trip() -> None:
    alloc = WorkerAllocator(workers("2x2", "mem=sum(10)"))
    got = alloc.try_allocate(parse_task_request("1.5 scatter", ["mem=2.5"]))
    assert got is not None
    back = Alloc.from_wire(json.loads(json.dumps(got.to_wire())))
    assert back == got
    alloc.release(back)
    assert alloc.is_idle()


def test_bad_release_is_rejected_without_change() -> None:
    alloc = WorkerAllocator(workers("2"))
    got = alloc.try_allocate(cpu_request("1"))
    assert got is not None
    alloc.release(got)
    with pytest.raises(ValueError):
        alloc.release(got)
    assert alloc.is_idle() and alloc.free_amount("cpus") == 20_000


def test_fits_ever() -> None:
    desc = workers("3x4", "mem=sum(100)", "gpus/nvidia=[0]")
    assert fits_ever(desc, cpu_request("12 compact!"))
    assert not fits_ever(desc, cpu_request("13"))
    assert fits_ever(desc, cpu_request("11.5"))
    assert not fits_ever(desc, cpu_request("12.5"))
    assert fits_ever(desc, parse_task_request(None, ["mem=100", "gpus/nvidia=all"]))
    assert not fits_ever(desc, parse_task_request(None, ["mem=100.5"]))
    assert not fits_ever(desc, parse_task_request(None, ["fairy=1"]))
    assert not fits_ever(workers("4", "fairy=sum(2)"), parse_task_request(None, ["fairy=3"]))


def test_free_labels() -> None:
    alloc = WorkerAllocator(workers("[a,b,c]"))
    got = alloc.try_allocate(cpu_request("2"))
    assert got is not None
    assert alloc.free_labels("cpus") == [x for x in "abc" if x not in got.cpu_labels()]


# --- allocator invariants (hypothesis) ------------------------------------------------

descriptor_texts = st.sampled_from(["3x4", "2", "[[a,b],[c],[d,e,f]]", "range(5-9)", "1x3"])
request_entries = st.tuples(
    st.sampled_from(["cpus", "gpu", "mem"]),
    st.one_of(
        st.integers(1, 5).map(lambda n: n * AMOUNT_SCALE),
        st.integers(1, 3 * AMOUNT_SCALE),
    ),
    st.sampled_from(list(AllocationPolicy)),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.lists(request_entries, min_size=1, max_size=3)),
        st.tuples(st.just("release"), st.integers(0, 1000)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(descriptor_texts, operations)
def test_never_over_allocates(cpus: str, ops: list) -> None:
    desc = workers(cpus, "gpu=[g0,g1,g2]", "mem=sum(7.5)")
    alloc = WorkerAllocator(desc)
    live: list[Alloc] = []
    for op, arg in ops:
        if op == "alloc":
            seen: dict[str, ResourceRequestEntry] = {}
            for name, amount, policy in arg:
                amount = 0 if policy == AllocationPolicy.ALL else amount
                seen.setdefault(name, ResourceRequestEntry(name, amount, policy))
            req = ResourceRequest(tuple(seen.values()))
            got = alloc.try_allocate(req)
            if got is not None:
                assert fits_ever(desc, req)
                check_matches_request(desc, req, got)
                live.append(got)
        elif live:
            alloc.release(live.pop(arg % len(live)))
        check_accounting(desc, alloc, live)
    for got in live:
        alloc.release(got)
    assert alloc.is_idle()
    for item in desc.items:
        assert alloc.free_amount(item.name) == item.capacity()


def check_matches_request(desc: ResourceDescriptor, req: ResourceRequest, got: Alloc) -> None:
    assert [r.name for r in got.resources] == [e.name for e in req.entries]
    for entry, res in zip(req.entries, got.resources, strict=True):
        item = desc.get(entry.name)
        assert item is not None
        if entry.policy == AllocationPolicy.ALL:
            assert res.amount == item.capacity() > 0
        else:
            assert res.amount == entry.amount
        if res.indexed:
            labels = res.labels
            assert len(set(labels)) == len(labels)
            assert sum(share for _, share in res.units) == res.amount
            assert all(share == AMOUNT_SCALE for _, share in res.units[:-1])
            if entry.policy in (AllocationPolicy.FORCE_COMPACT, AllocationPolicy.FORCE_TIGHT):
                whole = [label for label, share in res.units if share == AMOUNT_SCALE]
                used = {g for g, grp in enumerate(item.label_groups()) if set(grp) & set(whole)}
                sizes = sorted((len(g) for g in item.label_groups()), reverse=True)
                best = next(i + 1 for i in range(len(sizes)) if sum(sizes[: i + 1]) >= len(whole))
                assert not whole or len(used) == best


def check_accounting(desc: ResourceDescriptor, alloc: WorkerAllocator, live: list[Alloc]) -> None:
    used: Counter[tuple[str, str]] = Counter()
    totals: Counter[str] = Counter()
    for got in live:
        for res in got.resources:
            totals[res.name] += res.amount
            for label, share in res.units:
                used[(res.name, label)] += share
    assert all(v <= AMOUNT_SCALE for v in used.values())
    for item in desc.items:
        assert totals[item.name] <= item.capacity()
        assert alloc.free_amount(item.name) == item.capacity() - totals[item.name]
    assert alloc.is_idle() == (not live or all(r.amount == 0 for g in live for r in g.resources))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from(["1", "2", "3 compact", "2 scatter", "3 tight", "5 compact!",
                             "0.5", "1.5", "4 tight!", "all"]),
            st.integers(0, 50),
        ),
        max_size=60,
    )
)
def test_kept_free_units_match_a_scan(steps: list[tuple[bool, str, int]]) -> None:
    """The allocator keeps each group's free units instead of scanning for them; after any
    sequence of allocations and releases, the kept lists equal a fresh scan, and every
    allocation it makes is one that fits."""
    alloc = WorkerAllocator(workers("3x4"))
    held: list[Alloc] = []
    for allocate, text, pick in steps:
        if allocate or not held:
            got = alloc.try_allocate(cpu_request(text))
            if got is not None:
                held.append(got)
        else:
            alloc.release(held.pop(pick % len(held)))
        pool = alloc._indexed[CPUS]
        scanned = [[u for u in g if pool.free[u] == AMOUNT_SCALE] for g in pool.groups]
        assert pool.whole_units == scanned
        assert pool.whole_free == sum(len(units) for units in scanned)
        assert all(0 <= share <= AMOUNT_SCALE for share in pool.free)
    for allocation in held:
        alloc.release(allocation)
    assert alloc._indexed[CPUS].is_full()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.booleans(), min_size=1, max_size=6), min_size=1, max_size=5),
    st.sampled_from(list(AllocationPolicy)),
)
def test_one_unit_fast_path_picks_what_the_general_path_picks(
    groups: list[list[bool]], policy: AllocationPolicy
) -> None:
    from hyperq.common.resources import _IndexedPool

    if policy == AllocationPolicy.ALL:
        return
    labels = [f"{g}.{u}" for g, units in enumerate(groups) for u in range(len(units))]
    unit_groups: list[list[int]] = []
    free_units: list[list[int]] = []
    index = 0
    for units in groups:
        unit_groups.append(list(range(index, index + len(units))))
        free_units.append([index + u for u, free in enumerate(units) if free])
        index += len(units)
    group_of = [g for g, units in enumerate(unit_groups) for _ in units]
    pool = _IndexedPool(labels, group_of, unit_groups, [AMOUNT_SCALE] * len(labels))
    assert pool._choose_whole(policy, 1, free_units) == pool._choose_general(
        policy, 1, free_units
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["3x4", "8", "2x2"]),
    st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from(["1", "1 scatter", "1 tight", "1 compact!", "1 tight!", "2",
                             "0.5", "all"]),
            st.integers(0, 50),
        ),
        max_size=60,
    ),
)
def test_one_unit_allocations_are_what_the_general_path_makes(
    cpus: str, steps: list[tuple[bool, str, int]]
) -> None:
    """A one-whole-unit request takes its unit (and a shared, already made allocation)
    on a short path: the same allocations and the same pool state as the general one."""
    fast = WorkerAllocator(workers(cpus))
    general = WorkerAllocator(workers(cpus))
    general._one_pool = lambda request: None  # type: ignore[method-assign]
    held: list[tuple[Alloc, Alloc]] = []
    for allocate, text, pick in steps:
        if allocate or not held:
            request = cpu_request(text)
            got = fast.try_allocate(request)
            made = general.try_allocate(request)
            assert got == made
            if got is not None and made is not None:
                held.append((got, made))
        else:
            one, other = held.pop(pick % len(held))
            fast.release(one)
            general.release(other)
        assert fast._indexed[CPUS].free == general._indexed[CPUS].free
        assert fast._indexed[CPUS].whole_units == general._indexed[CPUS].whole_units

"""Resources: what a worker offers, what a task asks for, and who gets which unit.

Shared by the CLI (parsing, display), the worker (descriptor, task env) and the server
(scheduling), so it must stay cheap to import: standard library only, and no I/O except
inside the explicit `detect_*` functions, which read /proc and /sys. The allocator is
pure: no clock, no randomness, same answers for the same calls.

Amounts are integers in units of 1/10 000 (`AMOUNT_SCALE`), so `1.5` is 15 000.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hyperq.common.errors import HqError, UsageError

AMOUNT_SCALE = 10_000
"""Fixed-point scale of every resource amount (four decimal places)."""

CPUS = "cpus"
MEM = "mem"
GPUS_NVIDIA = "gpus/nvidia"
GPUS_AMD = "gpus/amd"

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9/]*\Z")
_AMOUNT_RE = re.compile(r"(\d[\d_]*)(?:\.(\d[\d_]*))?\Z")


# ---------------------------------------------------------------------------------------
# Amounts


def parse_amount(text: str) -> int:
    """`'1.25'` → 12500. Integers or decimals with at most four fractional digits."""
    match = _AMOUNT_RE.match(text.strip())
    if match is None:
        raise UsageError(f"Invalid resource amount `{text}`")
    whole = match.group(1).replace("_", "")
    frac = (match.group(2) or "").replace("_", "")
    if len(frac) > 4:
        raise UsageError(f"Invalid resource amount `{text}`: at most 4 decimal places allowed")
    return int(whole) * AMOUNT_SCALE + int(frac.ljust(4, "0") or "0")


def format_amount(amount: int) -> str:
    """12500 → `'1.25'`, 20000 → `'2'`."""
    whole, frac = divmod(amount, AMOUNT_SCALE)
    if frac == 0:
        return str(whole)
    return f"{whole}.{str(frac).rjust(4, '0').rstrip('0')}"


def env_name_suffix(name: str) -> str:
    """Resource name as it appears in `HQ_RESOURCE_*_<n>` variable names."""
    return re.sub(r"[^A-Za-z0-9]", "_", name)


def check_resource_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"Invalid resource name `{name}`: it must start with an ASCII letter and "
            "contain only ASCII letters, digits and `/`"
        )
    return name


# ---------------------------------------------------------------------------------------
# Worker side: resource descriptors


class ResourceKind(StrEnum):
    RANGE = "range"
    LIST = "list"
    GROUPS = "groups"
    SUM = "sum"


@dataclass(frozen=True)
class ResourceDescriptorItem:
    """One resource pool of a worker.

    Only the fields of its kind are meaningful: `start`/`end` (inclusive) for range,
    `values` for list, `groups` for groups, `size` (×10 000) for sum.
    """

    name: str
    kind: ResourceKind
    start: int = 0
    end: int = 0
    values: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()
    size: int = 0

    @staticmethod
    def of_range(name: str, start: int, end: int) -> ResourceDescriptorItem:
        return ResourceDescriptorItem(name, ResourceKind.RANGE, start=start, end=end)

    @staticmethod
    def of_list(name: str, values: Iterable[str]) -> ResourceDescriptorItem:
        return ResourceDescriptorItem(name, ResourceKind.LIST, values=tuple(values))

    @staticmethod
    def of_groups(name: str, groups: Iterable[Iterable[str]]) -> ResourceDescriptorItem:
        """Several groups; a single group degrades to a list."""
        gs = tuple(tuple(g) for g in groups)
        if len(gs) == 1:
            return ResourceDescriptorItem.of_list(name, gs[0])
        return ResourceDescriptorItem(name, ResourceKind.GROUPS, groups=gs)

    @staticmethod
    def of_sum(name: str, size: int) -> ResourceDescriptorItem:
        return ResourceDescriptorItem(name, ResourceKind.SUM, size=size)

    @property
    def is_indexed(self) -> bool:
        return self.kind != ResourceKind.SUM

    def label_groups(self) -> tuple[tuple[str, ...], ...]:
        """Labels of an indexed pool as groups (range and list are one group)."""
        if self.kind == ResourceKind.RANGE:
            return (tuple(str(i) for i in range(self.start, self.end + 1)),)
        if self.kind == ResourceKind.LIST:
            return (self.values,)
        if self.kind == ResourceKind.GROUPS:
            return self.groups
        return ()

    def unit_count(self) -> int:
        """Number of indexed units (0 for sum pools)."""
        if self.kind == ResourceKind.RANGE:
            return self.end - self.start + 1
        if self.kind == ResourceKind.LIST:
            return len(self.values)
        if self.kind == ResourceKind.GROUPS:
            return sum(len(g) for g in self.groups)
        return 0

    def capacity(self) -> int:
        """Total amount (×10 000) the pool offers."""
        if self.kind == ResourceKind.SUM:
            return self.size
        return self.unit_count() * AMOUNT_SCALE

    def summary(self) -> str:
        """The value shown by `worker list` / `worker info` (`4x5`, `12`, `1.50 GiB`)."""
        if self.kind == ResourceKind.GROUPS:
            sizes: dict[int, int] = {}
            for group in self.groups:
                sizes[len(group)] = sizes.get(len(group), 0) + 1
            return " ".join(f"{count}x{size}" for size, count in sorted(sizes.items()))
        if self.kind == ResourceKind.SUM:
            if self.name == MEM:
                mib = self.size / AMOUNT_SCALE
                if mib < 512:
                    return f"{mib:.2f} MiB"
                return f"{mib / 1024:.2f} GiB"
            return format_amount(self.size)
        return str(self.unit_count())

    def kind_text(self) -> str:
        """The definition as shown in `hwdetect`'s "Full Description"."""
        if self.kind == ResourceKind.RANGE:
            if self.start == self.end:
                return f"[{self.start}]"
            return f"range({self.start}-{self.end})"
        if self.kind == ResourceKind.LIST:
            return "[" + ",".join(_quote_label(v) for v in self.values) + "]"
        if self.kind == ResourceKind.GROUPS:
            inner = ",".join("[" + ",".join(_quote_label(v) for v in g) + "]" for g in self.groups)
            return f"[{inner}]"
        return f"sum({format_amount(self.size)})"

    def to_json(self) -> dict[str, Any]:
        """The ITEM object of the worker JSON (worker.md §7); also the wire form."""
        out: dict[str, Any] = {"name": self.name, "kind": str(self.kind)}
        if self.kind == ResourceKind.RANGE:
            out.update(start=self.start, end=self.end)
        elif self.kind == ResourceKind.LIST:
            out["values"] = list(self.values)
        elif self.kind == ResourceKind.GROUPS:
            out["groups"] = [list(g) for g in self.groups]
        else:
            out["size"] = self.size
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> ResourceDescriptorItem:
        try:
            name = str(data["name"])
            kind = ResourceKind(data["kind"])
            if kind == ResourceKind.RANGE:
                return ResourceDescriptorItem.of_range(name, int(data["start"]), int(data["end"]))
            if kind == ResourceKind.LIST:
                return ResourceDescriptorItem.of_list(name, (str(v) for v in data["values"]))
            if kind == ResourceKind.GROUPS:
                return ResourceDescriptorItem(
                    name,
                    kind,
                    groups=tuple(tuple(str(v) for v in g) for g in data["groups"]),
                )
            return ResourceDescriptorItem.of_sum(name, int(data["size"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"Invalid resource descriptor item: {data!r}") from error


def _quote_label(label: str) -> str:
    if label == "" or any(c in ',[]"' or c.isspace() for c in label):
        return '"' + label.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return label


DEFAULT_COUPLING_WEIGHT = 256

CouplingItem = tuple[int, int, int, int, int]
"""(resource1 index, group1, resource2 index, group2, weight); indices into the
descriptor's sorted items, normalised (resource1 ≤ resource2) and sorted (cluster.md §2)."""


@dataclass(frozen=True)
class ResourceDescriptor:
    """All resource pools of one worker, sorted by name; `cpus` is always among them.

    `coupling`: groups of different (or the same) grouped resources that tasks should
    get together (`--coupling`), as normalised CouplingItems.
    """

    items: tuple[ResourceDescriptorItem, ...]
    coupling: tuple[CouplingItem, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(sorted(self.items, key=lambda i: i.name)))

    def coupled_names(self) -> set[str]:
        """Resources named in any coupling item."""
        names = set()
        for r1, _, r2, _, _ in self.coupling:
            for index in (r1, r2):
                if 0 <= index < len(self.items):
                    names.add(self.items[index].name)
        return names

    def _summary(self, item: ResourceDescriptorItem, coupled: set[str]) -> str:
        return item.summary() + (" [coupled]" if item.name in coupled else "")

    def get(self, name: str) -> ResourceDescriptorItem | None:
        for item in self.items:
            if item.name == name:
                return item
        return None

    def names(self) -> list[str]:
        return [item.name for item in self.items]

    def summary_line(self) -> str:
        """`worker list` column: `cpus 4x5; mem 1.00 GiB`."""
        coupled = self.coupled_names()
        return "; ".join(f"{item.name} {self._summary(item, coupled)}" for item in self.items)

    def summary_lines(self) -> str:
        """`worker info` / `hwdetect` summary: one `name: value` line per resource."""
        coupled = self.coupled_names()
        return "\n".join(f"{item.name}: {self._summary(item, coupled)}" for item in self.items)

    def full_description(self) -> str:
        """`hwdetect` "Full Description": one `name: <definition>` line per resource."""
        return "\n".join(f"{item.name}: {item.kind_text()}" for item in self.items)

    def to_json(self) -> dict[str, Any]:
        """`configuration.resources` of the worker JSON (worker.md §7)."""
        return {
            "resources": [item.to_json() for item in self.items],
            "coupling": {
                "weights": [
                    {
                        "resource1_idx": r1,
                        "group1_idx": g1,
                        "resource2_idx": r2,
                        "group2_idx": g2,
                        "weight": weight,
                    }
                    for r1, g1, r2, g2, weight in self.coupling
                ]
            },
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> ResourceDescriptor:
        try:
            raw = data["resources"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"Invalid resource descriptor: {data!r}") from error
        items = tuple(ResourceDescriptorItem.from_json(i) for i in raw)
        coupling: list[CouplingItem] = []
        try:
            weights = (data.get("coupling") or {}).get("weights") or []
            for w in weights:
                coupling.append(
                    (
                        int(w["resource1_idx"]),
                        int(w["group1_idx"]),
                        int(w["resource2_idx"]),
                        int(w["group2_idx"]),
                        int(w["weight"]),
                    )
                )
        except (AttributeError, KeyError, TypeError) as error:
            raise ValueError(f"Invalid resource coupling: {data!r}") from error
        return ResourceDescriptor(items, tuple(coupling))


def _group_count(item: ResourceDescriptorItem) -> int:
    return len(item.groups) if item.kind == ResourceKind.GROUPS else 1


def parse_coupling(text: str, descriptor: ResourceDescriptor) -> ResourceDescriptor:
    """`--coupling R1[G1]:R2[G2][=W],...` against the final resource list (cluster.md
    §2.1); HqError with the original's wording for the first problem found."""
    names = [item.name for item in descriptor.items]

    def side(part: str) -> tuple[int, int]:
        part = part.strip()
        if not part.endswith("]"):
            raise HqError("Missing ']'")
        name, sep, index = part[:-1].partition("[")
        if not sep:
            raise HqError("Missing '['")
        name = name.strip()
        if name not in names:
            raise HqError(f"Resource not found: {name}")
        index = index.strip()
        if not index.isdigit() or int(index) > 255:
            raise HqError(f"Invalid group index: {index}")
        return names.index(name), int(index)

    items: list[CouplingItem] = []
    for raw in text.split(","):
        pair, sep, weight_text = raw.partition("=")
        weight = DEFAULT_COUPLING_WEIGHT
        if sep:
            weight_text = weight_text.strip()
            if not weight_text.isdigit() or int(weight_text) > 65_535:
                raise HqError(f"Invalid weight: {weight_text}")
            weight = int(weight_text)
        left, colon, right = pair.partition(":")
        if not colon:
            raise HqError("Missing ':'")
        (r1, g1), (r2, g2) = side(left), side(right)
        if r1 > r2:
            (r1, g1), (r2, g2) = (r2, g2), (r1, g1)
        items.append((r1, g1, r2, g2, weight))
    items.sort()
    for previous, item in itertools.pairwise(items):
        if previous[:4] == item[:4]:
            raise HqError("Repeated coupling definition")
    for r1, g1, r2, g2, _ in items:
        for r, g in ((r1, g1), (r2, g2)):
            item = descriptor.items[r]
            count = _group_count(item)
            if count < 2:
                raise HqError(f"Resource '{item.name}' has only a single group")
            if g >= count:
                raise HqError(f"Invalid group id {g} for resource '{item.name}'")
    return ResourceDescriptor(descriptor.items, tuple(items))


# ---------------------------------------------------------------------------------------
# Worker side: parsing `--cpus DEF` / `--resource NAME=DEF`

_GROUPS_RE = re.compile(r"(\d+)\s*x\s*(\d+)\Z")
_RANGE_RE = re.compile(r"range\s*\(\s*(\d+)\s*-\s*(\d+)\s*\)\Z")
_SUM_RE = re.compile(r"sum\s*\(\s*([^)]*?)\s*\)\Z")
_CPU_SUM_ERROR = "Resource kind `sum` cannot be used with CPUs. CPUs must have identity"


def parse_resource_definition(name: str, text: str) -> ResourceDescriptorItem:
    """One resource pool from its definition text (worker.md §2)."""
    check_resource_name(name)
    definition = text.strip()
    if definition.isascii() and definition.isdigit():
        count = int(definition)
        if count == 0:
            item = ResourceDescriptorItem.of_sum(name, 0)
        else:
            item = ResourceDescriptorItem.of_range(name, 0, count - 1)
    elif match := _GROUPS_RE.match(definition):
        sockets, cores = int(match.group(1)), int(match.group(2))
        if sockets == 0 or cores == 0:
            raise UsageError(f"Invalid resource definition `{text}`: groups cannot be empty")
        if sockets == 1:
            item = ResourceDescriptorItem.of_range(name, 0, cores - 1)
        else:
            item = ResourceDescriptorItem.of_groups(
                name,
                ([str(s * cores + c) for c in range(cores)] for s in range(sockets)),
            )
    elif match := _RANGE_RE.match(definition):
        start, end = int(match.group(1)), int(match.group(2))
        if start > end:
            raise UsageError(f"Invalid resource definition `{text}`: range start is after end")
        item = ResourceDescriptorItem.of_range(name, start, end)
    elif match := _SUM_RE.match(definition):
        if name == CPUS:
            raise HqError(_CPU_SUM_ERROR)
        item = ResourceDescriptorItem.of_sum(name, parse_amount(match.group(1)))
    elif definition.startswith("["):
        item = _parse_label_list(name, definition, text)
    else:
        raise UsageError(
            f"Invalid resource definition `{text}`: expected N, SxC, [a,b,…], "
            "[[a,b],[c,…],…], range(A-B) or sum(X)"
        )
    return item


def _parse_label_list(name: str, definition: str, text: str) -> ResourceDescriptorItem:
    try:
        value, end = _parse_bracketed(definition, 0)
    except _SyntaxProblem as problem:
        raise UsageError(f"Invalid resource definition `{text}`: {problem}") from None
    if definition[end:].strip():
        raise UsageError(f"Invalid resource definition `{text}`: unexpected text after `]`")
    if not value:
        raise UsageError(f"Invalid resource definition `{text}`: the list is empty")
    nested = [isinstance(v, list) for v in value]
    if all(nested):
        groups = [[str(v) for v in g] for g in value]
        if any(not g for g in groups):
            raise UsageError(f"Invalid resource definition `{text}`: a group is empty")
        if any(isinstance(v, list) for g in value for v in g):
            raise UsageError(f"Invalid resource definition `{text}`: lists nest two levels deep")
    elif any(nested):
        raise UsageError(f"Invalid resource definition `{text}`: mixed values and groups")
    else:
        groups = [[str(v) for v in value]]
    labels = [label for g in groups for label in g]
    if len(set(labels)) != len(labels):
        raise UsageError(f"Invalid resource definition `{text}`: values must be unique")
    return ResourceDescriptorItem.of_groups(name, groups)


class _SyntaxProblem(Exception):
    pass


def _parse_bracketed(text: str, pos: int) -> tuple[list[Any], int]:
    """Parse `[item, …]` starting at `text[pos] == '['`; items are labels or lists."""
    assert text[pos] == "["
    pos += 1
    items: list[Any] = []
    while True:
        pos = _skip_spaces(text, pos)
        if pos >= len(text):
            raise _SyntaxProblem("missing `]`")
        if text[pos] == "]" and not items:
            return items, pos + 1
        if text[pos] == "[":
            item, pos = _parse_bracketed(text, pos)
            items.append(item)
        elif text[pos] == '"':
            label, pos = _parse_quoted(text, pos)
            items.append(label)
        else:
            start = pos
            while pos < len(text) and text[pos] not in ",[]":
                pos += 1
            label = text[start:pos].strip()
            if not label:
                raise _SyntaxProblem("empty value")
            if '"' in label:
                raise _SyntaxProblem(f'unexpected `"` in `{label}`')
            items.append(label)
        pos = _skip_spaces(text, pos)
        if pos >= len(text):
            raise _SyntaxProblem("missing `]`")
        if text[pos] == "]":
            return items, pos + 1
        if text[pos] != ",":
            raise _SyntaxProblem(f"expected `,` or `]` at position {pos + 1}")
        pos += 1


def _parse_quoted(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    raise _SyntaxProblem('unterminated `"`')


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


DETECTABLE = (CPUS, MEM, GPUS_NVIDIA, GPUS_AMD)


def parse_detect_list(what: str) -> list[str]:
    """`--detect-resources` value → which well-known resources to detect."""
    text = what.strip()
    if text == "all":
        return list(DETECTABLE)
    if text == "none":
        return []
    out: list[str] = []
    for word in text.split(","):
        word = word.strip()
        if word not in DETECTABLE:
            raise UsageError(
                f"Invalid value `{word}` for --detect-resources: expected all, none or a "
                "comma-separated list of cpus, mem, gpus/nvidia, gpus/amd"
            )
        if word not in out:
            out.append(word)
    return out


def parse_worker_resources(
    cpus: str | None,
    resources: Sequence[str] = (),
    *,
    detect: str = "all",
    no_hyper_threading: bool = False,
) -> ResourceDescriptor:
    """The worker's descriptor from `--cpus`, `--resource` and `--detect-resources`.

    Explicit definitions win; detected ones fill in well-known names not given.
    Detection reads /proc and /sys (only when `detect` asks for something).
    """
    items: dict[str, ResourceDescriptorItem] = {}
    for text in resources:
        name, value = _split_named(text, "resource definition")
        if name == CPUS and cpus is not None:
            raise HqError("Parameters --cpus and --resource cpus=... cannot be combined")
        if name in items:
            raise HqError(f"Resource '{name}' defined more than once")
        items[name] = parse_resource_definition(name, value)
    if cpus is not None:
        items[CPUS] = parse_resource_definition(CPUS, cpus)
    wanted = parse_detect_list(detect)
    if CPUS not in items and CPUS not in wanted:
        raise HqError(
            "You have to specify --cpus explicitly when opting out of CPU automatic detection"
        )
    for item in detect_resources(
        ",".join(n for n in wanted if n not in items) or "none",
        no_hyper_threading=no_hyper_threading,
    ):
        items[item.name] = item
    return ResourceDescriptor(tuple(items.values()))


# ---------------------------------------------------------------------------------------
# Hardware detection (the only I/O in this module)


def detect_resources(
    what: str = "all", *, no_hyper_threading: bool = False
) -> list[ResourceDescriptorItem]:
    """Detect the well-known resources named by `what` (a `--detect-resources` value).

    Resources that cannot be found (no GPUs, no /proc) are simply left out.
    """
    out: list[ResourceDescriptorItem] = []
    for name in parse_detect_list(what):
        if name == CPUS:
            out.append(detect_cpus(no_hyper_threading))
        elif name == MEM:
            mem = detect_memory()
            if mem is not None:
                out.append(mem)
        else:
            gpus = detect_gpus(name)
            if gpus is not None:
                out.append(gpus)
    return out


def detect_cpus(no_hyper_threading: bool = False) -> ResourceDescriptorItem:
    """CPUs this process may run on, grouped by NUMA node when there are several."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    if no_hyper_threading:
        allowed = set(cpus)
        kept = []
        for cpu in cpus:
            siblings = _read_cpu_list(
                f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
            )
            # Keep a CPU only if it is the first allowed thread of its core.
            if not siblings or min(siblings & allowed, default=cpu) == cpu:
                kept.append(cpu)
        cpus = kept
    groups = _numa_groups(cpus)
    if len(groups) > 1:
        return ResourceDescriptorItem.of_groups(CPUS, ([str(c) for c in g] for g in groups))
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return ResourceDescriptorItem.of_range(CPUS, cpus[0], cpus[-1])
    return ResourceDescriptorItem.of_list(CPUS, (str(c) for c in cpus))


def _numa_groups(cpus: list[int]) -> list[list[int]]:
    node_dir = "/sys/devices/system/node"
    try:
        nodes = sorted(
            int(entry[4:])
            for entry in os.listdir(node_dir)
            if entry.startswith("node") and entry[4:].isdigit()
        )
    except OSError:
        return [cpus]
    remaining = set(cpus)
    groups: list[list[int]] = []
    for node in nodes:
        members = _read_cpu_list(f"{node_dir}/node{node}/cpulist") & remaining
        if members:
            groups.append(sorted(members))
            remaining -= members
    if remaining:
        groups.append(sorted(remaining))
    return groups


def _read_cpu_list(path: str) -> set[int]:
    """`0-3,8,10-11` from a sysfs file; empty set if unreadable or malformed."""
    try:
        with open(path) as file:
            text = file.read().strip()
    except OSError:
        return set()
    out: set[int] = set()
    try:
        for part in text.split(","):
            if not part:
                continue
            first, _, last = part.partition("-")
            out.update(range(int(first), int(last or first) + 1))
    except ValueError:
        return set()
    return out


def detect_memory(meminfo_path: str = "/proc/meminfo") -> ResourceDescriptorItem | None:
    """`mem` as a sum pool in MiB (MemTotal), or None when unknown."""
    try:
        with open(meminfo_path) as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return ResourceDescriptorItem.of_sum(MEM, kib // 1024 * AMOUNT_SCALE)
    except (OSError, ValueError, IndexError):
        return None
    return None


_GPU_ENV_VARS = {
    GPUS_NVIDIA: ("CUDA_VISIBLE_DEVICES",),
    GPUS_AMD: ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"),
}


def detect_gpus(
    name: str, environ: Mapping[str, str] | None = None
) -> ResourceDescriptorItem | None:
    """GPUs from the *_VISIBLE_DEVICES variables (NVIDIA also from procfs), or None."""
    env = os.environ if environ is None else environ
    for var in _GPU_ENV_VARS.get(name, ()):
        value = env.get(var, "").strip()
        if value:
            labels = [v.strip() for v in value.split(",") if v.strip()]
            if labels and len(set(labels)) == len(labels):
                return ResourceDescriptorItem.of_list(name, labels)
    if name == GPUS_NVIDIA:
        try:
            count = len(os.listdir("/proc/driver/nvidia/gpus"))
        except OSError:
            count = 0
        if count:
            return ResourceDescriptorItem.of_range(name, 0, count - 1)
    return None


# ---------------------------------------------------------------------------------------
# Task side: resource requests


class AllocationPolicy(StrEnum):
    COMPACT = "compact"
    FORCE_COMPACT = "compact!"
    TIGHT = "tight"
    FORCE_TIGHT = "tight!"
    SCATTER = "scatter"
    ALL = "all"


_POLICY_JSON = {
    AllocationPolicy.COMPACT: "Compact",
    AllocationPolicy.FORCE_COMPACT: "ForceCompact",
    AllocationPolicy.TIGHT: "Tight",
    AllocationPolicy.FORCE_TIGHT: "ForceTight",
    AllocationPolicy.SCATTER: "Scatter",
}
_POLICY_FROM_JSON = {v: k for k, v in _POLICY_JSON.items()}


@dataclass(frozen=True)
class ResourceRequestEntry:
    """`amount` of resource `name` (×10 000) under `policy`; `amount` is 0 for `all`."""

    name: str
    amount: int
    policy: AllocationPolicy = AllocationPolicy.COMPACT

    def text(self) -> str:
        """`2 compact`, `1.1 scatter`, `all`: the job info / env var form."""
        if self.policy == AllocationPolicy.ALL:
            return "all"
        return f"{format_amount(self.amount)} {self.policy}"

    def to_json(self) -> Any:
        """REQ of jobs.md §10."""
        if self.policy == AllocationPolicy.ALL:
            return "All"
        return {_POLICY_JSON[self.policy]: self.amount}

    @staticmethod
    def from_json(name: str, data: Any) -> ResourceRequestEntry:
        if data == "All":
            return ResourceRequestEntry(name, 0, AllocationPolicy.ALL)
        if isinstance(data, Mapping) and len(data) == 1:
            ((key, amount),) = data.items()
            if key in _POLICY_FROM_JSON and isinstance(amount, int):
                return ResourceRequestEntry(name, amount, _POLICY_FROM_JSON[key])
        raise ValueError(f"Invalid resource request: {data!r}")


DEFAULT_WEIGHT = AMOUNT_SCALE


@dataclass(frozen=True)
class ResourceRequest:
    """What one task (variant) needs. Frozen and hashable: many tasks share one object.

    `min_time` is the `--time-request` in seconds (the worker must live that long);
    `n_nodes` > 0 marks a multi-node task (its `entries`, the implicit cpus one at least,
    are stored but play no part in placing it); `weight` is ×10 000.
    The allocator looks only at `entries`; the other fields are for the scheduler.
    """

    entries: tuple[ResourceRequestEntry, ...]
    n_nodes: int = 0
    min_time: float = 0.0
    weight: int = DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ValueError(f"Resource request names a resource twice: {names}")
        # Requests key the scheduler's per-pass tables: hash once, not per lookup.
        object.__setattr__(
            self, "_hash", hash((self.entries, self.n_nodes, self.min_time, self.weight))
        )

    def __hash__(self) -> int:
        return self._hash  # type: ignore[no-any-return, attr-defined]

    def get(self, name: str) -> ResourceRequestEntry | None:
        for entry in self.entries:
            if entry.name == name:
                return entry
        return None

    def display_lines(self) -> list[str]:
        """`job info` Resources lines: `<name>: <req>` sorted by name (+ weight), or
        exactly `nodes: <N>` for a multi-node task (cluster.md §1.6)."""
        if self.n_nodes > 0:
            return [f"nodes: {self.n_nodes}"]
        lines = [f"{e.name}: {e.text()}" for e in sorted(self.entries, key=lambda e: e.name)]
        if self.weight != DEFAULT_WEIGHT:
            lines.append(f"[weight: {format_amount(self.weight)}]")
        return lines

    def to_json(self) -> dict[str, Any]:
        """One element of TASK_DESC `resources` (jobs.md §10)."""
        return {
            "n_nodes": self.n_nodes,
            "min_time": float(self.min_time),
            "weight": self.weight,
            "resources": [{"resource": e.name, "request": e.to_json()} for e in self.entries],
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> ResourceRequest:
        try:
            entries = tuple(
                ResourceRequestEntry.from_json(str(r["resource"]), r["request"])
                for r in data["resources"]
            )
            return ResourceRequest(
                entries,
                n_nodes=int(data.get("n_nodes", 0)),
                min_time=float(data.get("min_time", 0.0)),
                weight=int(data.get("weight", DEFAULT_WEIGHT)),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"Invalid resource request: {data!r}") from error

    def to_wire(self) -> list[Any]:
        """CBOR-friendly form: `[[[name, amount, policy], …], n_nodes, min_time, weight]`."""
        return [
            [[e.name, e.amount, str(e.policy)] for e in self.entries],
            self.n_nodes,
            float(self.min_time),
            self.weight,
        ]

    @staticmethod
    def from_wire(data: Sequence[Any]) -> ResourceRequest:
        try:
            raw_entries, n_nodes, min_time, weight = data
            entries = tuple(
                ResourceRequestEntry(str(name), int(amount), AllocationPolicy(policy))
                for name, amount, policy in raw_entries
            )
            return ResourceRequest(entries, int(n_nodes), float(min_time), int(weight))
        except (TypeError, ValueError) as error:
            raise ValueError(f"Invalid resource request: {data!r}") from error


DEFAULT_CPU_REQUEST = ResourceRequestEntry(CPUS, AMOUNT_SCALE, AllocationPolicy.COMPACT)


def parse_request_entry(name: str, text: str) -> ResourceRequestEntry:
    """`REQ := all | <amount>[ <policy>]` for resource `name`."""
    words = text.split()
    if words == ["all"]:
        return ResourceRequestEntry(name, 0, AllocationPolicy.ALL)
    if len(words) not in (1, 2):
        raise UsageError(f"Invalid resource request `{text}`: expected `<amount> [<policy>]`")
    amount = parse_amount(words[0])
    policy = AllocationPolicy.COMPACT
    if len(words) == 2:
        try:
            policy = AllocationPolicy(words[1])
        except ValueError:
            policy = AllocationPolicy.ALL  # sentinel for the error below
        if policy == AllocationPolicy.ALL:
            raise UsageError(
                f"Invalid resource policy `{words[1]}`: expected one of "
                "compact, compact!, tight, tight!, scatter"
            )
    if amount == 0:
        raise HqError("Zero resources cannot be requested")
    return ResourceRequestEntry(name, amount, policy)


def _split_named(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"Invalid {what} `{text}`: expected `<name>=<value>`")
    return check_resource_name(name.strip()), value


def parse_task_request(
    cpus: str | None,
    resources: Sequence[str] = (),
    *,
    n_nodes: int = 0,
    min_time: float = 0.0,
    weight: int = DEFAULT_WEIGHT,
) -> ResourceRequest:
    """Build a request from `--cpus REQ` and `--resource NAME=REQ` options (jobs.md §4).

    Without a cpus entry `cpus: 1 compact` is added first (multi-node tasks too: the
    original stores it, cluster.md §1.1).
    """
    entries: list[ResourceRequestEntry] = []
    seen: set[str] = set()
    for text in resources:
        name, value = _split_named(text, "resource request")
        if name == CPUS and cpus is not None:
            raise HqError("--cpus and --resource cpus=... cannot be combined")
        if name in seen:
            raise HqError(f"Resource '{name}' defined more than once")
        seen.add(name)
        entries.append(parse_request_entry(name, value))
    if cpus is not None:
        entries.insert(0, parse_request_entry(CPUS, cpus))
    elif CPUS not in seen:
        entries.insert(0, DEFAULT_CPU_REQUEST)
    return ResourceRequest(tuple(entries), n_nodes=n_nodes, min_time=min_time, weight=weight)


def check_request_variants(variants: Sequence[ResourceRequest]) -> None:
    """The request variants of one task (job files, jobs.md §11): multi-node variants
    cannot be mixed with others (cluster.md §1.1), and no variant may ask for nothing."""
    multi = [variant.n_nodes > 0 for variant in variants]
    if any(multi) and not all(multi):
        raise HqError("Resources mixes multi-node and non-multi-node requests")
    for variant in variants:
        if not variant.entries and variant.n_nodes == 0:
            raise HqError("Resource request is empty")


# ---------------------------------------------------------------------------------------
# Allocation


@dataclass(frozen=True)
class AllocatedResource:
    """What one task got of one resource.

    Indexed pools: `units` = (label, share ×10 000) in pool order, a fractional share
    last. Sum pools: `units` is empty and `amount` is what was taken.
    """

    name: str
    request: ResourceRequestEntry
    amount: int
    units: tuple[tuple[str, int], ...] = ()
    indexed: bool = True

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.units]


@dataclass(frozen=True)
class Allocation:
    """Resources granted to one task on one worker."""

    resources: tuple[AllocatedResource, ...]

    def get(self, name: str) -> AllocatedResource | None:
        for res in self.resources:
            if res.name == name:
                return res
        return None

    def labels(self, name: str) -> list[str]:
        res = self.get(name)
        return res.labels if res is not None else []

    def cpu_labels(self) -> list[str]:
        return self.labels(CPUS)

    def whole_cpu_count(self) -> int | None:
        """Number of allocated CPUs for OMP_NUM_THREADS; None if absent or fractional."""
        res = self.get(CPUS)
        if res is None or res.amount % AMOUNT_SCALE != 0:
            return None
        return res.amount // AMOUNT_SCALE

    def env(self) -> dict[str, str]:
        """Resource variables of the task environment (jobs.md §5.1)."""
        env: dict[str, str] = {}
        for res in self.resources:
            suffix = env_name_suffix(res.name)
            env[f"HQ_RESOURCE_REQUEST_{suffix}"] = res.request.text()
            if not res.indexed:
                continue
            values = ",".join(res.labels)
            env[f"HQ_RESOURCE_VALUES_{suffix}"] = values
            if res.name == CPUS:
                env["HQ_CPUS"] = values
            elif res.name == GPUS_NVIDIA:
                env["CUDA_VISIBLE_DEVICES"] = values
                env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            elif res.name == GPUS_AMD:
                env["ROCR_VISIBLE_DEVICES"] = values
        return env

    def to_wire(self) -> list[Any]:
        """`[[name, [amount, policy], amount, [[label, share], …] | None], …]`."""
        return [
            [
                r.name,
                [r.request.amount, str(r.request.policy)],
                r.amount,
                [[label, share] for label, share in r.units] if r.indexed else None,
            ]
            for r in self.resources
        ]

    @staticmethod
    def from_wire(data: Sequence[Any]) -> Allocation:
        try:
            out = []
            for name, (req_amount, policy), amount, units in data:
                entry = ResourceRequestEntry(str(name), int(req_amount), AllocationPolicy(policy))
                out.append(
                    AllocatedResource(
                        str(name),
                        entry,
                        int(amount),
                        tuple((str(label), int(share)) for label, share in units or ()),
                        indexed=units is not None,
                    )
                )
            return Allocation(tuple(out))
        except (TypeError, ValueError) as error:
            raise ValueError(f"Invalid allocation: {data!r}") from error


def _min_groups(sizes: Iterable[int], count: int) -> int | None:
    """Fewest groups whose sizes add up to `count` units (None if impossible)."""
    if count <= 0:
        return 0
    total = 0
    for used, size in enumerate(sorted(sizes, reverse=True), start=1):
        total += size
        if total >= count:
            return used
    return None


@dataclass
class _IndexedPool:
    """Units of an indexed resource; each unit has a free share (×10 000)."""

    labels: list[str]
    group_of: list[int]
    groups: list[list[int]]
    free: list[int]
    index_of: dict[str, int] = field(default_factory=dict)
    # Count of completely free units, kept up to date so that a busy worker rejects
    # most requests without scanning its units.
    whole_free: int = 0
    # The completely free units of each group, ascending, kept up to date by take and
    # give_back: listing them per request scanned every unit (a 128-CPU worker spent
    # ~15% of the server's CPU per task on that scan, tools/bench_scale).
    whole_units: list[list[int]] = field(default_factory=list)

    @staticmethod
    def build(item: ResourceDescriptorItem) -> _IndexedPool:
        labels: list[str] = []
        group_of: list[int] = []
        groups: list[list[int]] = []
        for g, group in enumerate(item.label_groups()):
            groups.append([])
            for label in group:
                groups[g].append(len(labels))
                labels.append(label)
                group_of.append(g)
        index_of = {label: i for i, label in enumerate(labels)}
        free = [AMOUNT_SCALE] * len(labels)
        whole_units = [list(units) for units in groups]
        return _IndexedPool(
            labels, group_of, groups, free, index_of, len(labels), whole_units
        )

    def free_total(self) -> int:
        return sum(self.free)

    def is_full(self) -> bool:
        return self.whole_free == len(self.free)

    def choose(self, entry: ResourceRequestEntry) -> list[tuple[int, int]] | None:
        """Pick (unit, share) pairs for `entry` without changing anything."""
        if entry.policy == AllocationPolicy.ALL:
            if not self.labels or not self.is_full():
                return None
            return [(i, AMOUNT_SCALE) for i in range(len(self.labels))]
        whole, frac = divmod(entry.amount, AMOUNT_SCALE)
        if whole > self.whole_free:
            return None
        if whole == 1 and not frac:
            # One whole unit (the default request): what `_choose_whole` picks, without
            # the general path's sorting and set building.
            one = _choose_one(entry.policy, self.whole_units)
            return None if one is None else [(one[0], AMOUNT_SCALE)]
        # Read only below: the lists are the pool's own.
        chosen = self._choose_whole(entry.policy, whole, self.whole_units)
        if chosen is None:
            return None
        picked = [(u, AMOUNT_SCALE) for u in sorted(chosen)]
        if frac:
            unit = self._choose_fraction(frac, set(chosen), {self.group_of[u] for u in chosen})
            if unit is None:
                return None
            picked.append((unit, frac))
        return picked

    def _choose_whole(
        self, policy: AllocationPolicy, count: int, free_units: list[list[int]]
    ) -> list[int] | None:
        if count == 0:
            return []
        if count == 1:
            return _choose_one(policy, free_units)
        return self._choose_general(policy, count, free_units)

    def _choose_general(
        self, policy: AllocationPolicy, count: int, free_units: list[list[int]]
    ) -> list[int] | None:
        free_counts = [len(f) for f in free_units]
        if policy == AllocationPolicy.SCATTER:
            # Most free groups first, one unit per group per round.
            order = sorted(range(len(free_units)), key=lambda g: (-free_counts[g], g))
            return _round_robin([free_units[g] for g in order], count)
        needed = _min_groups(free_counts, count)
        if needed is None:
            return None
        if policy in (AllocationPolicy.FORCE_COMPACT, AllocationPolicy.FORCE_TIGHT):
            best = _min_groups((len(g) for g in self.groups), count)
            if best is None or needed > best:
                return None
        selected = _select_groups(free_counts, count, needed)
        if policy in (AllocationPolicy.TIGHT, AllocationPolicy.FORCE_TIGHT):
            # Pack: fill the fullest selected group first, then the next.
            out: list[int] = []
            for g in sorted(selected, key=lambda g: (-free_counts[g], g)):
                out.extend(free_units[g][: count - len(out)])
            return out
        return _round_robin([free_units[g] for g in sorted(selected)], count)

    def _choose_fraction(self, frac: int, taken: set[int], groups: set[int]) -> int | None:
        # Best fit among partly used units keeps whole units free for whole requests;
        # otherwise a free unit, preferably in a group this task already uses.
        partial = [
            u for u, f in enumerate(self.free) if u not in taken and frac <= f < AMOUNT_SCALE
        ]
        if partial:
            return min(partial, key=lambda u: (self.free[u], u))
        whole = [u for u, f in enumerate(self.free) if u not in taken and f == AMOUNT_SCALE]
        if not whole:
            return None
        return min(whole, key=lambda u: (self.group_of[u] not in groups, u))

    def choose_in_groups(
        self, entry: ResourceRequestEntry, selected: Sequence[int]
    ) -> list[tuple[int, int]] | None:
        """Units for `entry` inside the `selected` groups only, by its policy."""
        whole, frac = divmod(entry.amount, AMOUNT_SCALE)
        free_units = [[u for u in g if self.free[u] == AMOUNT_SCALE] for g in self.groups]
        counts = [len(f) for f in free_units]
        if entry.policy in (AllocationPolicy.TIGHT, AllocationPolicy.FORCE_TIGHT):
            chosen: list[int] = []
            for g in sorted(selected, key=lambda g: (-counts[g], g)):
                chosen.extend(free_units[g][: whole - len(chosen)])
        else:
            found = _round_robin([free_units[g] for g in sorted(selected)], whole)
            if found is None:
                return None
            chosen = found
        if len(chosen) < whole:
            return None
        picked = [(u, AMOUNT_SCALE) for u in sorted(chosen)]
        if frac:
            unit = self._choose_fraction(frac, set(chosen), set(selected))
            if unit is None:
                return None
            picked.append((unit, frac))
        return picked

    def take(self, picked: list[tuple[int, int]]) -> None:
        for unit, share in picked:
            if self.free[unit] == AMOUNT_SCALE:
                self.whole_free -= 1
                units = self.whole_units[self.group_of[unit]]
                del units[bisect.bisect_left(units, unit)]
            self.free[unit] -= share

    def give_back(self, name: str, units: Iterable[tuple[str, int]]) -> None:
        if isinstance(units, tuple) and len(units) == 1:
            # One unit (a 1-CPU task, the usual release): no merging of shares needed.
            label, share = units[0]
            unit = self.index_of.get(label)
            if unit is None:
                raise ValueError(f"Releasing unknown value {label!r} of {name!r}")
            free = self.free[unit] + share
            if share <= 0 or free > AMOUNT_SCALE:
                raise ValueError(f"Releasing {label!r} of {name!r} not allocated")
            self.free[unit] = free
            if free == AMOUNT_SCALE:
                self.whole_free += 1
                bisect.insort(self.whole_units[self.group_of[unit]], unit)
            return
        returned: dict[int, int] = {}
        for label, share in units:
            unit = self.index_of.get(label)
            if unit is None:
                raise ValueError(f"Releasing unknown value {label!r} of {name!r}")
            returned[unit] = returned.get(unit, 0) + share
        # Check everything first so that a bad release changes nothing.
        for unit, share in returned.items():
            if share <= 0 or self.free[unit] + share > AMOUNT_SCALE:
                raise ValueError(f"Releasing {self.labels[unit]!r} of {name!r} not allocated")
        for unit, share in returned.items():
            self.free[unit] += share
            if self.free[unit] == AMOUNT_SCALE:
                self.whole_free += 1
                bisect.insort(self.whole_units[self.group_of[unit]], unit)


def _choose_one(policy: AllocationPolicy, free_units: list[list[int]]) -> list[int] | None:
    """What `_choose_general` picks for one unit, without its sorting (the usual request,
    one CPU, on every assignment): scatter takes the lowest free unit of the group with
    the most free units, the other policies that of the group with the fewest (ties:
    the lowest group)."""
    unit = _pick_one(policy, free_units)
    return None if unit < 0 else [unit]


def _pick_one(policy: AllocationPolicy, free_units: list[list[int]]) -> int:
    """`_choose_one`'s unit, or -1 if there is none."""
    if len(free_units) == 1:
        units = free_units[0]
        return units[0] if units else -1
    best = -1
    best_key = (0, 0)
    for group, units in enumerate(free_units):
        if units:
            key = (-len(units), group) if policy == AllocationPolicy.SCATTER else (
                len(units), group
            )
            if best < 0 or key < best_key:
                best, best_key = group, key
    return -1 if best < 0 else free_units[best][0]


# Candidate group sets tried per entry in the joint choice: bounds the cost of one
# allocation on a coupled worker (a few groups per resource in practice).
_COUPLED_MAX_CANDIDATES = 32
# Cost of using one more group: `tight` packs (one group more never pays for a coupled
# pair of default weight 256), `compact` spreads into a coupled group (two pairs pay
# for a third group, not for a fourth): the original's test_coupling_combined outcomes.
_GROUP_COST_TIGHT = 1024.0
_GROUP_COST_COMPACT = 192.0


def coupled_choice(
    entries: Sequence[ResourceRequestEntry],
    free: Sequence[Sequence[int]],
    pools: Sequence[_IndexedPool],
    coupling: Mapping[tuple[str, int, str, int], int],
) -> tuple[list[tuple[int, ...]], float] | None:
    """Groups per entry maximising Σ W over coupling items with both groups selected
    − Σ over selected groups (cost + u/32), u = free whole units of the group and cost
    1024 for tight, 192 for compact, such that every entry's groups hold its amount
    (cluster.md §2.2; costs fitted to the original's outcomes). `free` = each pool's
    free share per unit (the live state, or all free for the ideal). None = no way."""
    options: list[list[tuple[int, ...]]] = []
    penalties: list[list[float]] = []
    for entry, pool, shares in zip(entries, pools, free, strict=True):
        whole, frac = divmod(entry.amount, AMOUNT_SCALE)
        units = [sum(1 for u in g if shares[u] == AMOUNT_SCALE) for g in pool.groups]
        needed = _min_groups(units, whole + (1 if frac else 0))
        if needed is None:
            return None
        tight = entry.policy in (AllocationPolicy.TIGHT, AllocationPolicy.FORCE_TIGHT)
        cost = _GROUP_COST_TIGHT if tight else _GROUP_COST_COMPACT
        candidates: list[tuple[int, ...]] = []
        for size in range(max(needed, 1), len(units) + 1):
            for combo in itertools.combinations(range(len(units)), size):
                if len(candidates) >= _COUPLED_MAX_CANDIDATES:
                    break
                # Every selected group gives at least one unit.
                if sum(units[g] for g in combo) >= whole + (1 if frac else 0) and all(
                    units[g] > 0 for g in combo
                ):
                    candidates.append(combo)
        if not candidates:
            return None
        options.append(candidates)
        penalties.append([sum(cost + units[g] / 32 for g in c) for c in candidates])
    best: tuple[list[tuple[int, ...]], float] | None = None
    for picks in itertools.product(*(range(len(o)) for o in options)):
        chosen = [options[i][p] for i, p in enumerate(picks)]
        score = -sum(penalties[i][p] for i, p in enumerate(picks))
        for (n1, g1, n2, g2), weight in coupling.items():
            if _selected(entries, chosen, n1, g1) and _selected(entries, chosen, n2, g2):
                score += weight
        if best is None or score > best[1] + 1e-9:
            best = (chosen, score)
    return best


def _selected(
    entries: Sequence[ResourceRequestEntry],
    chosen: Sequence[tuple[int, ...]],
    name: str,
    group: int,
) -> bool:
    return any(e.name == name and group in c for e, c in zip(entries, chosen, strict=True))


def _round_robin(groups: list[list[int]], count: int) -> list[int] | None:
    out: list[int] = []
    depth = 0
    while len(out) < count:
        progressed = False
        for units in groups:
            if depth < len(units):
                out.append(units[depth])
                progressed = True
                if len(out) == count:
                    return out
        if not progressed:
            return None
        depth += 1
    return out


def _select_groups(free_counts: list[int], count: int, needed: int) -> list[int]:
    """`needed` groups holding ≥ `count` free units, leaving big free groups intact.

    The largest `needed - 1` groups are taken first, and the last group is the one
    that fits the remainder most tightly (lowest index on ties).
    """
    order = sorted(range(len(free_counts)), key=lambda g: (-free_counts[g], g))
    selected = order[: needed - 1]
    rest = count - sum(free_counts[g] for g in selected)
    candidates = [g for g in order[needed - 1 :] if free_counts[g] >= rest]
    selected.append(min(candidates, key=lambda g: (free_counts[g], g)))
    return selected


@dataclass
class _SumPool:
    size: int
    free: int


AllocatorMark = tuple[
    list[tuple[_IndexedPool, list[int], list[list[int]], int]], list[tuple[_SumPool, int]]
]
"""A WorkerAllocator's free state (`mark`), opaque to everyone else."""


class WorkerAllocator:
    """Free/used bookkeeping of one worker's resources; decides what a task gets.

    Supported: every policy on indexed pools (tight packs groups, compact spreads evenly
    over the fewest groups, scatter over as many groups as possible; the `!` forms fail
    unless the fewest groups possible on an empty worker can be used), `all` (every unit
    or the whole sum, only when nothing of it is in use), sum pools by amount, and
    fractional amounts: the fraction comes from one unit that other fractional requests
    may share; the `!` constraint applies to the whole units only.
    """

    def __init__(self, descriptor: ResourceDescriptor) -> None:
        self.descriptor = descriptor
        self._indexed: dict[str, _IndexedPool] = {}
        self._sums: dict[str, _SumPool] = {}
        for item in descriptor.items:
            if item.is_indexed:
                self._indexed[item.name] = _IndexedPool.build(item)
            else:
                self._sums[item.name] = _SumPool(item.size, item.size)
        # (name1, group1, name2, group2) → weight, for the joint choice of groups.
        self._coupling: dict[tuple[str, int, str, int], int] = {}
        for r1, g1, r2, g2, weight in descriptor.coupling:
            if r1 < len(descriptor.items) and r2 < len(descriptor.items):
                key = (descriptor.items[r1].name, g1, descriptor.items[r2].name, g2)
                self._coupling[key] = weight
        self._coupled = descriptor.coupled_names()
        # One-whole-unit requests (the default `1` CPU, every task of a big array, and
        # each one tried by the scheduler then taken again by the model): the pool each
        # takes from, and per unit the allocation it gets, made once. Allocations are
        # immutable values, so sharing them is not seen. A few requests only: a
        # long-lived worker meets many.
        self._one_pools: dict[ResourceRequest, _IndexedPool | None] = {}
        self._one_made: dict[ResourceRequest, list[Allocation | None]] = {}

    _ONE_MAX = 16  # requests whose one-unit allocations are kept

    def _one_pool(self, request: ResourceRequest) -> _IndexedPool | None:
        """The pool a one-whole-unit request takes from, or None for any other request
        (or on a worker with coupled resources, which choose jointly)."""
        pools = self._one_pools
        pool = pools.get(request, self)
        if pool is not self:
            return pool  # type: ignore[return-value]
        pool = None
        if len(request.entries) == 1 and not self._coupled:
            entry = request.entries[0]
            if entry.policy != AllocationPolicy.ALL and entry.amount == AMOUNT_SCALE:
                pool = self._indexed.get(entry.name)
        if len(pools) >= self._ONE_MAX:
            pools.clear()
            self._one_made.clear()
        pools[request] = pool
        return pool

    def try_allocate(self, request: ResourceRequest) -> Allocation | None:
        """Allocate everything `request` asks for, or nothing (None) if it does not fit now."""
        pool = self._one_pool(request)
        if pool is not None:
            # What the general path below does for this request, without its plans.
            unit = _pick_one(request.entries[0].policy, pool.whole_units)
            if unit < 0:
                return None
            pool.whole_free -= 1
            units = pool.whole_units[pool.group_of[unit]]
            del units[bisect.bisect_left(units, unit)]
            pool.free[unit] = 0
            made = self._one_made.get(request)
            if made is None:
                made = self._one_made[request] = [None] * len(pool.free)
            allocation = made[unit]
            if allocation is None:
                entry = request.entries[0]
                units_held = ((pool.labels[unit], AMOUNT_SCALE),)
                allocation = made[unit] = Allocation(
                    (AllocatedResource(entry.name, entry, AMOUNT_SCALE, units_held),)
                )
            return allocation
        joint: dict[str, list[tuple[int, int]]] = {}
        if self._coupled and any(e.name in self._coupled for e in request.entries):
            found = self._choose_coupled(request)
            if found is None:
                return None
            joint = found
        plans: list[tuple[ResourceRequestEntry, list[tuple[int, int]] | int]] = []
        for entry in request.entries:
            if entry.name in joint:
                plans.append((entry, joint[entry.name]))
            elif entry.name in self._indexed:
                picked = self._indexed[entry.name].choose(entry)
                if picked is None:
                    return None
                plans.append((entry, picked))
            elif entry.name in self._sums:
                pool = self._sums[entry.name]
                if entry.policy == AllocationPolicy.ALL:
                    if pool.size <= 0 or pool.free != pool.size:
                        return None
                    plans.append((entry, pool.size))
                elif entry.amount <= pool.free:
                    plans.append((entry, entry.amount))
                else:
                    return None
            else:
                return None
        # Entries name distinct resources, so the plans do not overlap.
        out: list[AllocatedResource] = []
        for entry, plan in plans:
            if isinstance(plan, int):
                self._sums[entry.name].free -= plan
                out.append(AllocatedResource(entry.name, entry, plan, (), indexed=False))
            else:
                pool = self._indexed[entry.name]
                pool.take(plan)
                labels = pool.labels
                units = tuple([(labels[u], share) for u, share in plan])
                amount = (
                    entry.amount
                    if entry.policy != AllocationPolicy.ALL
                    else len(plan) * AMOUNT_SCALE
                )
                out.append(AllocatedResource(entry.name, entry, amount, units))
        return Allocation(tuple(out))

    def _relevant(self, entry: ResourceRequestEntry) -> bool:
        """Coupling applies to this entry: a grouped resource under a group policy."""
        pool = self._indexed.get(entry.name)
        return (
            pool is not None
            and len(pool.groups) >= 2
            and entry.policy
            in (
                AllocationPolicy.COMPACT,
                AllocationPolicy.FORCE_COMPACT,
                AllocationPolicy.TIGHT,
                AllocationPolicy.FORCE_TIGHT,
            )
        )

    def _choose_coupled(self, request: ResourceRequest) -> dict[str, list[tuple[int, int]]] | None:
        """Units for the coupling-relevant entries, their groups chosen jointly
        (cluster.md §2.2); {} when none is relevant, None when they cannot be had now."""
        entries = [e for e in request.entries if self._relevant(e)]
        if not entries:
            return {}
        pools = [self._indexed[e.name] for e in entries]
        now = coupled_choice(entries, [p.free for p in pools], pools, self._coupling)
        if now is None:
            return None
        groups, objective = now
        if any(
            e.policy in (AllocationPolicy.FORCE_COMPACT, AllocationPolicy.FORCE_TIGHT)
            for e in entries
        ):
            empty = [[AMOUNT_SCALE] * len(p.free) for p in pools]
            ideal = coupled_choice(entries, empty, pools, self._coupling)
            if ideal is None or objective < ideal[1] - 0.1:
                return None
        out: dict[str, list[tuple[int, int]]] = {}
        for entry, pool, selected in zip(entries, pools, groups, strict=True):
            picked = pool.choose_in_groups(entry, selected)
            if picked is None:
                return None
            out[entry.name] = picked
        return out

    def take(self, allocation: Allocation) -> bool:
        """Hold exactly what `allocation` names (as `try_allocate` made it: distinct
        units), if all of it is free now; else change nothing and return False.

        A scheduling pass decides with trial allocations it gives back; applying its
        decision in the same order then takes the very same units, and naming them is
        cheaper than choosing them again."""
        resources = allocation.resources
        if len(resources) == 1 and resources[0].indexed and len(resources[0].units) == 1:
            # One unit of one resource (a 1-CPU task): the loop below, unrolled.
            res = resources[0]
            pool = self._indexed.get(res.name)
            if pool is None:
                return False
            label, share = res.units[0]
            unit = pool.index_of.get(label)
            if unit is None or share <= 0 or pool.free[unit] < share:
                return False
            pool.take([(unit, share)])
            return True
        plans: list[tuple[_IndexedPool | _SumPool, list[tuple[int, int]] | int]] = []
        for res in allocation.resources:
            if res.indexed:
                pool = self._indexed.get(res.name)
                if pool is None:
                    return False
                free = pool.free
                picked: list[tuple[int, int]] = []
                for label, share in res.units:
                    unit = pool.index_of.get(label)
                    if unit is None or share <= 0 or free[unit] < share:
                        return False
                    picked.append((unit, share))
                plans.append((pool, picked))
            else:
                sums = self._sums.get(res.name)
                if sums is None or res.amount < 0 or sums.free < res.amount:
                    return False
                plans.append((sums, res.amount))
        for target, plan in plans:
            if isinstance(plan, int):
                assert isinstance(target, _SumPool)
                target.free -= plan
            else:
                assert isinstance(target, _IndexedPool)
                target.take(plan)
        return True

    def mark(self) -> AllocatorMark:
        """What is free now, for `reset`: a look-ahead (a scheduling pass) allocates,
        then gives everything back at once, in O(units) rather than allocation by
        allocation."""
        return (
            [
                (pool, pool.free[:], [units[:] for units in pool.whole_units], pool.whole_free)
                for pool in self._indexed.values()
            ],
            [(pool, pool.free) for pool in self._sums.values()],
        )

    def reset(self, mark: AllocatorMark) -> None:
        """Back to what was free at `mark` (allocations made since are void)."""
        indexed, sums = mark
        for pool, free, whole_units, whole_free in indexed:
            pool.free = free
            pool.whole_units = whole_units
            pool.whole_free = whole_free
        for sum_pool, amount in sums:
            sum_pool.free = amount

    def release(self, allocation: Allocation) -> None:
        """Return what `allocation` holds. Releasing something not held is a bug: ValueError."""
        for res in allocation.resources:
            if res.indexed:
                pool = self._indexed.get(res.name)
                if pool is None:
                    raise ValueError(f"Unknown resource {res.name!r}")
                pool.give_back(res.name, res.units)
            else:
                sum_pool = self._sums.get(res.name)
                if sum_pool is None or sum_pool.free + res.amount > sum_pool.size:
                    raise ValueError(f"Releasing {res.name!r} that was not allocated")
                sum_pool.free += res.amount

    def fits_now(self, request: ResourceRequest) -> bool:
        """Would `try_allocate(request)` succeed now? Changes nothing; cheap for the
        common shapes (counting only), otherwise it tries and gives back."""
        if self._coupled:
            return self._fits_by_trying(request)
        for entry in request.entries:
            pool = self._indexed.get(entry.name)
            if pool is not None:
                if entry.policy == AllocationPolicy.ALL:
                    if not pool.labels or not pool.is_full():
                        return False
                    continue
                whole, frac = divmod(entry.amount, AMOUNT_SCALE)
                if whole > pool.whole_free:
                    return False
                if frac or len(pool.groups) > 1:
                    return self._fits_by_trying(request)
                continue
            sum_pool = self._sums.get(entry.name)
            if sum_pool is None:
                return False
            if entry.policy == AllocationPolicy.ALL:
                if sum_pool.size <= 0 or sum_pool.free != sum_pool.size:
                    return False
            elif entry.amount > sum_pool.free:
                return False
        return True

    def _fits_by_trying(self, request: ResourceRequest) -> bool:
        allocation = self.try_allocate(request)
        if allocation is None:
            return False
        self.release(allocation)
        return True

    def free_bound(self, name: str) -> int:
        """An upper bound (×10 000) of what one request may get of `name` now: the
        free whole units of an indexed pool plus less than one unit (a fraction), or a
        sum pool's free amount."""
        pool = self._indexed.get(name)
        if pool is not None:
            return pool.whole_free * AMOUNT_SCALE + AMOUNT_SCALE - 1
        sum_pool = self._sums.get(name)
        return sum_pool.free if sum_pool is not None else 0

    def free_amount(self, name: str) -> int:
        """Free amount (×10 000) of resource `name`; 0 for an unknown name."""
        if name in self._indexed:
            return self._indexed[name].free_total()
        if name in self._sums:
            return self._sums[name].free
        return 0

    def free_labels(self, name: str) -> list[str]:
        """Labels of units of `name` that are completely free, in pool order."""
        pool = self._indexed.get(name)
        if pool is None:
            return []
        return [pool.labels[u] for u, f in enumerate(pool.free) if f == AMOUNT_SCALE]

    def is_idle(self) -> bool:
        """True when nothing is allocated."""
        return all(p.is_full() for p in self._indexed.values()) and all(
            p.free == p.size for p in self._sums.values()
        )


def fits_ever(descriptor: ResourceDescriptor, request: ResourceRequest) -> bool:
    """Could a worker with `descriptor` ever run `request` (when completely idle)?"""
    for entry in request.entries:
        item = descriptor.get(entry.name)
        if item is None:
            return False
        if entry.policy == AllocationPolicy.ALL:
            if item.capacity() <= 0:
                return False
        elif item.is_indexed:
            whole, frac = divmod(entry.amount, AMOUNT_SCALE)
            if whole + (1 if frac else 0) > item.unit_count():
                return False
        elif entry.amount > item.size:
            return False
    return True

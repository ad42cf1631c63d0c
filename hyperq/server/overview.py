"""Checking a worker's hardware overview before it becomes a `worker-overview` event.

The overview comes from a worker, so every field is checked and rebuilt here: the
journal and the watchers only ever see the spec's STATE shape (cluster.md §4), with CPU
and GPU usages as floats. A malformed overview is rejected as a whole (None).
"""

from __future__ import annotations

import math
from typing import Any

NETWORK_FIELDS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors")
# No machine has more logical CPUs or GPUs than this; a bigger list is an attack.
MAX_CPUS = 65_536
MAX_GPUS = 1024


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _percent(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _gpus(value: Any) -> dict[str, Any] | bool | None:
    """GPUS rebuilt; None for null; False if malformed."""
    if value is None:
        return None
    gpus = value.get("gpus") if isinstance(value, dict) else None
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
        return False
    out = []
    for gpu in gpus:
        if not isinstance(gpu, dict) or not isinstance(gpu.get("id"), str):
            return False
        processor, memory = _percent(gpu.get("processor_usage")), _percent(gpu.get("mem_usage"))
        if processor is None or memory is None:
            return False
        out.append({"id": gpu["id"], "processor_usage": processor, "mem_usage": memory})
    return {"gpus": out}


def checked_hw_state(value: Any) -> dict[str, Any] | None:
    """The overview's STATE as we store it, or None if anything in it is malformed."""
    if not isinstance(value, dict):
        return None
    timestamp = _count(value.get("timestamp"))
    cpu = value.get("cpu_usage")
    per_core = cpu.get("cpu_per_core_percent_usage") if isinstance(cpu, dict) else None
    if timestamp is None or not isinstance(per_core, list) or len(per_core) > MAX_CPUS:
        return None
    usage = [_percent(v) for v in per_core]
    memory = value.get("memory_usage")
    network = value.get("network_usage")
    if not isinstance(memory, dict) or not isinstance(network, dict):
        return None
    total, free = _count(memory.get("total")), _count(memory.get("free"))
    counters = {name: _count(network.get(name)) for name in NETWORK_FIELDS}
    nvidia, amd = _gpus(value.get("nvidia_gpus")), _gpus(value.get("amd_gpus"))
    if (
        any(v is None for v in usage)
        or total is None
        or free is None
        or any(v is None for v in counters.values())
        or nvidia is False
        or amd is False
    ):
        return None
    return {
        "timestamp": timestamp,
        "cpu_usage": {"cpu_per_core_percent_usage": usage},
        "memory_usage": {"total": total, "free": free},
        "network_usage": counters,
        "nvidia_gpus": nvidia,
        "amd_gpus": amd,
    }


def checked_tasks(value: Any) -> tuple[tuple[int, int, tuple[str, ...]], ...]:
    """The running tasks an overview lists with their CPU labels; anything malformed in
    the list empties it (the overview itself stays)."""
    if not isinstance(value, list) or len(value) > MAX_CPUS:
        return ()
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3):
            return ()
        job, task, cpus = item
        if _count(job) is None or _count(task) is None or not isinstance(cpus, list):
            return ()
        if len(cpus) > MAX_CPUS or not all(isinstance(c, str) for c in cpus):
            return ()
        out.append((job, task, tuple(cpus)))
    return tuple(out)

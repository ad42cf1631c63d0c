"""The worker's hardware overview (cluster.md §4): per-core CPU, memory, network, GPUs.

Parsing is pure (text in, numbers out) so it is tested against recorded outputs. Reading
/proc is blocking file work and goes through `trio.to_thread.run_sync`; the GPU tools are
child processes run with trio. A failing GPU tool never stops sampling: its family is
reported as null and an ERROR is logged.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

NVIDIA_SMI_ARGS = (
    "nvidia-smi",
    "--format=csv,noheader",
    "--query-gpu=pci.bus_id,utilization.gpu,memory.used,memory.total",
)
ROCM_SMI_ARGS = ("rocm-smi", "--json", "--showuse", "--showbus", "--showmemuse")
# A hung GPU tool must not pile up samples.
GPU_TOOL_TIMEOUT = 10.0

CpuTimes = list[tuple[int, int]]
"""Per logical CPU: (busy jiffies, total jiffies)."""


def parse_proc_stat(text: str) -> CpuTimes:
    """Counters of every `cpuN` line of /proc/stat, in order of N."""
    cores: list[tuple[int, tuple[int, int]]] = []
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
            values = [int(v) for v in rest.split()]
        except ValueError:
            continue
        # user nice system idle iowait irq softirq steal (guest is already in user).
        total = sum(values[:8])
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        cores.append((index, (total - idle, total)))
    return [times for _i, times in sorted(cores)]


def cpu_usage(previous: CpuTimes, current: CpuTimes) -> list[float]:
    """Per-core usage in percent between two samples (0.0 where nothing was counted)."""
    usage: list[float] = []
    for i, (busy, total) in enumerate(current):
        old_busy, old_total = previous[i] if i < len(previous) else (0, 0)
        elapsed = total - old_total
        percent = 100.0 * (busy - old_busy) / elapsed if elapsed > 0 else 0.0
        usage.append(float(min(max(percent, 0.0), 100.0)))
    return usage


def parse_meminfo(text: str) -> dict[str, int]:
    """{"total", "free"} in bytes; free is MemAvailable (MemFree on old kernels)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    free = values.get("MemAvailable", values.get("MemFree", 0))
    return {"total": values.get("MemTotal", 0), "free": free}


def parse_net_dev(text: str) -> dict[str, int]:
    """Totals over all interfaces of /proc/net/dev."""
    totals = dict.fromkeys(
        ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors"), 0
    )
    for line in text.splitlines():
        if ":" not in line:
            continue
        _name, _, data = line.partition(":")
        fields = data.split()
        if len(fields) < 12:
            continue
        try:
            numbers = [int(v) for v in fields]
        except ValueError:
            continue
        totals["rx_bytes"] += numbers[0]
        totals["rx_packets"] += numbers[1]
        totals["rx_errors"] += numbers[2]
        totals["tx_bytes"] += numbers[8]
        totals["tx_packets"] += numbers[9]
        totals["tx_errors"] += numbers[10]
    return totals


def _float_or_zero(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


_MEMORY_UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def _memory(text: str) -> float:
    number, _, unit = text.strip().partition(" ")
    return _float_or_zero(number) * _MEMORY_UNITS.get(unit.strip(), 1)


def parse_nvidia_smi(text: str) -> dict[str, Any]:
    """`nvidia-smi --format=csv,noheader --query-gpu=...` lines → GPUS."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        used, total = _memory(fields[2]), _memory(fields[3])
        gpus.append(
            {
                "id": fields[0],
                "processor_usage": _float_or_zero(fields[1].removesuffix("%")),
                "mem_usage": float(used / total * 100.0) if total else 0.0,
            }
        )
    return {"gpus": gpus}


def parse_rocm_smi(text: str) -> dict[str, Any]:
    """`rocm-smi --json --showuse --showbus --showmemuse` → GPUS, cards in key order."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("rocm-smi output is not a JSON object")
    gpus = []
    for card in sorted(data):
        info = data[card]
        if not isinstance(info, dict):
            raise ValueError(f"rocm-smi card {card!r} is not an object")
        gpus.append(
            {
                "id": str(info.get("PCI Bus", "")),
                "processor_usage": _float_or_zero(str(info.get("GPU use (%)", ""))),
                "mem_usage": _float_or_zero(str(info.get("GPU memory use (%)", ""))),
            }
        )
    return {"gpus": gpus}


def read_proc(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""


@dataclass
class ProcSample:
    cpu: CpuTimes
    memory: dict[str, int]
    network: dict[str, int]
    # CPU seconds this process spent reading and parsing (the cost of one overview).
    cost: float = 0.0


def sample_proc() -> ProcSample:
    """Blocking: read and parse /proc (run in a thread)."""
    started = time.thread_time()
    sample = ProcSample(
        cpu=parse_proc_stat(read_proc("/proc/stat")),
        memory=parse_meminfo(read_proc("/proc/meminfo")),
        network=parse_net_dev(read_proc("/proc/net/dev")),
    )
    sample.cost = time.thread_time() - started
    return sample


@dataclass
class HwMonitor:
    """Keeps the previous CPU counters so that each overview covers its own interval."""

    nvidia: bool = False
    amd: bool = False
    previous: CpuTimes = field(default_factory=list)

    def state(
        self,
        sample: ProcSample,
        now: float,
        nvidia: dict[str, Any] | None,
        amd: dict[str, Any] | None,
    ) -> dict[str, Any]:
        usage = cpu_usage(self.previous, sample.cpu)
        self.previous = sample.cpu
        return {
            "timestamp": int(now),
            "cpu_usage": {"cpu_per_core_percent_usage": usage},
            "memory_usage": dict(sample.memory),
            "network_usage": dict(sample.network),
            "nvidia_gpus": nvidia,
            "amd_gpus": amd,
        }


async def run_gpu_tool(argv: Sequence[str], parse: Any) -> dict[str, Any] | None:
    """Run one GPU tool and parse its stdout; None (and an ERROR log) if anything fails."""
    import subprocess

    import trio

    try:
        with trio.fail_after(GPU_TOOL_TIMEOUT):
            result = await trio.run_process(
                list(argv), capture_stdout=True, capture_stderr=True, check=False,
                stdin=subprocess.DEVNULL,
            )
    except (OSError, trio.TooSlowError) as error:
        log.error("Cannot run %s: %s", argv[0], error)
        return None
    if result.returncode != 0:
        log.error("%s exited with code %d", argv[0], result.returncode)
        return None
    try:
        return parse(result.stdout.decode("utf-8", errors="replace"))
    except (ValueError, KeyError, TypeError) as error:
        log.error("Cannot parse the output of %s: %s", argv[0], error)
        return None


async def overview_state(monitor: HwMonitor) -> tuple[dict[str, Any], float]:
    """One overview: (STATE, CPU seconds it cost this process)."""
    import trio

    started = time.process_time()
    sample = await trio.to_thread.run_sync(sample_proc)
    nvidia = await run_gpu_tool(NVIDIA_SMI_ARGS, parse_nvidia_smi) if monitor.nvidia else None
    amd = await run_gpu_tool(ROCM_SMI_ARGS, parse_rocm_smi) if monitor.amd else None
    state = monitor.state(sample, time.time(), nvidia, amd)
    return state, time.process_time() - started

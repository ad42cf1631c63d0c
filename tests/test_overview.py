"""Worker hardware overview (cluster.md §4): parsing recorded tool outputs, checking what
workers send, and `worker-overview` events end to end with fake GPU tools on PATH."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from hyperq.server.overview import checked_hw_state
from hyperq.worker.hwmonitor import (
    HwMonitor,
    ProcSample,
    cpu_usage,
    parse_meminfo,
    parse_net_dev,
    parse_nvidia_smi,
    parse_proc_stat,
    parse_rocm_smi,
    sample_proc,
)
from tests.harness import HQ_ARGV, ClusterEnv, wait_until

# Recorded from real machines (values shortened), as the tools print them.
NVIDIA_SMI_OUTPUT = (
    "00000000:07:00.0, 10 %, 100 MiB, 200 MiB\n"
    "00000000:0B:00.0, 97 %, 40346 MiB, 40960 MiB\n"
)
ROCM_SMI_OUTPUT = json.dumps(
    {
        "card1": {
            "GPU use (%)": "5",
            "GPU memory use (%)": "12",
            "PCI Bus": "0000:C9:00.0",
            "Card series": "AMD INSTINCT MI200 (MCM) OAM LC MBA",
        },
        "card0": {"GPU use (%)": "100", "GPU memory use (%)": "50", "PCI Bus": "0000:C1:00.0"},
    }
)
PROC_STAT = textwrap.dedent(
    """\
    cpu  300 0 100 1600 0 0 0 0 0 0
    cpu0 100 0 50 850 0 0 0 0 0 0
    cpu1 200 0 50 750 0 0 0 0 0 0
    intr 12345
    ctxt 999
    """
)
MEMINFO = "MemTotal:       16303420 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n"
# /proc/net/dev with its columns squeezed to one space.
NET_DEV = "\n".join(
    (
        "Inter-| Receive | Transmit",
        " face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs ...",
        "  lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0",
        "eth0: 5000 50 1 0 0 0 0 0 7000 70 2 0 0 0 0 0",
    )
)


def test_parse_nvidia_smi() -> None:
    assert parse_nvidia_smi("BUS1, 10.0 %, 100 MiB, 200 MiB\n") == {
        "gpus": [{"id": "BUS1", "processor_usage": 10.0, "mem_usage": 50.0}]
    }
    gpus = parse_nvidia_smi(NVIDIA_SMI_OUTPUT)["gpus"]
    assert [g["id"] for g in gpus] == ["00000000:07:00.0", "00000000:0B:00.0"]
    assert gpus[1]["processor_usage"] == 97.0
    assert gpus[1]["mem_usage"] == pytest.approx(40346 / 40960 * 100)
    # Unparsable numbers are 0, a zero total gives 0, units multiply.
    assert parse_nvidia_smi("X, [N/A], 1 GiB, 0 MiB") == {
        "gpus": [{"id": "X", "processor_usage": 0.0, "mem_usage": 0.0}]
    }
    assert parse_nvidia_smi("X, 1 %, 512 MiB, 1 GiB")["gpus"][0]["mem_usage"] == 50.0
    with pytest.raises(ValueError):
        parse_nvidia_smi("not csv")


def test_parse_rocm_smi_sorts_cards() -> None:
    assert parse_rocm_smi(ROCM_SMI_OUTPUT) == {
        "gpus": [
            {"id": "0000:C1:00.0", "processor_usage": 100.0, "mem_usage": 50.0},
            {"id": "0000:C9:00.0", "processor_usage": 5.0, "mem_usage": 12.0},
        ]
    }
    with pytest.raises(ValueError):
        parse_rocm_smi("[1, 2]")


def test_parse_proc_files() -> None:
    before = parse_proc_stat(PROC_STAT)
    assert before == [(150, 1000), (250, 1000)]
    after = [(150 + 50, 1000 + 100), (250 + 0, 1000 + 100)]
    usage = cpu_usage(before, after)
    assert usage == [50.0, 0.0] and all(isinstance(v, float) for v in usage)
    assert parse_meminfo(MEMINFO) == {"total": 16303420 * 1024, "free": 8000000 * 1024}
    assert parse_net_dev(NET_DEV) == {
        "rx_bytes": 6000,
        "tx_bytes": 8000,
        "rx_packets": 60,
        "tx_packets": 80,
        "rx_errors": 1,
        "tx_errors": 2,
    }


def test_state_shape_and_server_check() -> None:
    monitor = HwMonitor()
    monitor.previous = [(0, 100), (0, 100)]
    sample = ProcSample([(50, 200), (100, 200)], {"total": 10, "free": 4}, parse_net_dev(NET_DEV))
    state = monitor.state(sample, 1714557600.7, parse_nvidia_smi(NVIDIA_SMI_OUTPUT), None)
    assert state["timestamp"] == 1714557600
    assert state["cpu_usage"]["cpu_per_core_percent_usage"] == [50.0, 100.0]
    assert checked_hw_state(state) == state
    # What a worker sends is checked field by field before it becomes an event.
    for broken in (
        None,
        {**state, "timestamp": "now"},
        {**state, "cpu_usage": {"cpu_per_core_percent_usage": ["x"]}},
        {**state, "memory_usage": {"total": -1, "free": 0}},
        {**state, "network_usage": {}},
        {**state, "nvidia_gpus": {"gpus": [{"id": 1}]}},
        {**state, "amd_gpus": {"gpus": "many"}},
    ):
        assert checked_hw_state(broken) is None
    # Integers a peer sends for usages become floats (the schema wants floats).
    ints = {**state, "cpu_usage": {"cpu_per_core_percent_usage": [1, 2]}}
    assert checked_hw_state(ints)["cpu_usage"]["cpu_per_core_percent_usage"] == [1.0, 2.0]


def test_sampling_proc_is_cheap() -> None:
    """One read of /proc per overview: measured CPU cost, far below a millisecond-scale
    budget (what it costs is printed for the record)."""
    sample_proc()
    runs = 50
    started = time.process_time()
    costs = [sample_proc().cost for _ in range(runs)]
    per_sample = (time.process_time() - started) / runs
    print(f"overview /proc sampling: {per_sample * 1000:.3f} ms CPU per sample")
    assert len(sample_proc().cpu) == os.cpu_count()
    assert per_sample < 0.02 and max(costs) < 0.05


# --- end to end --------------------------------------------------------------------------
FAKE_NVIDIA = f"#!/bin/sh\nprintf '{NVIDIA_SMI_OUTPUT.replace('%', '%%')}'\n"
FAKE_ROCM = f"#!/bin/sh\ncat <<'EOF'\n{ROCM_SMI_OUTPUT}\nEOF\n"


def fake_tools(directory: Path, nvidia: str, rocm: str) -> dict[str, str]:
    directory.mkdir()
    for name, text in (("nvidia-smi", nvidia), ("rocm-smi", rocm)):
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}


def start_worker(cluster: ClusterEnv, name: str, extra_env: dict[str, str], *args: str) -> None:
    cluster.start_process(
        name,
        [
            "--server-dir",
            str(cluster.server_dir),
            "worker",
            "start",
            "--detect-resources=none",
            f"--work-dir=workdir-{name}",
            "--cpus=2",
            "--hostname",
            name,
            *args,
        ],
        env={**cluster.env, **extra_env},
    )
    wait_until(lambda: name in cluster.running_hosts(), what=f"{name} to connect")


def overviews(lines: list[dict[str, Any]], worker_ids: dict[str, int], name: str) -> list[Any]:
    return [
        line["event"]
        for line in lines
        if line["event"]["type"] == "worker-overview"
        and line["event"]["id"] == worker_ids[name]
    ]


def test_worker_overview_events(cluster: ClusterEnv) -> None:
    journal = cluster.work_dir / "journal.bin"
    cluster.start_server("--journal", str(journal))
    stream_log = cluster.work_dir / "stream.out"
    with open(stream_log, "w") as out:
        stream = subprocess.Popen(
            [*HQ_ARGV, "--server-dir", str(cluster.server_dir), "journal", "stream"],
            stdout=out,
            stderr=subprocess.DEVNULL,
            env=cluster.env,
            start_new_session=True,
        )
    cluster.processes.append(("stream", stream))  # type: ignore[arg-type]

    good = fake_tools(cluster.work_dir / "good-tools", FAKE_NVIDIA, FAKE_ROCM)
    broken = fake_tools(cluster.work_dir / "broken-tools", "#!/bin/sh\nexit 3\n", "#!/bin/sh\n")
    gpus = ("--resource", "gpus/nvidia=[0,1]", "--resource", "gpus/amd=[0,1]")
    start_worker(cluster, "gpu", good, "--overview-interval", "200ms", *gpus)
    start_worker(cluster, "off", good, "--overview-interval", "0s", *gpus)
    start_worker(cluster, "plain", good, "--overview-interval", "200ms")
    start_worker(cluster, "broken", broken, "--overview-interval", "200ms", *gpus)
    worker_ids = {
        w["configuration"]["hostname"]: w["id"] for w in cluster.json(["worker", "list"])
    }

    def replayed() -> list[dict[str, Any]] | None:
        lines = [json.loads(x) for x in cluster.command(["journal", "replay"]).splitlines()]
        enough = all(len(overviews(lines, worker_ids, n)) >= 3 for n in ("gpu", "plain", "broken"))
        return lines if enough else None

    lines = wait_until(replayed, timeout=20, what="three overviews from each observing worker")
    assert overviews(lines, worker_ids, "off") == []

    state = overviews(lines, worker_ids, "gpu")[-1]["hw-state"]["state"]
    assert set(state) == {
        "timestamp",
        "cpu_usage",
        "memory_usage",
        "network_usage",
        "nvidia_gpus",
        "amd_gpus",
    }
    assert abs(state["timestamp"] - time.time()) < 60
    per_core = state["cpu_usage"]["cpu_per_core_percent_usage"]
    assert len(per_core) == os.cpu_count()
    assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in per_core)
    assert 0 < state["memory_usage"]["free"] <= state["memory_usage"]["total"]
    assert state["nvidia_gpus"] == parse_nvidia_smi(NVIDIA_SMI_OUTPUT)
    assert [g["id"] for g in state["amd_gpus"]["gpus"]] == ["0000:C1:00.0", "0000:C9:00.0"]

    plain = overviews(lines, worker_ids, "plain")[-1]["hw-state"]["state"]
    assert plain["nvidia_gpus"] is None and plain["amd_gpus"] is None
    failing = overviews(lines, worker_ids, "broken")[-1]["hw-state"]["state"]
    assert failing["nvidia_gpus"] is None and failing["amd_gpus"] is None
    broken_log = cluster.log_of("broken")
    assert "ERROR nvidia-smi exited with code 3" in broken_log
    assert "ERROR Cannot parse the output of rocm-smi" in broken_log
    assert (
        "INFO Observing nvidia GPU usage because of manually passed resource `gpus/nvidia`"
        in cluster.log_of("gpu")
    )

    # Watchers get them live; `worker info` shows the interval.
    def streamed() -> bool:
        return stream_log.read_text().count('"worker-overview"') >= 3

    wait_until(streamed, what="overviews on `hq journal stream`")
    info = cluster.command(["worker", "info", str(worker_ids["gpu"])])
    assert re.search(r"\| Overview interval +\| 200ms +\|", info), info
    off_info = cluster.command(["worker", "info", str(worker_ids["off"])])
    assert re.search(r"\| Overview interval +\| None +\|", off_info), off_info

    # Journaled (journal.md §1), so `journal export` of the file has them too.
    exported = subprocess.run(
        [*HQ_ARGV, "journal", "export", str(journal)],
        capture_output=True,
        text=True,
        env=cluster.env,
        check=True,
    ).stdout
    assert '"worker-overview"' in exported


def test_temporary_overviews_while_a_dashboard_watches(cluster: ClusterEnv) -> None:
    """Workers without an interval send overviews only while a stream asks for them
    (the dashboard does); other streams and the journal never see those."""
    from hyperq.client.session import connect_to_server
    from hyperq.common.context import Context

    journal = cluster.work_dir / "journal.bin"
    cluster.start_server("--journal", str(journal))
    cluster.start_worker(cpus=1, hostname="plain")
    plain_stream = cluster.work_dir / "plain-stream.out"
    with open(plain_stream, "w") as out:
        stream = subprocess.Popen(
            [*HQ_ARGV, "--server-dir", str(cluster.server_dir), "journal", "stream"],
            stdout=out,
            stderr=subprocess.DEVNULL,
            env=cluster.env,
            start_new_session=True,
        )
    cluster.processes.append(("stream", stream))  # type: ignore[arg-type]
    wait_until(lambda: "worker-connected" in plain_stream.read_text(), what="the plain stream")

    ctx = Context.from_options(str(cluster.server_dir), None, "never", False)
    received: list[dict[str, Any]] = []
    with connect_to_server(ctx) as session:
        session.request("journal-stream", follow=True, live_marker=True, overviews=True)
        marker = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(received) < 2:
            message = session.recv()
            if "live" in message:
                marker = message
            for line in message.get("events", ()):
                if line["event"]["type"] == "worker-overview":
                    received.append(line["event"])
        assert marker == {"live": True, "journal": True}
    assert len(received) == 2 and all(e["id"] == 1 for e in received)
    state = received[-1]["hw-state"]["state"]
    assert state["nvidia_gpus"] is None
    assert all(isinstance(v, float) for v in state["cpu_usage"]["cpu_per_core_percent_usage"])

    # Neither the other stream nor the journal got them.
    cluster.command(["journal", "flush"])
    assert "worker-overview" not in plain_stream.read_text()
    exported = subprocess.run(
        [*HQ_ARGV, "journal", "export", str(journal)],
        capture_output=True,
        text=True,
        env=cluster.env,
        check=True,
    ).stdout
    assert "worker-overview" not in exported and "worker-connected" in exported


def test_journal_with_overviews_restores(cluster: ClusterEnv) -> None:
    journal = cluster.work_dir / "journal.bin"
    server = cluster.start_server("--journal", str(journal))
    cluster.start_worker("--overview-interval", "100ms", cpus=1, hostname="observed")

    def overview_count() -> int:
        return cluster.command(["journal", "replay"]).count('"worker-overview"')

    wait_until(lambda: overview_count() >= 2, what="two journaled overviews")
    assert cluster.stop_server(server) == 0
    cluster.start_server("--journal", str(journal), name="server2")
    # The restored server replayed the overviews (the model ignores them) and still has
    # them in its history.
    assert overview_count() >= 2
    assert cluster.json(["server", "info"])["server_uid"]


def test_overviews_tell_a_dashboard_which_cpus_tasks_hold(cluster: ClusterEnv) -> None:
    from hyperq.client.session import connect_to_server
    from hyperq.common.context import Context
    from hyperq.dashboard.main import load_journal_events

    journal = cluster.work_dir / "journal.bin"
    cluster.start_server("--journal", str(journal))
    cluster.start_worker("--overview-interval", "100ms", cpus=2, hostname="busy")
    cluster.command(["submit", "--cpus=1", "--", "sleep", "30"])
    wait_until(lambda: cluster.job_states().get(1) == "running", what="the task to run")

    ctx = Context.from_options(str(cluster.server_dir), None, "never", False)
    with connect_to_server(ctx) as session:
        session.request("journal-stream", follow=True, live_marker=True, overviews=True)
        holding = None
        deadline = time.monotonic() + 20
        while holding is None and time.monotonic() < deadline:
            for line in session.recv().get("events", ()):
                if line["event"]["type"] == "worker-overview" and line.get("running_cpus"):
                    holding = line
    assert holding is not None, "no overview listed the running task"
    [[job, task, cpus]] = holding["running_cpus"]
    assert (job, task) == (1, 0) and len(cpus) == 1 and cpus[0] in ("0", "1")
    assert "running_cpus" not in holding["event"]  # beside the event JSON, not in it

    # Other readers see plain HyperQueue events.
    assert "running_cpus" not in cluster.command(["journal", "replay"])
    cluster.command(["journal", "flush"])
    replayed = [e for e in load_journal_events(str(journal)) if e.get("running_cpus")]
    assert replayed and replayed[-1]["running_cpus"][0][:2] == [1, 0]

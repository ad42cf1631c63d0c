"""`hq alloc` against the real one-node Slurm of `tools/slurm-local` (alloc.md §3–§6).

Skipped when Slurm does not answer, unless HYPERQ_REQUIRE_SLURM=1 (CI sets it): then
the tests fail instead, so that a broken Slurm setup cannot pass unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.autoalloc.utils import QUICK
from tests.harness import ClusterEnv, kill_process, wait_until

ADD = ["alloc", "add", "slurm", "--no-dry-run", "--time-limit", "5m"]


def slurm_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and any(
        state in result.stdout for state in ("idle", "mix", "alloc")
    )


def squeue_ids() -> set[str]:
    result = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10, check=True
    )
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[ClusterEnv]:
    if not slurm_answers():
        if os.environ.get("HYPERQ_REQUIRE_SLURM") == "1":
            pytest.fail("Slurm does not answer (HYPERQ_REQUIRE_SLURM=1; see tools/slurm-local)")
        pytest.skip("no Slurm here (start one with tools/slurm-local start)")
    env = ClusterEnv(tmp_path)
    env.env.update(QUICK)
    # Status refresh a bit slower than the test default: scontrol per allocation.
    env.env["HQ_AUTOALLOC_REFRESH_INTERVAL_MS"] = "500"
    before = squeue_ids()
    try:
        yield env
    finally:
        env.kill_all()
        leftovers = squeue_ids() - before
        if leftovers:
            subprocess.run(["scancel", *sorted(leftovers)], timeout=10, check=False)


def allocations(env: ClusterEnv) -> list[dict[str, object]]:
    return json.loads(env.command(["alloc", "info", "1"], json_mode=True))


def wait_for_status(env: ClusterEnv, status: str, timeout: float = 60) -> dict[str, object]:
    def check() -> dict[str, object] | None:
        found = [a for a in allocations(env) if a["status"] == status]
        return found[0] if found else None

    return wait_until(check, timeout=timeout, what=f"an allocation to be {status}")


def test_slurm_allocation_runs_tasks_and_goes_away(slurm: ClusterEnv) -> None:
    slurm.start_server()
    out = slurm.command(
        ["alloc", "add", "slurm", "--time-limit", "5m", "--idle-timeout", "2s", "--cpus", "1"]
    )
    # The trial allocation was submitted to Slurm and cancelled.
    assert "A trial allocation was submitted successfully" in out
    slurm.command(["submit", "--array", "0-2", "--", "sleep", "1"])
    allocation = wait_until(lambda: allocations(slurm), timeout=30, what="an allocation")[0]
    job_id = str(allocation["id"])
    assert job_id.isdigit()
    assert job_id in squeue_ids()

    def slurm_worker() -> dict[str, object] | None:
        workers = json.loads(slurm.command(["worker", "list", "--all"], json_mode=True))
        return next((w for w in workers if w["allocation"]), None)

    worker = wait_until(slurm_worker, timeout=60, what="a worker from the allocation")
    assert worker["allocation"] == {"manager": "Slurm", "id": job_id}
    table = slurm.command(["worker", "list", "--all"])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    assert ["SLURM", job_id] in [row[-2:] for row in rows]
    slurm.wait_for_job_state(1, "finished", timeout=60)
    # Idle workers stop after 2 s; their allocations end and leave Slurm's queue.
    wait_until(
        lambda: all(a["status"] in ("finished", "failed") for a in allocations(slurm)),
        timeout=60,
        what="every allocation to end",
    )
    ids = {str(a["id"]) for a in allocations(slurm)}
    assert all(a["status"] == "finished" for a in allocations(slurm))
    wait_until(lambda: not (ids & squeue_ids()), timeout=30, what="squeue to forget them")
    workdir = Path(str(allocation["workdir"]))
    assert (workdir / "hq-submit.sh").read_text().startswith("#!/bin/bash\n#SBATCH --nodes=1\n")
    assert (workdir / "jobid").read_text() == job_id
    assert (
        "Worker is stopping (IdleTimeout)"
        in (workdir / "stderr").read_text() + (workdir / "stdout").read_text()
    )


def test_slurm_forced_remove_cancels_running_allocation(slurm: ClusterEnv) -> None:
    slurm.start_server()
    slurm.command([*ADD, "--idle-timeout", "5m", "--cpus", "1"])
    slurm.command(["submit", "--", "sleep", "300"])
    running = wait_for_status(slurm, "running")
    job_id = str(running["id"])
    assert job_id in squeue_ids()
    refused = slurm.run(["alloc", "remove", "1"])
    assert refused.returncode == 1 and "Use `--force`" in refused.stderr
    slurm.command(["alloc", "remove", "1", "--force"])
    wait_until(lambda: job_id not in squeue_ids(), timeout=30, what="scancel to take effect")
    assert "Allocation " + job_id + " was removed" in slurm.log_of("server")


def test_slurm_server_restart_keeps_queue_and_allocation(slurm: ClusterEnv) -> None:
    journal = str(slurm.work_dir / "journal.bin")
    server = slurm.start_server("--journal", journal)
    slurm.command(
        [*ADD, "--idle-timeout", "5m", "--cpus", "1", "--name", "keep", "--", "--comment=hq"]
    )
    # Long enough to outlive the restart, short enough for finish-running to end it.
    slurm.command(["submit", "--", "sleep", "15"])
    running = wait_for_status(slurm, "running")
    job_id = str(running["id"])
    wait_until(
        lambda: json.loads(slurm.command(["alloc", "list"], json_mode=True))[0][
            "known_worker_resources"
        ],
        timeout=60,
        what="the worker of the allocation to connect",
    )
    before = json.loads(slurm.command(["alloc", "list"], json_mode=True))
    # Worker connections reach the journal with its periodic flush; force it here.
    slurm.command(["journal", "flush"])
    # A crash, not a stop: a stopping server would cancel its allocations.
    kill_process(server, signal.SIGKILL)
    slurm.start_server("--journal", journal, name="server2")
    after = json.loads(slurm.command(["alloc", "list"], json_mode=True))
    assert [q["id"] for q in after] == [1]
    # The same queue: ID, parameters and the resources its worker had.
    assert after == before
    restored = {a["id"]: a for a in allocations(slurm)}
    # Recognised by its Slurm job id (the restored job's task may ask for more).
    assert restored[job_id]["status"] == "running"
    assert job_id in squeue_ids()
    assert f"Allocation {job_id} of queue 1 restored" in slurm.log_of("server2")
    # The old worker cannot reach the new server and stops; Slurm ends the job and the
    # restored server sees it finish through its status refresh.
    wait_until(
        lambda: (
            {a["id"]: a["status"] for a in allocations(slurm)}[job_id] in ("finished", "failed")
        ),
        timeout=60,
        what="the restored allocation to end",
    )
    # The next queue gets a fresh ID after the highest one ever used.
    slurm.command([*ADD, "--cpus", "1"])
    assert [q["id"] for q in json.loads(slurm.command(["alloc", "list"], json_mode=True))] == [1, 2]

"""`hq alloc` end to end against the fake PBS/Slurm of fakemanager.py (alloc.md §2–§6):
every command in every output mode, the trial submission, the allocation life cycle
and the ways a manager tool can fail."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.autoalloc.utils import AllocEnv
from tests.harness import kill_process, wait_until


@pytest.fixture
def alloc(tmp_path: Path) -> Iterator[AllocEnv]:
    env = AllocEnv(tmp_path)
    try:
        yield env
    finally:
        env.kill_all()


# --- commands and output modes ------------------------------------------------------------


def test_queue_commands_in_all_modes(alloc: AllocEnv) -> None:
    alloc.start_server()
    out = alloc.add_queue("pbs", "--cpus", "2", "--", "--foo=bar", "a")
    assert "Allocation queue 1 successfully created" in out
    added = alloc.run(
        [
            *("--output-mode", "json", "alloc", "add", "slurm", "--no-dry-run", "-t", "1h"),
            *("--name", "foo", "--cpus", "1"),
        ]
    )
    assert added.returncode == 0 and json.loads(added.stdout) == {}
    quiet = alloc.run(
        ["--output-mode", "quiet", "alloc", "add", "slurm", "--no-dry-run", "-t", "1h"]
    )
    assert quiet.returncode == 0 and quiet.stdout == ""

    table = alloc.command(["alloc", "list"])
    header = next(line for line in table.splitlines() if line.startswith("| ID"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "ID", "State", "Backlog size", "Max workers per alloc", "Max worker count",
        "Timelimit", "Manager", "Worker resources", "Name", "Args",
    ]  # fmt: skip
    row = next(line for line in table.splitlines() if line.startswith("|  1"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["1", "ACTIVE", "1", "1", "0", "1h", "PBS", "<unknown>", "", "--foo=bar,a"]
    row2 = next(line for line in table.splitlines() if line.startswith("|  2"))
    assert [c.strip() for c in row2.strip("|").split("|")][6:9] == ["SLURM", "<unknown>", "foo"]

    listed = json.loads(alloc.command(["alloc", "list"], json_mode=True))
    assert [q["id"] for q in listed] == [1, 2, 3]
    assert listed[0] == {
        "id": 1,
        "name": None,
        "state": "Active",
        "manager": "PBS",
        "additional_args": ["--foo=bar", "a"],
        "backlog": 1,
        "max_workers_per_alloc": 1,
        "timelimit": 3600.0,
        "max_worker_count": None,
        "worker_args": [
            "--cpus", '"2"', "--on-server-lost", '"finish-running"', "--time-limit", '"1h"',
        ],
        "known_worker_resources": None,
    }  # fmt: skip
    assert listed[1]["manager"] == "Slurm" and listed[1]["name"] == "foo"
    assert alloc.command(["--output-mode", "quiet", "alloc", "list"]).strip() == ""

    assert "successfully paused" in alloc.command(["alloc", "pause", "1"])
    assert json.loads(alloc.command(["alloc", "list"], json_mode=True))[0]["state"] == "Paused"
    assert "PAUSED" in alloc.command(["alloc", "list"])
    resumed = alloc.run(["--output-mode", "json", "alloc", "resume", "1"])
    assert json.loads(resumed.stdout) == {}
    assert "Allocation queue 1 successfully resumed" in resumed.stderr
    assert json.loads(alloc.command(["alloc", "list"], json_mode=True))[0]["state"] == "Active"

    assert "Allocation queue 2 successfully removed" in alloc.command(["alloc", "remove", "2"])
    assert [q["id"] for q in json.loads(alloc.command(["alloc", "list"], json_mode=True))] == [1, 3]
    assert json.loads(alloc.command(["alloc", "info", "1"], json_mode=True)) == []
    removed = alloc.run(["--output-mode", "quiet", "alloc", "remove", "3"])
    assert removed.returncode == 0 and removed.stdout == ""


def test_command_errors(alloc: AllocEnv) -> None:
    alloc.start_server()
    result = alloc.run(["alloc", "add", "pbs"])
    assert result.returncode == 2 and "--time-limit <TIME_LIMIT>" in result.stderr
    result = alloc.run(["alloc", "add", "slurm", "--time-limit", "1h", "--backlog", "0"])
    assert result.returncode == 2 and "Backlog has to be at least 1" in result.stderr
    result = alloc.run(["alloc", "add", "pbs", "--time-limit", "xx"])
    assert result.returncode == 2 and "Could not parse PBS walltime" in result.stderr
    result = alloc.run(["alloc", "add", "pbs", "-t", "1h", "--min-utilization", "2"])
    assert "Minimal utilization has to be in the interval [0.0, 1.0]." in result.stderr
    result = alloc.run(
        ["alloc", "add", "pbs", "--no-dry-run", "-t", "1h", "--worker-time-limit", "2h"]
    )
    assert result.returncode == 1
    assert "Worker time limit cannot be larger than queue time limit" in result.stderr
    for args, message in [
        (["alloc", "info", "7"], "Queue 7 not found"),
        (["alloc", "remove", "7"], "Allocation queue not found"),
        (["alloc", "pause", "7"], "Queue 7 that should have been paused was not found"),
        (["alloc", "resume", "7"], "Queue 7 that should have been resumed was not found"),
        (["alloc", "log", "9.job", "stdout"], "Allocation 9.job not found"),
    ]:
        result = alloc.run(args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    result = alloc.run(["--output-mode", "json", "alloc", "log", "1", "stdout"])
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "error": "JSON output mode doesn't support allocation output"
    }
    warned = alloc.run(["alloc", "add", "pbs", "--no-dry-run", "-t", "1h", "--idle-timeout", "1h"])
    assert "You have set an idle timeout longer than 10 minutes" in warned.stderr
    assert "the queue will operate in probing mode" in warned.stderr


# --- trial submission ----------------------------------------------------------------------


@pytest.mark.parametrize("manager", ["pbs", "slurm"])
def test_dry_run_and_trial(alloc: AllocEnv, manager: str) -> None:
    alloc.start_server()
    out = alloc.command(["alloc", "dry-run", manager, "--time-limit", "10m"])
    assert "A trial allocation was submitted successfully" in out
    submit_tool, cancel_tool = ("qsub", "qdel") if manager == "pbs" else ("sbatch", "scancel")
    (submit,) = alloc.calls(submit_tool)
    script = alloc.jobs()["1.job"]["script_text"]
    assert ("#PBS -h" in script) == (manager == "pbs")
    assert ("-N hq-0-1" in script) or ("--job-name=hq-0-1" in script)
    assert [c["arguments"] for c in alloc.calls(cancel_tool)] == [["1.job"]]
    assert not Path(submit["cwd"]).exists()  # the trial's temp dir is gone

    alloc.misbehave(**{submit_tool: "fail"})
    result = alloc.run(["alloc", "add", manager, "--time-limit", "10m"])
    assert result.returncode == 1
    assert "Dry-run (test allocation submission) has failed" in result.stderr
    assert f"Could not submit allocation: {submit_tool} execution failed" in result.stderr
    assert "Stderr: FOOBAR" in result.stderr
    assert "You can find the submitted script at" in result.stderr
    assert json.loads(alloc.command(["alloc", "list"], json_mode=True)) == []

    alloc.misbehave(**{cancel_tool: "fail"})
    result = alloc.run(["alloc", "dry-run", manager, "--time-limit", "10m"])
    assert result.returncode == 1
    assert "Could not cancel allocation 2.job" in result.stderr


def test_dry_run_missing_qsub(alloc: AllocEnv) -> None:
    (alloc.bin_dir / "qsub").unlink()
    alloc.env["PATH"] = f"{alloc.bin_dir}:/usr/bin:/bin"
    alloc.start_server()
    result = alloc.run(["alloc", "dry-run", "pbs", "--time-limit", "10m"])
    assert result.returncode == 1
    assert "Could not submit allocation: qsub start failed" in result.stderr


# --- life cycle ----------------------------------------------------------------------------


@pytest.mark.parametrize("manager", ["pbs", "slurm"])
def test_allocation_life_cycle(alloc: AllocEnv, manager: str) -> None:
    alloc.start_server()
    alloc.add_queue(manager, "--name", "foo", "--cpus", "1", "--idle-timeout", "30m")
    alloc.command(["submit", "--array", "0-3", "--", "sleep", "0"])
    first = alloc.wait_for_alloc("queued")
    assert first["id"] == "1.job" and first["target_worker_count"] == 1
    run_dir = alloc.current_run_dir()
    assert first["workdir"] == f"{run_dir}/autoalloc/1-foo/001"
    job = alloc.jobs()["1.job"]
    assert job["cwd"] == first["workdir"]
    assert (
        f'--idle-timeout "30m" --manager "{manager}" --server-dir "{run_dir}"'
        in (job["script_text"])
    )
    assert "foo-1" in job["script_text"]
    table = alloc.command(["alloc", "info", "1"])
    assert "| 1.job | QUEUED |" in table

    worker = alloc.start_alloc_worker(manager, "1.job", "w1")
    alloc.wait_for_alloc("running")
    alloc.wait_for_job_state(1, "finished")
    workers = json.loads(alloc.command(["worker", "list"], json_mode=True))
    assert workers[0]["allocation"] == {
        "manager": "PBS" if manager == "pbs" else "Slurm",
        "id": "1.job",
    }
    listed = json.loads(alloc.command(["alloc", "list"], json_mode=True))
    assert listed[0]["known_worker_resources"]["resources"][0]["name"] == "cpus"
    assert "cpus 1" in alloc.command(["alloc", "list"])
    # A worker that dies within a minute of connecting crashed: the allocation failed.
    kill_process(worker, signal.SIGKILL)
    alloc.wait_for_alloc("failed")
    assert "Worker 1 connected from allocation 1.job" in alloc.log_of("server")

    assert alloc.command(["alloc", "info", "1", "--filter", "running"]).count(".job") == 0
    assert (
        len(
            json.loads(
                alloc.command(["alloc", "info", "1", "--filter", "finished"], json_mode=True)
            )
        )
        == 1
    )


@pytest.mark.parametrize("manager", ["pbs", "slurm"])
def test_status_refresh(alloc: AllocEnv, manager: str) -> None:
    alloc.start_server()
    alloc.add_queue(manager, "--cpus", "1", "--backlog", "1")
    alloc.command(["submit", "--array", "0-9", "--", "sleep", "0"])
    alloc.wait_for_alloc("queued")
    alloc.set_job("1.job", state="running", start=1_700_000_000.0)
    alloc.wait_for_alloc("running")
    alloc.set_job("1.job", state="finished", end=1_700_000_100.0)
    done = alloc.wait_for_alloc("finished")
    # Ended by the manager's word (not by its workers): JSON has no start and end times,
    # the table shows them.
    assert done["started_at"] is None and done["ended_at"] is None
    assert done["queued_at"] is not None
    row = next(
        line for line in alloc.command(["alloc", "info", "1"]).splitlines() if "1.job" in line
    )
    assert row.count(".20") == 3  # queue, start and finish dates
    # The queue has room again: the next allocation is submitted.
    alloc.wait_for_alloc("queued", index=1)
    alloc.set_job("2.job", state="failed", start=1_700_000_000.0, end=1_700_000_100.0)
    alloc.wait_for_alloc("failed", index=1)


def test_log_command(alloc: AllocEnv) -> None:
    alloc.start_server()
    alloc.add_queue("slurm", "--cpus", "1")
    alloc.command(["submit", "--", "sleep", "0"])
    allocation = alloc.wait_for_alloc("queued")
    Path(allocation["workdir"], "stdout").write_text("hello from the allocation\n")
    result = alloc.run(["alloc", "log", "1.job", "stdout"])
    assert result.returncode == 0
    assert result.stdout == "hello from the allocation\n"
    assert f"Outputting allocation path at {allocation['workdir']}/stdout" in result.stderr
    result = alloc.run(["alloc", "log", "1.job", "stderr"])
    assert result.returncode == 0 and "cannot be opened" in result.stderr


def test_paused_queue_submits_nothing(alloc: AllocEnv) -> None:
    alloc.start_server()
    alloc.add_queue("pbs", "--cpus", "1")
    alloc.command(["alloc", "pause", "1"])
    alloc.command(["submit", "--", "sleep", "0"])
    # A second, active queue gets the allocation; the paused one never submits.
    alloc.add_queue("pbs", "--cpus", "1")
    alloc.wait_for_alloc("queued", queue_id=2)
    assert alloc.allocations(1) == []


# --- removing and stopping ------------------------------------------------------------------


@pytest.mark.parametrize("manager", ["pbs", "slurm"])
def test_remove_needs_force_for_running_allocations(alloc: AllocEnv, manager: str) -> None:
    alloc.start_server()
    alloc.add_queue(manager, "--cpus", "1", "--backlog", "2", "--idle-timeout", "30m")
    alloc.command(["submit", "--array", "0-1", "--", "sleep", "100"])
    alloc.wait_for_alloc("queued", index=1)
    alloc.start_alloc_worker(manager, "1.job", "w1")
    alloc.wait_for_alloc("running")
    result = alloc.run(["alloc", "remove", "1"])
    assert result.returncode == 1
    assert "Allocation queue has running jobs, so it will not be removed." in result.stderr
    assert alloc.allocations()[0]["status"] == "running"
    assert "successfully removed" in alloc.command(["alloc", "remove", "1", "--force"])
    cancel_tool = "qdel" if manager == "pbs" else "scancel"
    assert sorted(c["arguments"][0] for c in alloc.calls(cancel_tool)) == ["1.job", "2.job"]
    assert json.loads(alloc.command(["alloc", "list"], json_mode=True)) == []


def test_server_stop_cancels_allocations(alloc: AllocEnv) -> None:
    server = alloc.start_server()
    alloc.add_queue("slurm", "--cpus", "1", "--backlog", "3")
    alloc.add_queue("pbs", "--cpus", "1", "--backlog", "1")
    alloc.command(["alloc", "pause", "2"])
    alloc.command(["submit", "--array", "0-9", "--", "sleep", "0"])
    alloc.wait_for_alloc("queued", index=2)
    assert alloc.stop_server(server) == 0
    assert sorted(c["arguments"][0] for c in alloc.calls("scancel")) == ["1.job", "2.job", "3.job"]


# --- a misbehaving manager costs one allocation, not the server -------------------------------


def test_submit_failures_back_off_and_server_survives(alloc: AllocEnv) -> None:
    alloc.env["HQ_AUTOALLOC_COMMAND_TIMEOUT_MS"] = "500"
    alloc.start_server()
    alloc.misbehave(sbatch="hang")
    alloc.add_queue("slurm", "--cpus", "1")
    alloc.command(["submit", "--", "sleep", "0"])
    wait_until(
        lambda: (
            "Failed to submit allocation into queue 1: sbatch execution failed: timed out"
            in alloc.log_of("server")
        ),
        what="a timed-out sbatch",
    )
    assert alloc.allocations() == []
    # The server still answers, and one failure means back-off: no second attempt now.
    assert json.loads(alloc.command(["alloc", "list"], json_mode=True))[0]["id"] == 1
    assert len(alloc.calls("sbatch")) == 1


def test_garbage_from_sbatch_and_qstat(alloc: AllocEnv) -> None:
    alloc.start_server()
    alloc.misbehave(sbatch="garbage")
    alloc.add_queue("slurm", "--cpus", "1")
    alloc.command(["submit", "--", "sleep", "0"])
    wait_until(
        lambda: "Missing job id in sbatch output" in alloc.log_of("server"),
        what="garbage sbatch output to be reported",
    )
    # Queue 1 would take the task first: only queue 2 shall submit now.
    alloc.command(["alloc", "remove", "1"])
    alloc.misbehave(qstat="garbage")
    alloc.add_queue("pbs", "--cpus", "1")
    alloc.wait_for_alloc("queued", queue_id=2)
    # Eleven failed status queries in a row: the queued allocation is given up on.
    alloc.wait_for_alloc("failed", queue_id=2)


def test_qsub_missing_fails_the_submission(alloc: AllocEnv) -> None:
    (alloc.bin_dir / "qsub").unlink()
    alloc.env["PATH"] = f"{alloc.bin_dir}:/usr/bin:/bin"
    alloc.start_server()
    alloc.add_queue("pbs", "--cpus", "1")
    alloc.command(["submit", "--", "sleep", "0"])
    wait_until(
        lambda: (
            "Failed to submit allocation into queue 1: qsub start failed" in alloc.log_of("server")
        ),
        what="the missing qsub to be reported",
    )
    assert alloc.allocations() == []


# --- journal and restore (alloc.md §6) --------------------------------------------------------


def export(alloc: AllocEnv, journal: str) -> list[dict[str, object]]:
    out = alloc.run(["journal", "export", journal])
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["event"] for line in out.stdout.splitlines()]


def test_queues_survive_restarts(alloc: AllocEnv) -> None:
    journal = str(alloc.work_dir / "journal.bin")
    server = alloc.start_server("--journal", journal)
    for name in ("a", "b", "c"):
        alloc.add_queue("pbs", "--name", name, "--cpus", "2", "--", "-q", name)
    alloc.command(["alloc", "remove", "2"])
    alloc.command(["submit", "--", "sleep", "0"])
    alloc.wait_for_alloc("queued")
    worker = alloc.start_alloc_worker("pbs", "1.job", "w1")
    alloc.wait_for_alloc("running")
    alloc.wait_for_job_state(1, "finished")
    listed = json.loads(alloc.command(["alloc", "list"], json_mode=True))
    assert listed[0]["known_worker_resources"] is not None
    kill_process(worker, signal.SIGKILL)
    alloc.wait_for_alloc("failed")
    assert alloc.stop_server(server) == 0

    events = [e for e in export(alloc, journal) if str(e["type"]).startswith("autoalloc-")]
    assert [e["type"] for e in events] == [
        "autoalloc-queue-created",
        "autoalloc-queue-created",
        "autoalloc-queue-created",
        "autoalloc-queue-removed",
        "autoalloc-allocation-queued",
        "autoalloc-allocation-started",
        "autoalloc-allocation-finished",
    ]
    assert events[3] == {"type": "autoalloc-queue-removed", "queue-id": 2}
    assert events[4] == {
        "type": "autoalloc-allocation-queued",
        "queue-id": 1,
        "allocation-id": "1.job",
        "worker-count": 1,
    }
    assert events[0]["params"]["name"] == "a"  # type: ignore[index]

    alloc.start_server("--journal", journal, name="server2")
    assert json.loads(alloc.command(["alloc", "list"], json_mode=True)) == listed
    alloc.add_queue("slurm", "--cpus", "1")
    ids = [q["id"] for q in json.loads(alloc.command(["alloc", "list"], json_mode=True))]
    assert ids == [1, 3, 4]
    # Ended allocations are not restored.
    assert alloc.allocations(1) == []
    alloc.command(["journal", "prune"])
    kept = [e["type"] for e in export(alloc, journal)]
    assert kept.count("autoalloc-queue-created") == 4


def test_multi_node_allocation_and_rust_log(alloc: AllocEnv) -> None:
    alloc.env["RUST_LOG"] = "foo"
    alloc.start_server()
    alloc.add_queue("pbs", "--cpus", "1", "--max-workers-per-alloc", "2")
    alloc.command(["submit", "--nodes", "2", "--", "sleep", "0"])
    allocation = alloc.wait_for_alloc("queued")
    assert allocation["target_worker_count"] == 2
    script = alloc.jobs()["1.job"]["script_text"]
    assert "#PBS -l select=2\n" in script
    last = script.splitlines()[-1]
    assert last.startswith("pbsdsh -- bash -l -c 'RUST_LOG=foo ")
    assert last.endswith('--time-limit "1h"\'')

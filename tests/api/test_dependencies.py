"""Task dependencies through the API: the job goes as one graph (or several parts)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from hyperq.api import Client, Job
from hyperq.api.client import FailedJobsException
from hyperq.api.ffi.protocol import ResourceRequest
from tests.api.conftest import ApiEnv, bash
from tests.harness import wait_until
from tests.tableparse import parse_table


def prepare(
    api_env: ApiEnv, cpus: int = 1, workers: int = 1, **job_args: object
) -> tuple[Job, Client]:
    api_env.start_server()
    for _ in range(workers):
        api_env.start_worker(cpus=cpus)
    return Job(**job_args), Client(api_env.server_dir)  # type: ignore[arg-type]


def test_single_dep(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, cpus=2)
    writer = job.program(bash("sleep 1 && echo data > foo.txt"))
    job.program(bash("cat foo.txt > copy.txt"), deps=[writer])
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted]) is True
    assert Path("copy.txt").read_text() == "data\n"
    assert api_env.job_states() == {1: "finished"}


def test_fan_in_and_chain_order(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, cpus=4)
    parts = [job.program(bash(f"echo {i} > part{i}"), stdout=None) for i in range(5)]
    joined = job.program(bash("cat part0 part1 part2 part3 part4 > all"), deps=parts)
    last = joined
    for index in range(10):
        last = job.program(bash(f"cat all > step{index}"), deps=[last], stdout=None)
    submitted = client.submit(job)
    client.wait_for_jobs([submitted])
    assert Path("all").read_text() == "0\n1\n2\n3\n4\n"
    assert Path("step9").read_text() == "0\n1\n2\n3\n4\n"
    tasks = api_env.json(["task", "list", "1"])["1"]
    start = {t["id"]: t["started_at"] for t in tasks}
    end = {t["id"]: t["finished_at"] for t in tasks}
    assert all(end[i] <= start[5] for i in range(5))
    assert all(end[i] <= start[i + 1] for i in range(5, 15))


def test_failed_dependency_aborts_dependants(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    first = job.program(bash("exit 1"), name="first")
    second = job.program(bash("echo never > n1"), deps=[first])
    job.program(bash("echo never > n2"), deps=[second])
    job.program(bash("echo free > free"))
    submitted = client.submit(job)
    with pytest.raises(FailedJobsException) as info:
        client.wait_for_jobs([submitted])
    assert api_env.task_states(1) == {0: "failed", 1: "aborted", 2: "aborted", 3: "finished"}
    assert api_env.job_states() == {1: "failed"}
    cwd = api_env.work_dir
    # Aborted dependants never ran: only the failed task is listed.
    assert str(info.value) == (
        "The following tasks of job `1` have failed:\n"
        "Task first (id=0):\n"
        "Program terminated with exit code 1.\n"
        "You can find more information here:\n"
        f"Working directory: {cwd}\n"
        f"Stdout: {cwd}/0.stdout\n"
        f"Stderr: {cwd}/0.stderr\n"
        "\n"
    )
    assert not Path("n1").exists() and not Path("n2").exists()
    assert Path("free").read_text() == "free\n"
    assert list(client.get_failed_tasks(submitted)) == [0]


def test_function_dependencies(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, cpus=2)

    def produce(path: str) -> None:
        Path(path).write_text("produced\n")

    def consume(source: str, target: str) -> None:
        Path(target).write_text(Path(source).read_text().upper())

    made = job.function(produce, args=("a.txt",))
    job.function(consume, args=("a.txt", "b.txt"), deps=[made])
    client.wait_for_jobs([client.submit(job)])
    assert Path("b.txt").read_text() == "PRODUCED\n"


def test_long_chain(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    last = None
    for _ in range(51):
        last = job.program(["true"], deps=[last] if last else (), stdout=None, stderr=None)
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted]) is True
    assert api_env.job_states() == {1: "finished"}
    assert set(api_env.task_states(1).values()) == {"finished"}


def test_kill_worker_with_deps(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, cpus=4, workers=2)
    heads = [job.program(["sleep", "30"], stdout=None, stderr=None) for _ in range(8)]
    job.program(["true"], deps=heads)
    submitted = client.submit(job)
    wait_until(lambda: api_env.job_states().get(1) == "running", what="the job to run")
    for name, process in api_env.processes:
        if name.startswith("worker"):
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    wait_until(
        lambda: set(api_env.task_states(submitted.id).values()) == {"waiting"},
        what="every task to wait again",
    )
    assert api_env.job_states() == {1: "waiting"}


def test_dependency_on_a_task_of_another_job(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, workers=0)
    other = Job()
    other.program("uname")
    foreign = other.program("uname")
    job.program("uname", deps=[foreign])
    with pytest.raises(Exception, match="Invalid dependency id"):
        client.submit(job)
    assert api_env.job_states() == {}


def test_resource_variants(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, workers=0)
    api_env.start_worker("--resource", "gpus=[0,1]", cpus=1)
    job.program(
        bash("echo $HQ_RESOURCE_VARIANT > variant"),
        resources=[ResourceRequest(cpus=2), ResourceRequest(cpus=1, resources={"gpus": 2})],
    )
    submitted = client.submit(job)
    table = parse_table(api_env.command(["task", "info", str(submitted.id), "0"]))
    assert table.get_row_value("Resources") == (
        "# Variant 1\ncpus: 2 compact\n# Variant 2\ncpus: 1 compact\ngpus: 2 compact"
    )
    client.wait_for_jobs([submitted])
    # Only the second variant fits this worker.
    assert Path("variant").read_text() == "1\n"


def test_big_job_in_parts_keeps_deps(api_env: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    import hyperq.api._submit as submit_module

    # A tiny budget: every few tasks start a new part of the same (open, then closed) job.
    monkeypatch.setattr(submit_module, "PART_BUDGET", 1000)
    split = submit_module._tables
    sizes: list[int] = []

    def recording_tables(rows: Any, submit_dir: str) -> list[Any]:
        tables = split(rows, submit_dir)
        sizes.extend(len(table) for table in tables)
        return tables

    monkeypatch.setattr(submit_module, "_tables", recording_tables)
    job, client = prepare(api_env, cpus=2, name="parts")
    previous = None
    for index in range(12):
        previous = job.program(
            bash(f"echo {index} >> trail"),
            deps=[previous] if previous else (),
            stdout=None,
            stderr=None,
        )
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted]) is True
    assert Path("trail").read_text() == "".join(f"{i}\n" for i in range(12))
    assert len(sizes) > 2 and sum(sizes) == 12
    info = api_env.json(["job", "info", "1"])[0]
    assert info["info"]["name"] == "parts"
    assert api_env.job_states() == {1: "finished"}

"""Program tasks through the API against real server and worker processes."""

from __future__ import annotations

import datetime
import json
import random
from pathlib import Path
from typing import Any

import pytest

from hyperq.api import Client, Job
from hyperq.api.client import FailedJobsException
from hyperq.api.ffi.protocol import ResourceRequest
from hyperq.api.output import StdioDef
from hyperq.api.validation import ValidationException
from tests.api.conftest import ApiEnv, bash
from tests.harness import wait_until
from tests.tableparse import parse_table


def prepare(
    api_env: ApiEnv, workers: int = 1, cpus: int = 1, **job_args: Any
) -> tuple[Job, Client]:
    api_env.start_server()
    for _ in range(workers):
        api_env.start_worker(cpus=cpus)
    return Job(**job_args), Client(api_env.server_dir)


def task_info_table(api_env: ApiEnv, job_id: int, task_id: int = 0) -> Any:
    return parse_table(api_env.command(["task", "info", str(job_id), str(task_id)]))


def test_submit_empty_job(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, workers=0)
    with pytest.raises(Exception, match="Submitted job must have at least a single task"):
        client.submit(job)
    assert api_env.job_states() == {}


def test_submit_simple(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program("uname")
    submitted = client.submit(job)
    assert submitted.id == 1 and submitted.job is job
    assert client.wait_for_jobs([submitted]) is True
    assert api_env.job_states() == {1: "finished"}
    # The Python default output: <cwd>/<task id>.stdout, no job-<id> folder.
    assert Path("0.stdout").read_text().strip() != ""


def test_submit_cwd_env_stdio_stdin(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    workdir = api_env.work_dir / "workdir"
    workdir.mkdir()
    job.program(
        bash("echo $FOO $BAZ; cat -; >&2 echo err; pwd > where"),
        cwd=str(workdir),
        env={"FOO": "BAR", "BAZ": "123"},
        stdout="out",
        stderr="err",
        stdin=b"Hello\n",
    )
    submitted = client.submit(job)
    client.wait_for_jobs([submitted])
    # Relative output paths are relative to the task's cwd, as in the CLI.
    assert (workdir / "out").read_text() == "BAR 123\nHello\n"
    assert (workdir / "err").read_text() == "err\n"
    assert (workdir / "where").read_text() == f"{workdir}\n"
    assert task_info_table(api_env, submitted.id).get_row_value("Workdir") == str(workdir)


def test_stdin_str_is_utf8(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("cat - > got"), stdin="žluťoučký\n")
    client.wait_for_jobs([client.submit(job)])
    assert Path("got").read_text() == "žluťoučký\n"


def test_default_env_and_workdir(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, default_env={"A": "1", "B": "2"}, default_workdir="wd")
    Path("wd").mkdir()
    job.program(bash("echo $A $B > out"), env={"B": "x"})
    client.wait_for_jobs([client.submit(job)])
    assert Path("wd/out").read_text() == "1 x\n"


def test_empty_stdio(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("echo out; echo err >&2"), stdout=None, stderr=None)
    client.wait_for_jobs([client.submit(job)])
    assert not Path("0.stdout").exists() and not Path("0.stderr").exists()


def test_stdio_default_path_and_rm_if_finished(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(
        bash("echo a; echo b >&2"),
        stdout=StdioDef.remove_if_finished(path="out"),
        stderr=StdioDef.remove_if_finished(path="err"),
    )
    # `StdioDef(path=None)` is the CLI's default path, with the job-<id> folder.
    job.program(bash("echo c"), stdout=StdioDef(path=None, on_close="none"))
    submitted = client.submit(job)
    client.wait_for_jobs([submitted])
    assert not Path("out").exists() and not Path("err").exists()
    assert Path(f"job-{submitted.id}/1.stdout").read_text() == "c\n"


def test_wait_for_job_raises_and_client_is_reusable(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("exit 1"))
    submitted = client.submit(job)
    with pytest.raises(FailedJobsException) as info:
        client.wait_for_jobs([submitted])
    cwd = str(api_env.work_dir)
    assert str(info.value) == (
        "The following tasks of job `1` have failed:\n"
        "Task 0 (id=0):\n"
        "Program terminated with exit code 1.\n"
        "You can find more information here:\n"
        f"Working directory: {cwd}\n"
        f"Stdout: {cwd}/0.stdout\n"
        f"Stderr: {cwd}/0.stderr\n"
        "\n"
    )
    assert info.value.job_map == {1: job}
    job = Job()
    job.program(bash("echo Test1 > output"))
    assert client.wait_for_jobs([client.submit(job)]) is True
    assert Path("output").read_text() == "Test1\n"


def test_failed_jobs_exception_text_many_tasks_and_names(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, max_fails=None)
    for index in range(7):
        job.program(bash("exit 3"), name=f"t{index}", stdout=None, stderr=None)
    job.program(bash("true"))
    submitted = client.submit(job)
    with pytest.raises(FailedJobsException) as info:
        client.wait_for_jobs([submitted])
    text = str(info.value)
    # Only the first five failed tasks are printed, each with its label.
    expected = "The following tasks of job `1` have failed:\n" + "".join(
        f"Task t{i} (id={i}):\nProgram terminated with exit code 3.\n"
        f"You can find more information here:\nWorking directory: {api_env.work_dir}\n"
        for i in range(5)
    )
    assert text == expected + "\n"
    assert sorted(info.value.failed_tasks[1]) == list(range(7))


def test_get_failed_tasks_without_raise(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("echo a"))
    job.program(bash("exit 1"), stdout=None)
    job.program(bash("echo b"))
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted], raise_on_error=False) is False
    errors = client.get_failed_tasks(submitted)
    assert list(errors) == [1]
    failure = errors[1]
    assert failure.error == "Program terminated with exit code 1."
    assert failure.cwd == str(api_env.work_dir)
    assert failure.stdout is None
    assert failure.stderr == f"{api_env.work_dir}/1.stderr"
    with pytest.raises(KeyError):
        client.get_failed_tasks(type(submitted)(job=job, id=42))


def test_wait_for_several_jobs(api_env: ApiEnv) -> None:
    _job, client = prepare(api_env)
    submitted = []
    for script in ("true", "exit 1", "true"):
        job = Job()
        job.program(bash(script))
        submitted.append(client.submit(job))
    assert client.wait_for_jobs(submitted, raise_on_error=False) is False
    with pytest.raises(FailedJobsException) as info:
        client.wait_for_jobs(submitted)
    assert list(info.value.failed_tasks) == [2]
    assert client.wait_for_jobs([submitted[0], submitted[2]]) is True


def test_job_cpus_resources(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("echo Hello"), resources=ResourceRequest(cpus="1"))
    job.program(bash("echo Hello"), resources=ResourceRequest(cpus="2"))
    job.program(bash("echo Hello"), resources=ResourceRequest(cpus="all"))
    submitted = client.submit(job)
    wait_until(
        lambda: api_env.task_states(submitted.id) == {0: "finished", 1: "waiting", 2: "finished"},
        what="tasks 0 and 2 to finish",
    )


def test_resources_task_info(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(
        bash("echo Hello"),
        resources=ResourceRequest(cpus="2", resources={"res0": 1, "res1": 105.1}),
    )
    submitted = client.submit(job)
    table = task_info_table(api_env, submitted.id)
    assert (
        table.get_row_value("Resources") == "cpus: 2 compact\nres0: 1 compact\nres1: 105.1 compact"
    )
    assert api_env.job_states() == {1: "waiting"}


def test_generic_resources_run(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, workers=0)
    api_env.start_worker("--resource", "gpus=range(1-2)", "--resource", "fairy=sum(1000)", cpus=1)
    job.program(bash("echo Hello"), resources=ResourceRequest(resources={"gpus": 1}))
    job.program(bash("echo Hello"), resources=ResourceRequest(resources={"gpus": 4}))
    job.program(bash("echo Hello"), resources=ResourceRequest(resources={"gpus": 2, "fairy": 2000}))
    job.program(bash("echo Hello"), resources=ResourceRequest(resources={"gpus": "2 scatter"}))
    submitted = client.submit(job)
    wait_until(
        lambda: (
            api_env.task_states(submitted.id)
            == {0: "finished", 1: "waiting", 2: "waiting", 3: "finished"}
        ),
        what="tasks 0 and 3 to finish",
    )


def test_resource_min_time_json(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, workers=0)
    job.program(
        bash("echo Hello"), resources=ResourceRequest(min_time=datetime.timedelta(seconds=42))
    )
    submitted = client.submit(job)
    info = api_env.json(["job", "info", str(submitted.id)])
    submits = info[0]["submits"] if isinstance(info, list) else info["submits"]
    desc = submits[0].get("graph", [submits[0].get("array")])[0]
    assert desc["resources"][0]["min_time"] == 42.0


def test_priority_and_crash_limit_task_info(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("echo Hello"), priority=2, crash_limit=3)
    submitted = client.submit(job)
    client.wait_for_jobs([submitted])
    table = task_info_table(api_env, submitted.id)
    assert table.get_row_value("Priority") == "2"
    assert table.get_row_value("Crash limit") == "3"


def test_task_priorities_order(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    priorities = list(range(-10, 10))
    random.Random(123123).shuffle(priorities)
    for priority in priorities:
        job.program(bash("true"), priority=priority, stdout=None, stderr=None)
    submitted = client.submit(job)
    client.wait_for_jobs([submitted])
    tasks = json.loads(api_env.command(["task", "list", "1"], json_mode=True))["1"]
    started = [t["id"] for t in sorted(tasks, key=lambda t: t["started_at"])]
    assert started == sorted(range(len(priorities)), key=lambda i: -priorities[i])


def test_job_name_and_max_fails(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, workers=0, name="Foo", max_fails=3)
    job.program("uname")
    unnamed = Job()
    unnamed.program("uname")
    client.submit(job)
    client.submit(unnamed)
    infos = api_env.json(["job", "info", "1-2"])
    assert [i["info"]["name"] for i in infos] == ["Foo", "PyAPI job"]
    assert [i["max_fails"] for i in infos] == [3, 1]


def test_job_forget(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program("uname")
    submitted = client.submit(job)
    client.wait_for_jobs([submitted])
    client.forget(submitted)
    assert api_env.job_states() == {}
    # A forgotten (unknown) job does not block waiting.
    assert client.wait_for_jobs([submitted]) is True
    with pytest.raises(RuntimeError, match="Cannot forget job 1"):
        client.forget(1)


def test_job_forget_running(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("sleep 30"))
    submitted = client.submit(job)
    api_env.wait_for_job_state(submitted.id, "running")
    with pytest.raises(RuntimeError) as info:
        client.forget(submitted)
    assert str(info.value) == (
        "Cannot forget job 1. It either hasn't been completed yet, or it does not exist"
    )
    with pytest.raises(ValueError, match="Invalid value of type <class 'str'> passed to"):
        client.forget("1")  # type: ignore[arg-type]


def test_client_errors(api_env: ApiEnv, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="No running instance of HQ found"):
        Client(tmp_path / "nothing-here")
    job = Job()
    with pytest.raises(ValidationException, match="Each program argument must"):
        job.program(["echo", 1])  # type: ignore[list-item]
    with pytest.raises(Exception, match="stdin has to be str, bytes, or None"):
        job.program(["echo"], stdin=3)  # type: ignore[arg-type]
    with pytest.raises(ValidationException, match="Invalid value provided for `stdout`"):
        job.program(["echo"], stdout=3)  # type: ignore[arg-type]


def test_server_refusal_is_an_exception(api_env: ApiEnv) -> None:
    job, client = prepare(api_env, workers=0)
    job.program(["echo"], resources=ResourceRequest(cpus="3 sideways"))
    with pytest.raises(Exception, match="Invalid resource policy") as info:
        client.submit(job)
    assert type(info.value) is Exception


def test_stop_server(api_env: ApiEnv) -> None:
    from hyperq.api.ffi.client import ClientConnection

    process = api_env.start_server()
    ClientConnection(str(api_env.server_dir)).stop_server()
    assert process.wait(timeout=5) == 0


def test_canceled_job_fails_without_task_lines(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("sleep 30"))
    submitted = client.submit(job)
    api_env.wait_for_job_state(submitted.id, "running")
    api_env.command(["job", "cancel", "1"])
    with pytest.raises(FailedJobsException) as info:
        client.wait_for_jobs([submitted])
    assert str(info.value) == "The following tasks of job `1` have failed:\n\n"
    assert client.get_failed_tasks(submitted) == {}


def test_connection_wait_reports_progress(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash("true"))
    job.program(bash("exit 1"))
    job.program(bash("true"))
    submitted = client.submit(job)
    seen: list[dict[int, dict[str, object]]] = []
    failed = client.connection.wait_for_jobs([submitted.id, 99], seen.append)
    assert failed == [submitted.id]
    assert seen[-1] == {1: {"finished": 2, "failed": 1, "total": 3, "completed": True}}
    assert all(set(status) == {1} for status in seen)


def test_task_dir(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(bash('test -d "$HQ_TASK_DIR" && echo yes > with'), task_dir=True)
    job.program(bash('echo "[${HQ_TASK_DIR:-}]" > without'))
    client.wait_for_jobs([client.submit(job)])
    assert Path("with").read_text() == "yes\n"
    assert Path("without").read_text() == "[]\n"


def test_failed_task_paths_are_resolved(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.program(
        bash("exit 2"),
        cwd="sub-%{JOB_ID}",
        stdout="%{SERVER_UID}-%{TASK_ID}-%{INSTANCE_ID}.out",
        stderr=StdioDef(path=None, on_close="none"),
    )
    submitted = client.submit(job)
    client.wait_for_jobs([submitted], raise_on_error=False)
    uid = api_env.json(["server", "info"])["server_uid"]
    cwd = api_env.work_dir / "sub-1"
    failure = client.get_failed_tasks(submitted)[0]
    assert (failure.cwd, failure.stdout, failure.stderr) == (
        str(cwd),
        f"{cwd}/{uid}-0-0.out",
        f"{cwd}/job-1/0.stderr",
    )
    assert Path(failure.stdout).exists()

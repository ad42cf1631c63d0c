"""The original's `tests/test_job.py`, ported: submit, job list/info/cancel/wait, open jobs.

Where the stored original disagrees with /work/shared/spec/jobs.md the spec wins (e.g.
`max-fails` aborts instead of cancelling, `job wait` prints nothing and exits 0). Fixed
sleeps of the original are polls here, and task counts and durations are smaller.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.compat import (
    default_output,
    job_states,
    list_jobs,
    python,
    table,
    tables,
    wait_for_text,
)
from tests.harness import HQ_ARGV, ClusterEnv, kill_process, pid_alive, wait_until

COLUMNS = ["ID", "Name", "State"]


def hq_popen(cluster: ClusterEnv, args: list[str]) -> subprocess.Popen[str]:
    """A client command running in the background (e.g. `job wait`)."""
    return subprocess.Popen(
        [*HQ_ARGV, "--colors", "never", "--server-dir", str(cluster.server_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cluster.env,
        cwd=cluster.work_dir,
    )


def test_job_submit(cluster: ClusterEnv) -> None:
    cluster.start_server()
    empty = list_jobs(cluster)
    assert len(empty) == 0
    assert empty.header is not None and empty.header[:3] == COLUMNS

    cluster.command(["submit", "--", "bash", "-c", "echo 'hello'"])
    cluster.command(["submit", "--", "bash", "-c", "echo 'hello2'"])
    cluster.wait_for_job_state(1, "WAITING")
    jobs = list_jobs(cluster)
    assert len(jobs) == 2
    jobs.check_columns_value(COLUMNS, 0, ["1", "bash", "WAITING"])
    jobs.check_columns_value(COLUMNS, 1, ["2", "bash", "WAITING"])

    cluster.start_worker(cpus=1)
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FINISHED")
    # Finished jobs are hidden from the default listing.
    assert len(list_jobs(cluster)) == 0
    jobs = list_jobs(cluster, "--all")
    jobs.check_columns_value(COLUMNS, 0, ["1", "bash", "FINISHED"])
    jobs.check_columns_value(COLUMNS, 1, ["2", "bash", "FINISHED"])

    # Long enough to still be RUNNING at the listing on a loaded machine.
    cluster.command(["submit", "--", "sleep", "4"])
    cluster.wait_for_job_state(3, "RUNNING")
    jobs = list_jobs(cluster, "--all")
    assert len(jobs) == 3
    jobs.check_columns_value(COLUMNS, 2, ["3", "sleep", "RUNNING"])
    cluster.wait_for_job_state(3, "FINISHED")
    list_jobs(cluster, "--all").check_columns_value(COLUMNS, 2, ["3", "sleep", "FINISHED"])


def test_job_submit_output(cluster: ClusterEnv) -> None:
    cluster.start_server()
    result = cluster.run(["submit", "--", "bash", "-c", "echo 'hello'"])
    assert result.returncode == 0
    assert result.stdout == "Job submitted successfully, job ID: 1\n"
    assert result.stderr == ""


def test_job_submit_dir(cluster: ClusterEnv) -> None:
    cluster.start_server()
    submit_dir = cluster.work_dir / "submit"
    submit_dir.mkdir()
    cluster.command(["submit", "echo", "tt"], cwd=submit_dir)
    table(cluster, ["job", "info", "1"]).check_row_value("Submission directory", str(submit_dir))


def test_job_custom_name(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--name=sleep_prog", "sleep", "1"])
    jobs = list_jobs(cluster)
    assert len(jobs) == 1
    jobs.check_columns_value(COLUMNS, 0, ["1", "sleep_prog", "WAITING"])

    for bad in ("second_sleep \n", "second_sleep \t"):
        out = cluster.command(["submit", f"--name={bad}", "sleep", "1"], expect_fail=True)
        assert "name cannot have a newline or a tab" in out
    assert len(list_jobs(cluster)) == 1


def test_job_truncate_long_name(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", f"--name={'a' * 45}{'b' * 31}", "sleep", "1"])
    list_jobs(cluster).check_column_value("Name", 0, f"{'a' * 24}...{'b' * 23}")


def test_job_custom_working_dir(cluster: ClusterEnv) -> None:
    cluster.start_server()
    work_dir = cluster.work_dir / "test_dir"
    work_dir.mkdir()
    (work_dir / "testfile").write_text("cwd_test_string")
    submit_dir = cluster.work_dir / "submit_dir"
    submit_dir.mkdir()
    cluster.command(
        ["submit", f"--cwd={work_dir}", "--", "bash", "-c", "cat testfile"], cwd=submit_dir
    )
    table(cluster, ["job", "info", "1"]).check_row_value("Working directory", str(work_dir))
    cluster.start_worker(cpus=1)
    cluster.wait_for_job_state(1, "FINISHED")
    assert default_output(work_dir).read_text() == "cwd_test_string"


def test_job_output_default(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "--", "bash", "-c", "echo 'hello'"])
    cluster.command(["submit", "--", "ls", "/non-existent"])
    cluster.command(["submit", "--", "/non-existent-program"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FAILED")
    cluster.wait_for_job_state(3, "FAILED")

    wd = cluster.work_dir
    assert default_output(wd, 1).read_text() == "hello\n"
    assert default_output(wd, 1, kind="stderr").read_text() == ""
    assert default_output(wd, 2).read_text() == ""
    stderr = default_output(wd, 2, kind="stderr").read_text()
    assert stderr.startswith("ls:") and "No such file or directory" in stderr
    # The files exist even when the program could not be started.
    assert default_output(wd, 3).read_text() == ""
    assert default_output(wd, 3, kind="stderr").read_text() == ""


def test_job_create_output_folders(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(
        ["submit", "--stdout", "foo/1/job.out", "--stderr", "foo/1/job.err", "--", "echo", "hi"]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    assert (cluster.work_dir / "foo/1").is_dir()
    assert (cluster.work_dir / "foo/1/job.out").read_text() == "hi\n"
    assert (cluster.work_dir / "foo/1/job.err").is_file()


@pytest.mark.parametrize("absolute", [False, True])
def test_job_output_configured(cluster: ClusterEnv, absolute: bool) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    out, err = ("abc", "xyz")
    if absolute:
        out, err = (str(cluster.work_dir / out), str(cluster.work_dir / err))
    cluster.command(
        ["submit", f"--stdout={out}", f"--stderr={err}", "--", "bash", "-c", "echo hello"]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    assert (cluster.work_dir / "abc").read_text() == "hello\n"
    assert (cluster.work_dir / "xyz").read_text() == ""


def test_job_output_none(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "--stdout=none", "--stderr=none", "--", "bash", "-c", "echo hello"])
    cluster.wait_for_job_state(1, "FINISHED")
    assert not (cluster.work_dir / "none").exists()
    assert not default_output(cluster.work_dir).exists()
    assert not default_output(cluster.work_dir, kind="stderr").exists()
    row = table(cluster, ["job", "info", "1"])
    row.check_row_value("Stdout", "<None>")
    row.check_row_value("Stderr", "<None>")


def test_job_filters(cluster: ClusterEnv) -> None:
    cluster.start_server()
    assert len(list_jobs(cluster)) == 0
    cluster.command(["submit", "--", "bash", "-c", "echo 'to cancel'"])
    cluster.command(["submit", "--", "bash", "-c", "echo 'bye'"])
    cluster.command(["submit", "--", "ls", "failed"])
    assert "Job 1 canceled" in cluster.command(["job", "cancel", "1"])

    jobs = list_jobs(cluster, "--all")
    assert jobs.get_column_value("State") == ["CANCELED", "WAITING", "WAITING"]
    assert len(list_jobs(cluster)) == 2
    assert len(list_jobs(cluster, "--filter", "canceled")) == 1
    assert len(list_jobs(cluster, "--filter", "waiting")) == 2

    cluster.start_worker(cpus=1)
    # Still RUNNING through the listings below, also on a loaded machine.
    cluster.command(["submit", "--", "sleep", "60"])
    cluster.wait_for_job_state(4, "RUNNING")
    assert list_jobs(cluster, "--filter", "running").get_column_value("ID") == ["4"]
    assert list_jobs(cluster, "--filter", "finished").get_column_value("ID") == ["2"]
    assert list_jobs(cluster, "--filter", "failed").get_column_value("ID") == ["3"]
    assert list_jobs(cluster, "--filter", "failed,finished").get_column_value("ID") == ["2", "3"]


def test_job_list_hidden_jobs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "hostname"])
    cluster.wait_for_job_state(1, "FINISHED")
    assert "There is 1 job in total. Use `--all` to display all jobs." in cluster.command(
        ["job", "list"]
    )
    cluster.command(["submit", "hostname"])
    cluster.wait_for_job_state(2, "FINISHED")
    assert "There are 2 jobs in total." in cluster.command(["job", "list"])


def test_job_summary(cluster: ClusterEnv) -> None:
    cluster.start_server()

    def check(**counts: int) -> None:
        summary = table(cluster, ["job", "summary"])
        states = ["RUNNING", "WAITING", "FINISHED", "FAILED", "ABORTED", "CANCELED"]
        assert summary.get_column_value("Status") == states
        expected = [str(counts.get(state.lower(), 0)) for state in states]
        assert summary.get_column_value("Count") == expected

    check()
    cluster.command(["submit", "ls"])
    check(waiting=1)
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    check(finished=1)
    cluster.command(["submit", "non-existent"])
    cluster.wait_for_job_state(2, "FAILED")
    check(finished=1, failed=1)


def test_job_fail(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "--", "/non-existent-program"])
    cluster.wait_for_job_state(1, "FAILED")

    jobs = list_jobs(cluster, "--all")
    assert len(jobs) == 1
    jobs.check_columns_value(COLUMNS, 0, ["1", "non-existent-program", "FAILED"])

    info, failures = tables(cluster, ["job", "info", "1"])
    info.check_row_value("ID", "1")
    info.check_row_value("State", "FAILED")
    assert failures.header == ["Task ID", "Worker", "Error"]
    failures.check_column_value("Task ID", 0, "0")

    tasks = table(cluster, ["task", "list", "1", "-v"])
    tasks.check_column_value("Task ID", 0, "0")
    errors = tasks.get_column_value("Error")
    assert errors and "No such file or directory" in errors[0]


def test_job_invalid(cluster: ClusterEnv) -> None:
    cluster.start_server()
    result = cluster.run(["job", "info", "5"])
    assert result.returncode == 0
    assert "ERROR Job 5 not found" in result.stderr


def test_cancel_without_workers(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "/bin/hostname"])
    out = cluster.command(["job", "cancel", "1"])
    assert "Job 1 canceled (1 tasks canceled, 0 tasks already finished)" in out
    list_jobs(cluster, "--all").check_column_value("State", 0, "CANCELED")
    cluster.start_worker(cpus=1)
    list_jobs(cluster, "--all").check_column_value("State", 0, "CANCELED")
    assert cluster.task_states(1) == {0: "canceled"}


def test_cancel_running(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "sleep", "10"])
    cluster.wait_for_job_state(1, "RUNNING")
    list_jobs(cluster).check_column_value("State", 0, "RUNNING")
    assert "Job 1 canceled" in cluster.command(["job", "cancel", "1"])
    list_jobs(cluster, "--all").check_column_value("State", 0, "CANCELED")
    assert "Canceling job 1 failed; all tasks are already finished" in cluster.command(
        ["job", "cancel", "1"]
    )


def test_cancel_finished(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "hostname"])
    cluster.command(["submit", "/invalid"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FAILED")
    assert "Canceling job 1 failed" in cluster.command(["job", "cancel", "1"])
    assert "Canceling job 2 failed" in cluster.command(["job", "cancel", "2"])
    # `last` is job 2.
    assert "Canceling job 2 failed" in cluster.command(["job", "cancel", "last"])
    assert list_jobs(cluster, "--all").get_column_value("State") == ["FINISHED", "FAILED"]


def test_cancel_some(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "sleep", "100"])
    cluster.command(["submit", "hostname"])
    cluster.command(["submit", "/invalid"])
    out = cluster.command(["job", "cancel", "1-4"])
    assert "Canceling job 4 failed; job not found" in out
    for job_id in (1, 2, 3):
        assert f"Job {job_id} canceled" in out
    assert list_jobs(cluster, "--all").get_column_value("State") == ["CANCELED"] * 3


def test_cancel_all(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "hostname"])
    cluster.command(["submit", "/invalid"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FAILED")
    cluster.command(["submit", "sleep", "100"])
    lines = cluster.command(["job", "cancel", "all"]).splitlines()
    assert len(lines) == 1
    assert "Job 3 canceled" in lines[0]
    assert "There is nothing to cancel" in cluster.command(["job", "cancel", "all"])


def test_cancel_reason(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "sleep", "100"])
    cluster.command(["job", "cancel", "1", "--reason", "no longer needed"])
    jobs = list_jobs(cluster, "--all", "--verbose")
    jobs.check_column_value("Cancel Reason", 0, "no longer needed")
    table(cluster, ["job", "info", "1"]).check_row_value("Cancel Reason", "no longer needed")
    result = cluster.run(["job", "cancel", "1", "--reason", "x" * 201])
    assert result.returncode == 2
    assert "Cancel reason must be shorter than 200 you entered 201." in result.stderr


def test_cancel_send_sigint(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    code = """
import signal, sys, time
def handler(sig, frame):
    print("sigint", flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, handler)
print("ready", flush=True)
time.sleep(3600)
"""
    cluster.command(["submit", "--", *python(code)])
    out = default_output(cluster.work_dir)
    wait_for_text(out, lambda text: text.strip() == "ready")
    cluster.command(["job", "cancel", "1"])
    cluster.wait_for_job_state(1, "CANCELED")
    wait_for_text(out, lambda text: text.splitlines()[1:] == ["sigint"])


def test_cancel_kill_if_sigint_fails(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    code = """
import os, signal, time
def handler(sig, frame):
    print(os.getpid(), flush=True)
    time.sleep(3600)
signal.signal(signal.SIGINT, handler)
print("ready", flush=True)
time.sleep(3600)
"""
    cluster.command(["submit", "--", *python(code)])
    out = default_output(cluster.work_dir)
    wait_for_text(out, lambda text: text.strip() == "ready")
    cluster.command(["job", "cancel", "1"])
    cluster.wait_for_job_state(1, "CANCELED")
    text = wait_for_text(out, lambda text: len(text.splitlines()) == 2)
    pid = int(text.splitlines()[1])
    wait_until(lambda: not pid_alive(pid), what="the task to be killed")


FORKING_TASK = """
import os, time
print(os.getpid(), flush=True)
pid = os.fork()
if pid > 0:
    print(pid, flush=True)
time.sleep(3600)
"""


def check_child_process_exited(
    cluster: ClusterEnv, stop: Callable[[subprocess.Popen[str]], None]
) -> None:
    """A task that forks a child; after `stop`, both processes must be gone."""
    cluster.start_server()
    worker = cluster.start_worker()
    cluster.command(["submit", "--", *python(FORKING_TASK)])
    text = wait_for_text(default_output(cluster.work_dir), lambda t: len(t.splitlines()) == 2)
    pids = [int(pid) for pid in text.splitlines()]
    stop(worker)
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), what=f"pid {pid} to exit")


def test_cancel_terminate_process_children(cluster: ClusterEnv) -> None:
    def cancel(worker: subprocess.Popen[str]) -> None:
        cluster.command(["job", "cancel", "1"])
        cluster.wait_for_job_state(1, "CANCELED")

    check_child_process_exited(cluster, cancel)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_kill_task_subprocess_when_worker_is_signalled(cluster: ClusterEnv, sig: int) -> None:
    check_child_process_exited(cluster, lambda worker: kill_process(worker, sig))


def test_kill_task_subprocess_when_worker_is_stopped(cluster: ClusterEnv) -> None:
    def stop(worker: subprocess.Popen[str]) -> None:
        cluster.command(["worker", "stop", "1"])
        cluster.wait_for_worker_state(1, "STOPPED")
        worker.wait(timeout=10)

    check_child_process_exited(cluster, stop)


def test_kill_task_when_worker_dies(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker()
    cluster.command(
        [
            "submit",
            "--",
            *python("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(3600)"),
        ]
    )
    pid = int(wait_for_text(default_output(cluster.work_dir)).strip())
    kill_process(worker)
    wait_until(lambda: not pid_alive(pid), what="the task to die with its worker")


def test_reporting_state_after_worker_lost(cluster: ClusterEnv) -> None:
    cluster.start_server()
    first = cluster.start_worker(cpus=1)
    cluster.start_worker(cpus=1)
    # Each task waits for a go file so that neither finishes before we look.
    go = cluster.work_dir / "go"
    for _ in range(2):
        cluster.command(["submit", "--", "bash", "-c", f"while [ ! -f {go} ]; do sleep 0.05; done"])
    cluster.wait_for_job_state(1, "RUNNING")
    cluster.wait_for_job_state(2, "RUNNING")
    on_first = [
        task["id"]
        for job in (1, 2)
        for task in cluster.json(["task", "list", str(job)])[str(job)]
        if task.get("worker") == 1 or 1 in task.get("workers", [])
    ]
    assert len(on_first) == 1
    kill_process(first)

    def lost_job() -> int | None:
        states = list_jobs(cluster).get_column_value("State") or []
        return states.index("WAITING") + 1 if "WAITING" in states else None

    lost = wait_until(lost_job, what="the lost worker's job to wait again")
    other = 3 - lost
    assert cluster.job_states()[other] == "running"
    go.touch()
    cluster.wait_for_job_state(other, "FINISHED")
    cluster.start_worker(cpus=1)
    cluster.wait_for_job_state(lost, "FINISHED")


def test_set_env(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(
        ["submit", "--env", "FOO=BAR", "--env", "FOO2=BAR2", "--", "bash", "-c", "echo $FOO $FOO2"]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    assert default_output(cluster.work_dir).read_text() == "BAR BAR2\n"
    table(cluster, ["job", "info", "1"]).check_row_value("Environment", "FOO=BAR\nFOO2=BAR2")


def test_set_env_duplicate_and_empty(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    out = cluster.command(
        [
            "submit",
            "--env",
            "A=1",
            "--env",
            "A=2",
            "--env",
            "EMPTY",
            "--",
            "bash",
            "-c",
            'echo "$A-${EMPTY+set}"',
        ]
    )
    assert (
        "Some environment variables were ignored. Check if you haven't used duplicate keys." in out
    )
    cluster.wait_for_job_state(1, "FINISHED")
    assert default_output(cluster.work_dir).read_text().endswith("-set\n")


def test_max_fails_0(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--array",
            "1-2",
            "--stdout",
            "none",
            "--stderr",
            "none",
            "--max-fails",
            "0",
            "--",
            "bash",
            "-c",
            "if [ $HQ_TASK_ID == 1 ]; then sleep 0.5; exit 1; fi; sleep 100",
        ]
    )
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FAILED")
    states = job_states(cluster, 1)
    assert "FAILED (1)" in states
    assert "ABORTED (1)" in states


def test_max_fails_1(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--array",
            "1-20",
            "--stdout",
            "none",
            "--stderr",
            "none",
            "--max-fails",
            "1",
            "--",
            "bash",
            "-c",
            "if [ $HQ_TASK_ID == 13 ]; then exit 1; fi",
        ]
    )
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FAILED")
    states = job_states(cluster, 1)
    assert "FAILED (1)" in states
    assert "FINISHED (19)" in states


def test_max_fails_many(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--array",
            "1-10",
            "--stdout",
            "none",
            "--stderr",
            "none",
            "--max-fails",
            "3",
            "--",
            "bash",
            "-c",
            "exit 1",
        ]
    )
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FAILED")
    states = job_states(cluster, 1)
    assert "FAILED (4)" in states
    assert "ABORTED (6)" in states


def test_job_last(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    assert cluster.run(["job", "info", "last"]).returncode == 0
    cluster.command(["submit", "ls"])
    cluster.wait_for_job_state(1, "FINISHED")
    table(cluster, ["job", "info", "last"]).check_row_value("ID", "1")
    cluster.command(["submit", "ls"])
    cluster.wait_for_job_state(2, "FINISHED")
    table(cluster, ["job", "info", "last"]).check_row_value("ID", "2")


def test_job_priority(cluster: ClusterEnv) -> None:
    cluster.start_server()
    order = cluster.work_dir / "order"
    for name, priority in (("a", "1"), ("b", "3"), ("c", "3"), ("d", None)):
        prio = ["--priority", priority] if priority else []
        cluster.command(["submit", *prio, "--", "bash", "-c", f"echo {name} >> {order}"])
    table(cluster, ["job", "info", "2"]).check_row_value("Priority", "3")
    cluster.start_worker(cpus=1)
    for job_id in range(1, 5):
        cluster.wait_for_job_state(job_id, "FINISHED")
    ran = order.read_text().split()
    assert ran.index("b") < ran.index("a")
    assert ran.index("c") < ran.index("a")
    assert ran.index("a") < ran.index("d")


def test_job_tasks_table(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "echo", "test"])
    tasks = table(cluster, ["task", "list", "1"])
    tasks.check_column_value("Worker", 0, "")
    tasks.check_column_value("Makespan", 0, "")
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    table(cluster, ["task", "list", "1"]).check_column_value("Worker", 0, "worker1")
    cluster.command(["submit", "non-existent-program", "test"])
    cluster.wait_for_job_state(2, "FAILED")
    table(cluster, ["task", "list", "2"]).check_column_value("Worker", 0, "worker1")


def test_job_tasks_makespan(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "sleep", "10"])
    cluster.wait_for_job_state(1, "RUNNING")
    cluster.command(["job", "cancel", "1"])
    cluster.wait_for_job_state(1, "CANCELED")
    # The makespan of a canceled task stops moving (it has millisecond precision).
    first = table(cluster, ["task", "list", "1"]).get_column_value("Makespan")
    second = table(cluster, ["task", "list", "1"]).get_column_value("Makespan")
    assert first == second and first != [""]


def test_job_wait(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "sleep", "0.5"])
    result = cluster.run(["job", "wait", "1"])
    assert (result.returncode, result.stdout) == (0, "")
    table(cluster, ["job", "info", "1"]).check_row_value("State", "FINISHED")
    assert cluster.run(["job", "wait", "all"]).returncode == 0


def test_job_submit_wait(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    result = cluster.run(["submit", "--wait", "sleep", "0.5"])
    assert result.returncode == 0
    assert result.stdout.startswith("Job submitted successfully, job ID: 1\n")
    table(cluster, ["job", "info", "1"]).check_row_value("State", "FINISHED")


def test_job_wait_failure_exit_code(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    result = cluster.run(["submit", "--wait", "non-existent-program"], timeout=20)
    assert result.returncode == 0
    assert cluster.job_states()[1] == "failed"


def test_job_wait_cancellation_exit_code(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    process = hq_popen(cluster, ["submit", "--wait", "sleep", "100"])
    cluster.wait_for_job_state(1, "RUNNING")
    cluster.command(["job", "cancel", "last"])
    assert process.wait(timeout=10) == 0


def test_job_completion_time(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "sleep", "1"])
    cluster.wait_for_job_state(1, "RUNNING")
    makespan = table(cluster, ["job", "info", "1"]).get_row_value("Makespan")
    assert makespan and makespan != "0s" and not makespan.startswith("1s")

    cluster.wait_for_job_state(1, "FINISHED")
    makespan = table(cluster, ["job", "info", "1"]).get_row_value("Makespan")
    assert makespan and makespan.startswith("1s")
    # The completion time is fixed: later reads show the same makespan.
    wait_until(lambda: table(cluster, ["task", "info", "1", "0"]).get_row_value("End"))
    assert table(cluster, ["job", "info", "1"]).get_row_value("Makespan") == makespan


def test_job_timeout(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=3)
    cluster.command(["submit", "--time-limit=500ms", "sleep", "2"])
    cluster.command(["submit", "--time-limit=3s", "sleep", "1"])
    cluster.command(["submit", "sleep", "1"])
    table(cluster, ["job", "info", "1"]).check_row_value("Task time limit", "500ms")
    table(cluster, ["job", "info", "2"]).check_row_value("Task time limit", "3s")
    table(cluster, ["job", "info", "3"]).check_row_value("Task time limit", "None")

    cluster.wait_for_job_state(1, "FAILED")
    info = tables(cluster, ["job", "info", "1"])[0]
    info.check_row_value("Task time limit", "500ms")
    makespan = info.get_row_value("Makespan")
    assert makespan and makespan.startswith("5") and makespan.endswith("ms")
    table(cluster, ["task", "list", "1", "-v"]).check_column_value("Error", 0, "Time limit reached")

    for job_id in (2, 3):
        cluster.wait_for_job_state(job_id, "FINISHED")
        makespan = table(cluster, ["job", "info", str(job_id)]).get_row_value("Makespan")
        assert makespan and makespan.startswith("1s")


def test_job_submit_program_not_found(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "foo", "--bar", "--baz=5"])
    cluster.wait_for_job_state(1, "FAILED")
    table(cluster, ["task", "list", "1", "-v"]).check_column_value(
        "Error",
        0,
        'Cannot execute "foo --bar --baz=5": No such file or directory (os error 2)\n'
        "The program that you have tried to execute (`foo`) was not found.",
    )


def test_job_submit_program_not_found_file_exists(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    (cluster.work_dir / "foo").write_text("hostname")
    cluster.command(["submit", "foo"])
    cluster.wait_for_job_state(1, "FAILED")
    table(cluster, ["task", "list", "1", "-v"]).check_column_value(
        "Error",
        0,
        'Cannot execute "foo": No such file or directory (os error 2)\n'
        "The program that you have tried to execute (`foo`) was not found.\n"
        f"The file `{cluster.work_dir / 'foo'}` exists, maybe you have meant `./foo` instead?",
    )


def test_job_stdin_basic(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    cluster.command(["submit", "bash"])
    cluster.wait_for_job_state(1, "FINISHED")
    assert default_output(cluster.work_dir, 1).read_bytes() == b""

    cluster.command(["submit", "bash"], stdin="echo Hello")
    cluster.wait_for_job_state(2, "FINISHED")
    assert default_output(cluster.work_dir, 2).read_bytes() == b""

    out = cluster.command(["submit", "--stdin", "bash"], stdin="echo Hello")
    assert "Reading data from stdin. In the interactive mode press Ctrl-D to submit." in out
    cluster.wait_for_job_state(3, "FINISHED")
    assert default_output(cluster.work_dir, 3).read_bytes() == b"Hello\n"


def test_job_stdin_read_part(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    for job_id, code in enumerate(
        ["import sys; sys.stdin.readline()", "import sys; sys.stdin.readline(); sys.stdin.close()"],
        start=1,
    ):
        cluster.command(["submit", "--stdin", *python(code)], stdin="Line\n" * 20_000)
        cluster.wait_for_job_state(job_id, "FINISHED")


def test_job_shell_script_fail_not_executable(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    (cluster.work_dir / "test.sh").write_text("echo 'Hello' > out.txt")
    cluster.command(["submit", "./test.sh"])
    cluster.wait_for_job_state(1, "FAILED")
    table(cluster, ["task", "list", "1", "-v"]).check_column_value(
        "Error",
        0,
        'Cannot execute "./test.sh": Permission denied (os error 13)\n'
        "The script that you have tried to execute (`./test.sh`) is not executable.\n"
        "Try making it executable or add a shebang line to it.",
    )


def test_job_shell_script_read_interpreter(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    script = cluster.work_dir / "test.sh"
    script.write_text("#!/bin/bash\necho 'Hello' >> out.txt\n")
    for job_id, path in enumerate(("test.sh", "./test.sh", str(script)), start=1):
        cluster.command(["submit", path])
        cluster.wait_for_job_state(job_id, "FINISHED")
    table(cluster, ["job", "info", "1"]).check_row_value("Name", "bash")
    assert (cluster.work_dir / "out.txt").read_text() == "Hello\n" * 3


@pytest.mark.parametrize("mode", ["FINISHED", "FAILED", "CANCELED"])
def test_submit_task_dir(cluster: ClusterEnv, mode: str) -> None:
    cluster.start_server()
    cluster.start_worker()
    go = cluster.work_dir / "go"
    ending = "exit 1" if mode == "FAILED" else ""
    cluster.command(
        [
            "submit",
            "--task-dir",
            "--",
            "bash",
            "-c",
            f"echo $HQ_TASK_DIR; touch $HQ_TASK_DIR/xyz; "
            f"while [ ! -f {go} ]; do sleep 0.05; done; {ending}",
        ]
    )
    task_dir = Path(wait_for_text(default_output(cluster.work_dir)).strip())
    wait_until(lambda: (task_dir / "xyz").is_file(), what="the file in the task dir")
    assert task_dir.name.startswith("t")
    if mode == "CANCELED":
        cluster.command(["job", "cancel", "all"])
    else:
        go.touch()
    cluster.wait_for_job_state(1, mode)
    wait_until(lambda: not task_dir.exists(), what="the task dir to be removed")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (
            "open(os.environ['HQ_ERROR_FILENAME'], 'w').write('Testing message\\n')",
            "Testing message",
        ),
        (
            "open(os.environ['HQ_ERROR_FILENAME'], 'w')",
            "Task created an error file, but it is empty",
        ),
    ],
)
def test_custom_error_message(cluster: ClusterEnv, code: str, error: str) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--task-dir", "--", *python(f"import os, sys; {code}; sys.exit(1)")])
    cluster.wait_for_job_state(1, "FAILED")
    errors = table(cluster, ["task", "list", "1", "-v"]).get_column_value("Error")
    assert errors and errors[0].strip() == error


def test_long_custom_error_message(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    code = (
        "import os, sys; open(os.environ['HQ_ERROR_FILENAME'], 'w').write('a' * 10_000); "
        "sys.exit(1)"
    )
    cluster.command(["submit", "--task-dir", "--", *python(code)])
    cluster.wait_for_job_state(1, "FAILED")
    tasks = cluster.json(["task", "list", "1"])["1"]
    assert tasks[0]["error"] == "a" * 2048 + "\n[The message was truncated]"
    errors = table(cluster, ["task", "list", "1", "-v"]).get_column_value("Error")
    assert errors and errors[0].endswith("aaaaaa\n[The message was truncated]")
    # `task info` cuts long errors unless asked for all of it.
    short = table(cluster, ["task", "info", "1", "0"]).get_row_value("Error")
    assert short == "a" * 237 + "..."
    full = table(cluster, ["task", "info", "1", "0", "-v"]).get_row_value("Error")
    assert full == "a" * 2048 + "\n[The message was truncated]"


def crash_task(cluster: ClusterEnv, times: int) -> None:
    """Starts a worker, waits for the task to run there and kills the worker, `times` times."""
    for i in range(times):
        worker = cluster.start_worker()
        cluster.wait_for_job_state(1, "RUNNING")
        kill_process(worker)
        if i < times - 1:
            cluster.wait_for_job_state(1, "WAITING")


@pytest.mark.parametrize("count", [None, 1, 2])
def test_crashing_job_status(cluster: ClusterEnv, count: int | None) -> None:
    cluster.start_server()
    limit = [] if count is None else [f"--crash-limit={count}"]
    cluster.command(["submit", *limit, "sleep", "10"])
    crash_task(cluster, 5 if count is None else count)
    cluster.wait_for_job_state(1, "FAILED")
    list_jobs(cluster, "--all").check_column_value("State", 0, "FAILED")
    errors = table(cluster, ["task", "list", "1", "-v"]).get_column_value("Error")
    times = 5 if count is None else count
    assert errors == [
        f"Task was running on a worker that was lost; the task has occurred {times} times "
        "in this situation and limit was reached."
    ]


def test_crashing_job_never_restart(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--crash-limit=never-restart", "sleep", "10"])
    cluster.start_worker()
    cluster.wait_for_job_state(1, "RUNNING")
    cluster.command(["worker", "stop", "1"])
    cluster.wait_for_job_state(1, "FAILED")
    table(cluster, ["task", "list", "1", "-v"]).check_column_value(
        "Error", 0, "Task was running on a lost worker while never restart flag was set."
    )
    table(cluster, ["job", "info", "1"]).check_row_value("Crash limit", "never-restart")


def test_crash_limit_zero_is_a_usage_error(cluster: ClusterEnv) -> None:
    result = cluster.run(["submit", "--crash-limit=0", "sleep", "1"])
    assert result.returncode == 2
    assert "Crash limit cannot be 0. Use `never-restart` or `unlimited` instead." in result.stderr


def test_crashing_job_by_files(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        ["submit", "--crash-limit=2", "--", "bash", "-c", "sleep 3; echo done > output.txt"]
    )
    crash_task(cluster, 2)
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FAILED")
    assert not (cluster.work_dir / "output.txt").exists()


def test_fail_to_start_issue629(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--stdout=/dev/null/foo.txt", "ls"])
    cluster.wait_for_job_state(1, "FAILED")


def test_job_task_ids(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--array=2,7,9,20-30",
            "--stdout=none",
            "--stderr=none",
            "--",
            *python("import os; assert os.environ['HQ_TASK_ID'] not in ['25', '26', '27', '28']"),
        ]
    )
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FAILED")
    assert cluster.command(["job", "task-ids", "1"]) == "2,7,9,20-30\n"
    assert (
        cluster.command(["job", "task-ids", "1", "--filter", "finished"]) == "2,7,9,20-24,29-30\n"
    )
    assert cluster.command(["job", "task-ids", "1", "--filter", "failed"]) == "25-28\n"
    assert cluster.command(["job", "task-ids", "1", "--filter", "canceled"]) == "\n"
    assert cluster.json(["job", "task-ids", "1", "--filter", "failed"]) == {"1": [25, 26, 27, 28]}
    out = cluster.command(["job", "task-ids", "7"], expect_fail=True)
    assert "Job Id not found" in out


def test_job_open(cluster: ClusterEnv) -> None:
    cluster.start_server()
    assert cluster.command(["job", "open"]).strip() == "Job 1 is open."
    jobs = list_jobs(cluster, "--all")
    jobs.check_row_value("*1", "job")
    assert jobs.get_column_value("State") == ["OPENED"]
    assert "* = Open jobs" in cluster.command(["job", "list"])
    table(cluster, ["job", "info", "1"]).check_row_value("Session", "open")

    assert "INFO Job 1 closed" in cluster.command(["job", "close", "1"])
    out = cluster.command(["job", "close", "1"])
    assert "ERROR Closing job 1 failed; job is already closed" in out
    assert "Closing job 7 failed; job not found" in cluster.command(["job", "close", "7"])
    assert "There is nothing to close" in cluster.command(["job", "close", "all"])

    jobs = list_jobs(cluster, "--all")
    jobs.check_row_value("1", "job")
    assert jobs.get_column_value("State") == ["FINISHED"]
    table(cluster, ["job", "info", "1"]).check_row_value("Session", "closed")


def test_job_open_outputs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    assert cluster.command(["--output-mode", "quiet", "job", "open", "--name", "x"]) == "1\n"
    assert cluster.json(["job", "open"]) == {"id": 2}
    table(cluster, ["job", "info", "1"]).check_row_value("Name", "x")


def test_job_wait_for_close(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])
    process = hq_popen(cluster, ["job", "wait", "1"])
    try:
        # It keeps waiting while the job is open, even though it has no work.
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)
        cluster.command(["job", "close", "last"])
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    cluster.wait_for_job_state(1, "FINISHED")


def test_submit_job_opts_to_open_job(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])
    out = cluster.command(["submit", "--job=1", "--name=Abc", "--", "hostname"], expect_fail=True)
    assert "Parameter --name is not allowed when submitting to an open job." in out
    out = cluster.command(
        ["submit", "--job=1", "--max-fails=12", "--", "hostname"], expect_fail=True
    )
    assert "Parameter --max-fails is not allowed when submitting to an open job." in out


def test_job_wait_for_open_job_without_close(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])
    cluster.command(["job", "wait", "1", "--without-close"], timeout=10)
    cluster.start_worker()
    cluster.command(["submit", "--job=1", "--", "sleep", "0"])
    cluster.command(["job", "wait", "1", "--without-close"], timeout=10)
    assert cluster.task_states(1) == {0: "finished"}


def test_invalid_attach(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--", "sleep", "0"])
    cluster.command(["job", "open"])
    cluster.command(["job", "open"])
    cluster.command(["job", "close", "3"])
    for job, message in (
        ("123", "Job 123 not found"),
        ("1", "Job 1 is not opened"),
        ("3", "Job 3 is not opened"),
    ):
        out = cluster.command(["submit", f"--job={job}", "--", "sleep", "0"], expect_fail=True)
        assert message in out
    cluster.command(["submit", "--job=2", "--", "sleep", "0"])
    out = cluster.command(
        ["submit", "--job=2", "--array=0-2", "--", "sleep", "0"], expect_fail=True
    )
    assert "Task 0 already exists in job 2." in out


def test_attach_to_open_job_array(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])
    for ids in ("10-20", "1,3,5", "2,4,6"):
        cluster.command(
            ["submit", "--job=1", f"--array={ids}", "--", "bash", "-c", "touch task.$HQ_TASK_ID"]
        )
    table(cluster, ["job", "info", "1"]).check_row_value("Tasks", "17; Ids: 1-6,10-20")
    cluster.start_worker(cpus=4)
    cluster.command(["job", "close", "1"])
    cluster.wait_for_job_state(1, "FINISHED")
    ids = set(range(1, 7)) | set(range(10, 21))
    for task_id in range(25):
        assert (cluster.work_dir / f"task.{task_id}").is_file() == (task_id in ids)


def test_job_list_keep_open_jobs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])
    cluster.command(["job", "submit", "--job=1", "--", "hostname"])
    cluster.command(["job", "cancel", "1"])
    jobs = list_jobs(cluster)
    assert len(jobs) == 1
    # Canceling does not close the job; its state reports the canceled task.
    jobs.check_columns_value(COLUMNS, 0, ["*1", "job", "CANCELED"])


def test_attach_to_open_job_consecutive(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])
    command = ["--", "bash", "-c", "touch task.$HQ_TASK_ID"]
    for _ in range(4):
        cluster.command(["submit", "--job=1", *command])
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("Tasks", "4; Ids: 0-3")
    assert (info.get_row_value("State") or "").endswith("WAITING (4)")
    assert table(cluster, ["task", "list", "1"]).get_column_value("State") == ["WAITING"] * 4

    cluster.start_worker()
    cluster.wait_for_job_state(1, "OPENED")
    info = table(cluster, ["job", "info", "1"])
    assert (info.get_row_value("State") or "").endswith("FINISHED (4)")
    for task_id in range(4):
        (cluster.work_dir / f"task.{task_id}").unlink()

    for _ in range(2):
        cluster.command(["submit", "--job=1", *command])
    wait_until(lambda: cluster.task_states(1) == dict.fromkeys(range(6), "finished"))
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("Tasks", "6; Ids: 0-5")
    assert (info.get_row_value("State") or "").endswith("FINISHED (6)")
    for task_id in range(6):
        assert (cluster.work_dir / f"task.{task_id}").is_file() == (task_id >= 4)
    cluster.command(["job", "close", "1"])
    cluster.wait_for_job_state(1, "FINISHED")


def test_close_job_before_worker(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])
    for _ in range(4):
        cluster.command(["submit", "--job=1", "--", "sleep", "0"])
    cluster.command(["job", "close", "1"])
    cluster.wait_for_job_state(1, "WAITING")
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")


def test_submit_env_output_warnings(cluster: ClusterEnv) -> None:
    cluster.start_server()
    out = cluster.command(["submit", "--array=1-2", "--stdout=out.txt", "--", "true"])
    assert (
        "You have submitted an array job, but the `stdout` path does not contain the task ID "
        "placeholder." in out
    )
    assert "Consider adding `%{TASK_ID}` to the `--stdout` value." in out


# --- behaviour the spec pins down beyond the stored original tests -----------------------


def test_job_info_workers_row(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for _ in range(3):
        cluster.start_worker(cpus=1)
    go = cluster.work_dir / "go"
    cluster.command(
        ["submit", "--array=1-3", "--", "bash", "-c", f"while [ ! -f {go} ]; do sleep 0.02; done"]
    )
    wait_until(lambda: list(cluster.task_states(1).values()) == ["running"] * 3)
    go.touch()
    cluster.wait_for_job_state(1, "FINISHED")
    table(cluster, ["job", "info", "1"]).check_row_value("Workers", "worker1, worker2, … (3 total)")
    assert cluster.json(["job", "info", "1"])[0]["info"]["task_stats"]["finished"] == 3


def test_job_info_several_jobs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--name", "a", "--", "true"])
    cluster.command(["submit", "--name", "b", "--", "true"])
    out = cluster.command(["job", "info", "1-3"])
    first, second = tables(cluster, ["job", "info", "1-3"])
    first.check_row_value("Name", "a")
    second.check_row_value("Name", "b")
    assert "Job 3 not found" in out
    assert [job["info"]["id"] for job in cluster.json(["job", "info", "all"])] == [1, 2]


def test_job_task_ids_several_jobs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--array=1-3,7", "--", "true"])
    cluster.command(["submit", "--", "true"])
    assert cluster.command(["job", "task-ids", "1-2"]) == "1: 1-3,7\n2: 0\n"
    assert cluster.json(["job", "task-ids", "all"]) == {"1": [1, 2, 3, 7], "2": [0]}


def test_job_list_quiet_and_json(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--", "true"])
    cluster.command(["job", "open"])
    assert cluster.command(["--output-mode", "quiet", "job", "list"]) == "1 WAITING\n2 OPENED\n"
    jobs = cluster.json(["job", "list"])
    assert [(job["id"], job["is_open"], job["task_count"]) for job in jobs] == [
        (1, False, 1),
        (2, True, 0),
    ]
    assert cluster.command(["--output-mode", "quiet", "submit", "--", "true"]) == "3\n"
    assert cluster.json(["submit", "--", "true"]) == {"id": 4}


def test_cancel_reason_replaced_only_when_canceling(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])

    def reason() -> str | None:
        return cluster.json(["job", "list", "--all"])[0]["cancel_reason"]

    cluster.command(["submit", "--job=1", "--", "sleep", "100"])
    cluster.command(["job", "cancel", "1", "--reason", "first"])
    assert reason() == "first"
    # Nothing left to cancel: the stored reason stays.
    cluster.command(["job", "cancel", "1", "--reason", "second"])
    assert reason() == "first"
    # A cancel without --reason that cancels something clears it.
    cluster.command(["submit", "--job=1", "--", "sleep", "100"])
    cluster.command(["job", "cancel", "1"])
    assert reason() is None
    # The job is still open after the cancel.
    table(cluster, ["job", "info", "1"]).check_row_value("Session", "open")


def test_forget_ignores_open_jobs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open"])
    out = cluster.command(["job", "forget", "all"])
    assert "INFO 0 jobs were forgotten, 1 were ignored due to wrong state or invalid ID" in out
    assert cluster.job_states() == {1: "opened"}


def first_progress_line(process: subprocess.Popen[str]) -> str:
    """Blocks until the progress client printed its first line (it is then subscribed)."""
    assert process.stdout is not None
    return process.stdout.readline()


def test_job_progress(cluster: ClusterEnv) -> None:
    cluster.start_server()
    assert "WARN There are no jobs to wait for" in cluster.command(["job", "progress", "all"])
    cluster.start_worker(cpus=2)
    go = cluster.work_dir / "go"
    gated = f"while [ ! -f {go} ]; do sleep 0.02; done"
    cluster.command(["submit", "--array=1-2", "--", "true"])
    cluster.command(["submit", "--", "bash", "-c", f"{gated}; exit 1"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "RUNNING")
    # Only one change is left to report, so the final line follows one completion.
    process = hq_popen(cluster, ["job", "progress", "1-2"])
    assert "1/2 jobs, 2/3 tasks" in first_progress_line(process)
    go.touch()
    out, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    last = out.split("\r\x1b[2K")[-1]
    assert "2/2 jobs, 3/3 tasks" in last
    assert "2 FINISHED" in last and "1 FAILED" in last
    # Everything is complete now: nothing to wait for.
    assert "WARN There are no jobs to wait for" in cluster.command(["job", "progress", "1-2"])

    go.unlink()
    submitted = hq_popen(cluster, ["submit", "--progress", "--", "bash", "-c", gated])
    assert first_progress_line(submitted) == "Job submitted successfully, job ID: 3\n"
    first_progress_line(submitted)
    go.touch()
    out, _ = submitted.communicate(timeout=15)
    assert submitted.returncode == 0
    assert "1/1 jobs, 1/1 tasks" in out.split("\r\x1b[2K")[-1]


def test_job_wait_returns_when_server_stops(cluster: ClusterEnv) -> None:
    server = cluster.start_server()
    cluster.command(["submit", "--", "true"])
    process = hq_popen(cluster, ["job", "wait", "1"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)
        cluster.stop_server(server)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cpus", "2", "--resource", "cpus=2"],
            "--cpus and --resource cpus=... cannot be combined",
        ),
        (
            ["--resource", "gpus=1", "--resource", "gpus=2"],
            "Resource 'gpus' defined more than once",
        ),
        (["--cpus", "0"], "Zero resources cannot be requested"),
    ],
)
def test_submit_resource_errors(cluster: ClusterEnv, args: list[str], message: str) -> None:
    cluster.start_server()
    result = cluster.run(["submit", *args, "--", "true"])
    assert result.returncode == 1
    assert message in result.stderr
    assert cluster.job_states() == {}


def test_job_info_empty_open_job_and_filters(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["job", "open", "--name", "empty", "--max-fails", "2"])
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("Tasks", "0")
    # Only a one-task job shows a plain state; others get the (here empty) bar.
    info.check_row_value("State", "[" + "." * 40 + "]")
    info.check_row_value("Name", "empty")
    # Without a submit there is no task description to show.
    assert info.get_row_value("Command") is None
    assert info.get_row_value("Submission directory") is None
    assert cluster.json(["job", "info", "1"])[0]["max_fails"] == 2
    assert list_jobs(cluster, "--filter", "opened").get_column_value("ID") == ["*1"]
    assert len(list_jobs(cluster, "--filter", "finished")) == 0
    summary = cluster.json(["job", "summary"])
    assert summary["Opened"] == 1 and summary["Waiting"] == 0


def test_job_info_resources_and_limits(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--cpus=2 scatter",
            "--resource",
            "gpus=1",
            "--resource",
            "mem=100",
            "--crash-limit=unlimited",
            "--time-request=10s",
            "--",
            "true",
        ]
    )
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("Resources", "cpus: 2 scatter\ngpus: 1 compact\nmem: 100 compact")
    info.check_row_value("Crash limit", "unlimited")
    info.check_row_value("Priority", "0")
    info.check_row_value("Pin", "none")
    info.check_row_value("Session", "closed")
    info.check_row_value("State", "WAITING")
    assert cluster.job_states() == {1: "waiting"}
    desc = cluster.json(["job", "info", "1"])[0]["submits"][0]["array"]
    assert desc["crash_limit"] == "unlimited"
    assert desc["resources"][0]["min_time"] == 10.0
    assert desc["resources"][0]["resources"][0] == {
        "resource": "cpus",
        "request": {"Scatter": 20000},
    }

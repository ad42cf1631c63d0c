"""The original's `tests/job/` tests, ported: `job cat`, `job forget`, `:rm-if-finished`.

The original `job cat` header is `# Task <t>`; the spec's is `# Job <j>, task <t>`, and
the spec wins.
"""

from __future__ import annotations

import pytest

from tests.compat import default_output, list_jobs, python
from tests.harness import ClusterEnv, wait_until

STDOUT_AND_STDERR = """
import os, sys
print(os.environ['HQ_TASK_ID'])
print("out1")
print("out2")
print(os.environ['HQ_TASK_ID'], file=sys.stderr)
print("err1", file=sys.stderr)
"""


# --- job cat -----------------------------------------------------------------------------


def test_job_cat_stdout(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--array", "1-2", "--", "bash", "-c", "echo $HQ_TASK_ID"])
    cluster.wait_for_job_state(1, "FINISHED")
    assert cluster.command(["job", "cat", "1", "stdout"]).splitlines() == ["1", "2"]
    assert cluster.command(["job", "cat", "--tasks", "2", "1", "stdout"]) == "2\n"
    result = cluster.run(["job", "cat", "--tasks", "0", "1", "stdout"])
    assert result.returncode == 0
    assert result.stdout == ""
    assert "WARN Task 0 of job 1 not found" in result.stderr


def test_job_cat_stderr(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    code = "import os, sys; print(os.environ['HQ_TASK_ID'], file=sys.stderr)"
    cluster.command(["submit", "--array", "1-2", "--", *python(code)])
    cluster.wait_for_job_state(1, "FINISHED")
    assert cluster.command(["job", "cat", "1", "stderr"]).splitlines() == ["1", "2"]
    assert cluster.command(["job", "cat", "1", "stdout"]) == ""
    assert "Task 3 of job 1 not found" in cluster.command(
        ["job", "cat", "--tasks", "3", "1", "stdout"]
    )


def test_job_cat_no_output(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--stdout=none", "--stderr=none", "--", "echo", "hello"])
    cluster.wait_for_job_state(1, "FINISHED")
    for channel in ("stdout", "stderr"):
        out = cluster.command(["job", "cat", "1", channel])
        assert f"WARN Task 0 has no `{channel}` stream associated with it" in out


def test_job_cat_not_started(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--", "echo", "hello"])
    out = cluster.command(["job", "cat", "1", "stdout"])
    assert "WARN Task 0 has no `stdout` stream associated with it" in out
    out = cluster.command(["job", "cat", "1", "stdout", "--task-status", "finished"])
    assert "WARN No tasks were selected for job 1, there is nothing to print" in out


def test_job_cat_header(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "--array", "1-3", "--", *python(STDOUT_AND_STDERR)])
    cluster.wait_for_job_state(1, "FINISHED")
    out = cluster.command(["job", "cat", "1", "stdout", "--print-task-header"])
    assert out == "".join(f"# Job 1, task {i}\n{i}\nout1\nout2\n" for i in (1, 2, 3))
    out = cluster.command(["job", "cat", "1", "stderr", "--print-task-header"])
    assert out == "".join(f"# Job 1, task {i}\n{i}\nerr1\n" for i in (1, 2, 3))


def test_job_cat_status(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    code = """
import os
print(os.environ['HQ_TASK_ID'])
print("out")
assert os.environ['HQ_TASK_ID'] not in ['4', '5', '6', '8']
"""
    cluster.command(["submit", "--array=3-9", "--", *python(code)])
    cluster.wait_for_job_state(1, "FAILED")

    out = cluster.command(
        ["job", "cat", "--task-status=finished", "1", "stdout", "--print-task-header"]
    )
    assert out == "".join(f"# Job 1, task {i}\n{i}\nout\n" for i in (3, 7, 9))
    out = cluster.command(["job", "cat", "--task-status=failed", "--tasks", "3-7", "1", "stdout"])
    assert out == "4\nout\n5\nout\n6\nout\n"
    selected = cluster.command(["job", "cat", "--task-status", "finished,failed", "1", "stdout"])
    default = cluster.command(["job", "cat", "1", "stdout"])
    assert selected == default == "".join(f"{i}\nout\n" for i in range(3, 10))


def test_job_cat_last(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    assert "ERROR No jobs were found" in cluster.command(["job", "cat", "last", "stdout"])
    cluster.command(["submit", "--", "bash", "-c", "echo '1'"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.command(["submit", "--", "bash", "-c", "echo '2'"])
    cluster.wait_for_job_state(2, "FINISHED")
    assert cluster.command(["job", "cat", "last", "stdout"]) == "2\n"
    assert cluster.command(["job", "cat", "last", "stderr"]) == ""
    assert "ERROR Job 5 was not found" in cluster.command(["job", "cat", "5", "stdout"])


def test_job_cat_json_mode_refused(cluster: ClusterEnv) -> None:
    cluster.start_server()
    result = cluster.run(["--output-mode", "json", "job", "cat", "1", "stdout"])
    assert result.returncode == 1
    assert "JSON output mode doesn't support job output" in result.stdout + result.stderr


# --- job forget --------------------------------------------------------------------------


def forget_jobs(
    cluster: ClusterEnv,
    selector: str,
    forgotten: int,
    states: list[str] | None = None,
    ignored: int = 0,
) -> None:
    args = ["job", "forget", selector]
    if states:
        args += ["--filter", ",".join(states)]
    lines = [line for line in cluster.command(args).splitlines() if line.strip()]
    message = f"INFO {forgotten} {'job' if forgotten == 1 else 'jobs'} were forgotten"
    if ignored:
        message += f", {ignored} were ignored due to wrong state or invalid ID"
    assert len(lines) == 1
    assert lines[0].endswith(message)


def job_count(cluster: ClusterEnv) -> int:
    return len(list_jobs(cluster, "--all"))


def test_forget_waiting_job(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "hostname"])
    forget_jobs(cluster, "1", forgotten=0, ignored=1)
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")


def test_forget_running_job(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", "sleep", "100"])
    cluster.wait_for_job_state(1, "RUNNING")
    forget_jobs(cluster, "1", forgotten=0, ignored=1)


def test_forget_finished_job(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "hostname"])
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    forget_jobs(cluster, "1", forgotten=1)
    wait_until(lambda: job_count(cluster) == 0)
    # IDs are never reused.
    assert cluster.command(["submit", "hostname"]).strip().endswith("job ID: 2")


def test_forget_failed_job(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "/non-existent"])
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FAILED")
    forget_jobs(cluster, "1", forgotten=0, states=["finished"], ignored=1)
    forget_jobs(cluster, "1", forgotten=1, states=["failed"])
    wait_until(lambda: job_count(cluster) == 0)


def test_forget_canceled_job(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "sleep", "100"])
    cluster.command(["job", "cancel", "1"])
    forget_jobs(cluster, "1", forgotten=1, states=["canceled"])
    wait_until(lambda: job_count(cluster) == 0)


def test_forget_multiple_jobs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "hostname"])
    cluster.command(["job", "cancel", "1"])
    cluster.start_worker()
    for _ in range(3):
        cluster.command(["submit", "hostname"])
    for job_id in (2, 3, 4):
        cluster.wait_for_job_state(job_id, "FINISHED")
    cluster.command(["submit", "/non-existing"])
    cluster.wait_for_job_state(5, "FAILED")
    forget_jobs(cluster, "all", forgotten=4, ignored=1, states=["finished", "canceled"])
    wait_until(lambda: job_count(cluster) == 1)
    list_jobs(cluster, "--all").check_column_value("ID", 0, "5")


# --- :rm-if-finished ---------------------------------------------------------------------

WAIT_FOR_FINISH_FILE = """
import os, time
while not os.path.isfile("finish"):
    time.sleep(0.02)
"""


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("custom", [False, True])
def test_cleanup_output_on_success(cluster: ClusterEnv, stream: str, custom: bool) -> None:
    cluster.start_server()
    cluster.start_worker()
    spec = "foo.txt:rm-if-finished" if custom else ":rm-if-finished"
    cluster.command(["submit", f"--{stream}={spec}", "--", *python(WAIT_FOR_FINISH_FILE)])
    output = (
        cluster.work_dir / "foo.txt" if custom else default_output(cluster.work_dir, kind=stream)
    )
    cluster.wait_for_job_state(1, "RUNNING")
    wait_until(output.is_file, what="the output file")
    (cluster.work_dir / "finish").touch()
    cluster.wait_for_job_state(1, "FINISHED")
    wait_until(lambda: not output.exists(), what="the output file to be removed")
    # The other stream is kept.
    other = "stderr" if stream == "stdout" else "stdout"
    assert default_output(cluster.work_dir, kind=other).is_file()


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_do_not_cleanup_output_on_fail(cluster: ClusterEnv, stream: str) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(["submit", f"--{stream}=:rm-if-finished", "--", "/non-existent"])
    cluster.wait_for_job_state(1, "FAILED")
    assert default_output(cluster.work_dir, kind=stream).is_file()

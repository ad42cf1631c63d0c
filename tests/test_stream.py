"""End to end: `--stream` through real server and worker processes, read with `hq output-log`.

Ports of the original's `tests/test_stream.py` (stream.md §6) plus the failure cases of
issue 16: SIGKILL mid-stream, two server instances in one directory, a damaged byte.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.harness import ClusterEnv, kill_process, wait_until


def stream_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.hqs"))


def test_stream_submit(cluster: ClusterEnv) -> None:
    cluster.start_server()
    out = cluster.command(
        [
            "submit",
            "--stream",
            "mylog",
            "--array=1-20",
            "--",
            "bash",
            "-c",
            "echo Hello from ${HQ_TASK_ID}",
        ]
    )
    assert "files" not in out
    cluster.start_worker(cpus=2)
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    assert not (cluster.work_dir / "job-1").exists()

    lines = cluster.command(["output-log", "mylog", "show"]).splitlines()
    assert sorted(lines) == sorted(f"1.{i:02}:0> Hello from {i}" for i in range(1, 21))
    assert cluster.command(["output-log", "mylog", "show", "--channel=stderr"]) == ""

    summary = cluster.command(["output-log", "mylog", "summary"])
    rows = {
        cells[0]: cells[1]
        for line in summary.splitlines()
        if line.startswith("|")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert rows["Path"] == "mylog"
    assert rows["Files"] == str(len(stream_files(cluster.work_dir / "mylog")))
    assert rows["Jobs"] == "1"
    assert rows["Tasks"] == "20"
    assert rows["Opened streams"] == "0"
    assert rows["Stdout/stderr size"] == "271 B / 0 B"
    assert rows["Superseded streams"] == "0"
    assert rows["Superseded stdout/stderr size"] == "0 B / 0 B"
    assert list(rows)[:2] == ["Path", "Files"]

    expected = "".join(f"Hello from {i}\n" for i in range(1, 21))
    assert cluster.command(["output-log", "mylog", "cat", "1", "stdout"]) == expected
    assert (
        cluster.command(["output-log", "mylog", "cat", "1", "stdout", "--task=3-4,2"])
        == "Hello from 3\nHello from 4\nHello from 2\n"
    )
    exported = json.loads(cluster.command(["output-log", "mylog", "export", "1", "--task=3,1"]))
    assert exported == [
        {"finished": True, "id": 3, "stdout": "Hello from 3\n"},
        {"finished": True, "id": 1, "stdout": "Hello from 1\n"},
    ]
    assert cluster.command(["output-log", "mylog", "jobs"]) == "1\n"

    info = cluster.command(["job", "info", "1"])
    assert any("Stdout" in line and "<Stream>" in line for line in info.splitlines())
    assert any("Stderr" in line and "<Stream>" in line for line in info.splitlines())
    detail = cluster.json(["job", "info", "1"])[0]
    program = detail["submits"][0]["array"]["program"]
    assert program["stdout"] == "<pipe>"
    assert program["stderr"] == "<pipe>"
    task_info = cluster.command(["task", "info", "1", "1"])
    assert any("Stdout" in line and "<Stream>" in line for line in task_info.splitlines())
    cat = cluster.run(["job", "cat", "1", "stdout", "--tasks", "1"])
    assert "Task 1 has no `stdout` stream associated with it" in cat.stderr


def output_log(cluster: ClusterEnv, *args: str, mode: str = "cli") -> tuple[int, str, str]:
    result = cluster.run(["--output-mode", mode, "output-log", *args])
    return result.returncode, result.stdout, result.stderr


def summary_rows(text: str) -> list[tuple[str, str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append((cells[0], cells[1]))
    return rows


def test_stream_overlap(cluster: ClusterEnv) -> None:
    cluster.start_server()
    # Each task prints A, then waits for both A's to exist before printing B.
    script = (
        "echo A; touch a-$HQ_TASK_ID; "
        "while [ ! -e a-1 ] || [ ! -e a-2 ]; do sleep 0.05; done; sleep 0.5; echo B"
    )
    cluster.command(["submit", "--stream", "mylog", "--array=1-2", "--", "bash", "-c", script])
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    lines = cluster.command(["output-log", "mylog", "show"]).splitlines()
    assert sorted(lines[:2]) == ["1.1:0> A", "1.2:0> A"]
    assert sorted(lines[2:]) == ["1.1:0> B", "1.2:0> B"]
    assert cluster.command(["output-log", "mylog", "cat", "1", "stdout"]) == "A\nB\nA\nB\n"


def test_stream_big_output(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--stream",
            "mylog",
            "--array=1-2",
            "--",
            "python3",
            "-c",
            "print('1234567890' * 80_000)",
        ]
    )
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    expected = "1234567890" * 80_000 + "\n"
    lines = cluster.command(["output-log", "mylog", "show"]).splitlines()
    for task in (1, 2):
        prefix = f"1.{task}:0> "
        parts = [line[len(prefix) :] for line in lines if line.startswith(prefix)]
        assert len(parts) >= 800_001 // (16 * 1024)  # one header per record of <= 16 KiB
        assert "".join(parts) == expected.rstrip("\n")
    assert cluster.command(["output-log", "mylog", "cat", "1", "stdout"]) == 2 * expected
    _code, out, _ = output_log(cluster, "mylog", "summary")
    assert ("Stdout/stderr size", "1562.50 KiB / 0 B") in summary_rows(out)


def test_stream_stderr_and_partial(cluster: ClusterEnv) -> None:
    cluster.start_server()
    program = (
        "import sys; sys.stdout.write('Ok\\n'); sys.stdout.flush(); sys.stderr.write('Error\\n')"
    )
    cluster.command(["submit", "--stream", "both", "--", "python3", "-c", program])
    cluster.command(
        [
            "submit",
            "--stream",
            "part",
            "--stdout=task-%{JOB_ID}-%{TASK_ID}-%{INSTANCE_ID}.out",
            "--",
            "python3",
            "-c",
            program,
        ]
    )
    cluster.command(["submit", "--stream", "none", "--stderr=none", "--", "python3", "-c", program])
    cluster.command(
        ["submit", "--stream", "unused", "--stdout=none", "--stderr=none", "--", "true"]
    )
    cluster.start_worker()
    for job in (1, 2, 3, 4):
        cluster.wait_for_job_state(job, "FINISHED")
    assert cluster.command(["output-log", "both", "show"]) == "1.0:0> Ok\n1.0:1> Error\n"
    assert cluster.command(["output-log", "both", "show", "--channel=stdout"]) == "1.0:0> Ok\n"
    assert cluster.command(["output-log", "both", "show", "--channel=stderr"]) == "1.0:1> Error\n"
    assert cluster.command(["output-log", "both", "cat", "1", "stdout"]) == "Ok\n"
    assert cluster.command(["output-log", "both", "cat", "1", "stderr"]) == "Error\n"
    assert cluster.command(["output-log", "part", "show"]) == "2.0:1> Error\n"
    assert (cluster.work_dir / "task-2-0-0.out").read_text() == "Ok\n"
    assert cluster.command(["output-log", "none", "show"]) == "3.0:0> Ok\n"
    assert not (cluster.work_dir / "unused").exists()
    info = cluster.command(["job", "info", "2"])
    assert any("Stderr" in line and "<Stream>" in line for line in info.splitlines())
    assert not any("Stdout" in line and "<Stream>" in line for line in info.splitlines())


def test_stream_placeholders(cluster: ClusterEnv) -> None:
    cluster.start_server()
    uid = cluster.json(["server", "info"])["server_uid"]
    cluster.command(["submit", "--stream", "log-%{JOB_ID}", "--", "echo", "one"])
    out = cluster.command(
        ["submit", "--stream", "log-%{SERVER_UID}-%{JOB_ID}-%{FOO}", "--", "echo", "two"]
    )
    assert "Found unknown placeholder `FOO` in log path" in out
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FINISHED")
    assert cluster.command(["output-log", "log-1", "cat", "1", "stdout"]) == "one\n"
    second = cluster.work_dir / f"log-{uid}-2-%{{FOO}}"
    assert len(list(second.iterdir())) == 1
    assert cluster.command(["output-log", str(second), "cat", "2", "stdout"]) == "two\n"


def test_output_log_modes_and_errors(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--stream",
            "mylog",
            "--array=0-1",
            "--",
            "bash",
            "-c",
            "echo out $HQ_TASK_ID; echo err >&2",
        ]
    )
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")

    code, out, _ = output_log(cluster, "mylog", "summary", mode="json")
    assert code == 0
    assert json.loads(out) == {
        "filename": "mylog",
        "summary": {
            "n_files": 1,
            "n_jobs": 1,
            "n_tasks": 2,
            "n_streams": 2,
            "n_opened": 0,
            "stdout_size": 12,
            "stderr_size": 8,
            "n_superseded": 0,
            "superseded_stdout_size": 0,
            "superseded_stderr_size": 0,
        },
    }
    assert output_log(cluster, "mylog", "summary", mode="quiet") == (0, "", "")
    for mode in ("cli", "json", "quiet"):
        assert output_log(cluster, "mylog", "jobs", mode=mode)[:2] == (0, "1\n")
        assert output_log(cluster, "mylog", "cat", "1", "stdout", mode=mode)[:2] == (
            0,
            "out 0\nout 1\n",
        )
        code, out, _ = output_log(cluster, "mylog", "show", "--job", "1", mode=mode)
        assert code == 0 and len(out.splitlines()) == 4
        assert "1.0:0> out 0" in out.splitlines()
        code, out, _ = output_log(cluster, "mylog", "export", "1", "--task=1", mode=mode)
        assert json.loads(out) == [{"finished": True, "id": 1, "stdout": "out 1\n"}]
    assert output_log(cluster, "mylog", "show", "--job", "7")[:2] == (0, "")
    colored = cluster.run(
        ["--colors", "always", "output-log", "mylog", "show", "--channel", "stdout"]
    ).stdout
    assert sorted(colored.splitlines()) == [
        "\x1b[41m1.0:0>\x1b[0m out 0",  # task 0: red
        "\x1b[42m1.1:0>\x1b[0m out 1",  # task 1: green
    ]

    code, out, err = output_log(cluster, "mylog", "cat", "2", "stdout")
    assert (code, out, err) == (1, "", "Job 2 not found\n")
    assert output_log(cluster, "mylog", "cat", "1", "stdout", "--task=5")[::2] == (
        1,
        "Task 5 not found\n",
    )
    assert output_log(cluster, "mylog", "export", "3")[::2] == (1, "Job 3 not found\n")
    code, out, _ = output_log(cluster, "mylog", "cat", "2", "stdout", mode="json")
    assert code == 1 and json.loads(out) == {"error": "Job 2 not found"}
    assert output_log(cluster, "missing", "jobs")[::2] == (
        1,
        "No such file or directory (os error 2)\n",
    )
    (cluster.work_dir / "empty").mkdir()
    assert output_log(cluster, "empty", "summary")[::2] == (1, "No log files found\n")
    # Usage errors: exit 2.
    assert output_log(cluster, "mylog")[0] == 2
    assert output_log(cluster, "mylog", "cat", "1", "stdsomething")[0] == 2
    assert output_log(cluster, "mylog", "cat", "x", "stdout")[0] == 2
    assert output_log(cluster, "mylog", "cat", "1", "stdout", "--task=a-")[0] == 2
    assert output_log(cluster, "mylog", "show", "--channel=both")[0] == 2


def test_stream_failed_canceled_and_timed_out_tasks_keep_output(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=3)
    cluster.command(["submit", "--stream", "mylog", "--", "bash", "-c", "echo Start; exit 1"])
    cluster.command(
        ["submit", "--stream", "mylog", "--", "bash", "-c", "echo Start; touch running; sleep 100"]
    )
    cluster.command(
        [
            "submit",
            "--stream",
            "mylog",
            "--time-limit=1s",
            "--",
            "bash",
            "-c",
            "echo Start; sleep 100",
        ]
    )
    cluster.wait_for_job_state(1, "FAILED")
    wait_until(lambda: (cluster.work_dir / "running").exists(), what="task 2 to print")
    cluster.command(["job", "cancel", "2"])
    cluster.wait_for_job_state(2, "CANCELED")
    cluster.wait_for_job_state(3, "FAILED")
    for job in (1, 2, 3):
        shown = cluster.command(["output-log", "mylog", "show", "--job", str(job)])
        assert shown == f"{job}.0:0> Start\n"
    assert cluster.command(["output-log", "mylog", "cat", "1", "stdout"]) == "Start\n"


def test_stream_unfinished(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    big = "ab" * (16 * 1024 + 3)
    cluster.command(
        ["submit", "--stream", "small", "--", "bash", "-c", "echo Start; touch s; sleep 100"]
    )
    wait_until(lambda: (cluster.work_dir / "s").exists(), what="small task to print")
    # Small output of a running task stays in the worker's buffer; the file exists.
    assert len(stream_files(cluster.work_dir / "small")) == 1
    assert output_log(cluster, "small", "cat", "1", "stdout", "--allow-unfinished")[::2] == (
        1,
        "Job 1 not found\n",
    )
    cluster.command(["job", "cancel", "1"])
    cluster.command(
        [
            "submit",
            "--stream",
            "large",
            "--",
            "python3",
            "-c",
            f"import sys, time, os; sys.stdout.write({big!r}); sys.stdout.flush(); "
            "open('l', 'w').close(); time.sleep(100)",
        ]
    )
    wait_until(lambda: (cluster.work_dir / "l").exists(), what="large task to print")

    def visible() -> str:
        code, out, _ = output_log(cluster, "large", "cat", "2", "stdout", "--allow-unfinished")
        return out if code == 0 and len(out) >= 8 * 1024 else ""

    prefix = wait_until(visible, what="8 KiB of output on disk")
    assert big.startswith(prefix)
    assert output_log(cluster, "large", "cat", "2", "stdout")[::2] == (
        1,
        "Stream for task 0 is not finished\n",
    )
    _code, out, _ = output_log(cluster, "large", "summary")
    assert ("Opened streams", "1") in summary_rows(out)
    assert json.loads(output_log(cluster, "large", "export", "2")[1])[0]["finished"] is False


def test_stream_restart_supersedes_the_interrupted_run(cluster: ClusterEnv) -> None:
    cluster.start_server()
    first = cluster.start_worker()
    script = (
        "echo Start; if [ $HQ_INSTANCE_ID = 0 ]; then touch started; sleep 100; fi; "
        "echo End $HQ_INSTANCE_ID"
    )
    cluster.command(["submit", "--stream", "mylog", "--", "bash", "-c", script])
    wait_until(lambda: (cluster.work_dir / "started").exists(), what="the first run")
    kill_process(first, signal.SIGTERM)  # a graceful stop writes what the task printed
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")

    assert cluster.command(["output-log", "mylog", "cat", "1", "stdout"]) == "Start\nEnd 1\n"
    rows = summary_rows(cluster.command(["output-log", "mylog", "summary"]))
    assert rows[1:] == [
        ("Files", "2"),
        ("Jobs", "1"),
        ("Tasks", "1"),
        ("Opened streams", "0"),
        ("Stdout/stderr size", "12 B / 0 B"),
        ("Superseded streams", "1"),
        ("Superseded stdout/stderr size", "6 B / 0 B"),
    ]
    # Without the superseded run; `Start` and `End 1` may share one pipe read (one header).
    shown = cluster.command(["output-log", "mylog", "show"])
    assert shown.startswith("1.0:0> Start\n")
    assert shown.replace("1.0:0> ", "") == "Start\nEnd 1\n"
    exported = json.loads(cluster.command(["output-log", "mylog", "export", "1"]))
    assert exported == [{"finished": True, "id": 0, "stdout": "Start\nEnd 1\n"}]


def test_stream_worker_sigkill_leaves_complete_records(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker()
    # 40 lines of 1000 bytes: more than the 8 KiB buffer, so most reaches the disk
    # while the task runs; whatever was still buffered dies with the worker.
    program = (
        "import sys, time\n"
        "for i in range(40):\n"
        "    sys.stdout.write(str(i % 10) * 999 + '\\n'); sys.stdout.flush()\n"
        "open('printed', 'w').close(); time.sleep(100)\n"
    )
    cluster.command(["submit", "--stream", "mylog", "--", "python3", "-c", program])
    wait_until(lambda: (cluster.work_dir / "printed").exists(), what="the task to print")

    def on_disk() -> bool:
        code, out, _ = output_log(cluster, "mylog", "cat", "1", "stdout", "--allow-unfinished")
        return code == 0 and len(out) >= 8 * 1024

    wait_until(on_disk, what="output on disk")
    kill_process(worker, signal.SIGKILL)
    [path] = stream_files(cluster.work_dir / "mylog")
    expected = "".join(str(i % 10) * 999 + "\n" for i in range(40))

    def check() -> int:
        code, out, err = output_log(cluster, "mylog", "cat", "1", "stdout")
        assert (code, err) == (1, "Stream for task 0 is not finished\n")
        code, out, err = output_log(cluster, "mylog", "cat", "1", "stdout", "--allow-unfinished")
        assert code == 0 and err == ""
        assert expected.startswith(out)
        return len(out)

    complete = check()
    assert complete >= 8 * 1024
    # Cut the file inside its last record: the torn tail is ignored, silently.
    raw = path.read_bytes()
    path.write_bytes(raw[:-7])
    assert check() < complete
    rows = dict(summary_rows(cluster.command(["output-log", "mylog", "summary"])))
    assert rows["Opened streams"] == "1"


def test_stream_collision_of_two_server_instances(cluster: ClusterEnv) -> None:
    uids = []
    for run in (1, 2):
        server = cluster.start_server(name=f"server{run}")
        uids.append(cluster.json(["server", "info"])["server_uid"])
        cluster.command(["submit", "--stream", "mylog", "--", "echo", f"run {run}"])
        cluster.start_worker()
        cluster.wait_for_job_state(1, "FINISHED")
        assert cluster.stop_server(server) == 0
    assert uids[0] != uids[1]
    expected = (
        "Found streams from multiple server instances:\n"
        + "\n".join(sorted(uids))
        + "\nUse --server-uid=... to specify server uid\n"
    )
    for sub in (["summary"], ["jobs"], ["show"], ["cat", "1", "stdout"], ["export", "1"]):
        assert output_log(cluster, "mylog", *sub)[::2] == (1, expected)
    for run, uid in enumerate(uids, start=1):
        out = cluster.command(["output-log", "--server-uid", uid, "mylog", "cat", "1", "stdout"])
        assert out == f"run {run}\n"


def test_stream_corrupted_byte_is_reported_and_skipped(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        ["submit", "--stream", "mylog", "--array=1-3", "--", "bash", "-c", "echo task $HQ_TASK_ID"]
    )
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    [path] = stream_files(cluster.work_dir / "mylog")
    raw = bytearray(path.read_bytes())
    where = raw.index(b"task 2\n")
    raw[where] ^= 0x20
    path.write_bytes(bytes(raw))
    code, out, err = output_log(cluster, "mylog", "cat", "1", "stdout")
    assert code == 0
    assert out == "task 1\ntask 3\n"
    assert "Damaged record in" in err and "skipped" in err
    assert output_log(cluster, "mylog", "jobs")[:2] == (0, "1\n")


def test_stream_directory_that_cannot_be_created_fails_the_task(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    (cluster.work_dir / "blocker").write_text("a file, not a directory")
    cluster.command(["submit", "--stream", "blocker/logs", "--", "echo", "lost"])
    cluster.wait_for_job_state(1, "FAILED")
    error = cluster.json(["task", "list", "1"])
    assert "Cannot create stream directory" in json.dumps(error)
    # The worker survives and streams the next job.
    cluster.command(["submit", "--stream", "fine", "--", "echo", "ok"])
    cluster.wait_for_job_state(2, "FINISHED")
    assert cluster.command(["output-log", "fine", "cat", "2", "stdout"]) == "ok\n"


def test_restore_streaming_from_journal(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "journal.bin")
    cluster.command(["job", "open"])
    script = (
        "echo Start $HQ_INSTANCE_ID; if [ $HQ_INSTANCE_ID = 0 ]; then touch started; sleep 100; fi"
    )
    cluster.command(
        ["submit", "--job", "1", "--stream", "log-%{JOB_ID}", "--", "bash", "-c", script]
    )
    cluster.start_worker()
    wait_until(lambda: (cluster.work_dir / "started").exists(), what="the first run")
    assert cluster.stop_server(server) == 0
    cluster.start_server("--journal", "journal.bin", name="server2")
    info = cluster.command(["job", "info", "1"])
    assert any("Stdout" in line and "<Stream>" in line for line in info.splitlines())
    cluster.start_worker()
    cluster.wait_for_task_state(1, 0, "FINISHED")
    out = cluster.command(["output-log", "log-1", "cat", "1", "stdout"])
    assert out.startswith("Start ") and int(out.split()[1]) >= 1
    rows = dict(summary_rows(cluster.command(["output-log", "log-1", "summary"])))
    assert rows["Superseded streams"] == "1"
    exported = cluster.command(["journal", "export", "journal.bin"])
    assert '"stream_path": "log-%{JOB_ID}"' in exported.replace('":"', '": "')

"""End to end: `--stream` through real server and worker processes, read with `hq output-log`.

Ports of the original's `tests/test_stream.py` (stream.md §6) plus the failure cases of
issue 16: SIGKILL mid-stream, two server instances in one directory, a damaged byte.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import ClusterEnv


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

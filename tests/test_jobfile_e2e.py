"""`hq job submit-file` end to end: real server and workers (graphs.md §1–§2)."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from hyperq.client.session import connect_to_server
from hyperq.common.context import Context
from hyperq.common.errors import HqError
from hyperq.common.resources import parse_task_request
from tests.harness import ClusterEnv, kill_process, wait_until

DIAMOND = """
[[task]]
id = 1
command = ["bash", "-c", "sleep 0.3; date +%s.%N > a"]

[[task]]
id = 2
deps = [1]
command = ["bash", "-c", "test -f a && date +%s.%N > b"]

[[task]]
id = 3
deps = [1]
command = ["bash", "-c", "test -f a && date +%s.%N > c"]

[[task]]
id = 4
deps = [3, 2]
command = ["bash", "-c", "test -f b && test -f c && date +%s.%N > d"]
"""


def write(cluster: ClusterEnv, name: str, text: str) -> str:
    (cluster.work_dir / name).write_text(text)
    return name


def stamp(cluster: ClusterEnv, name: str) -> float:
    return float((cluster.work_dir / name).read_text())


def test_diamond_runs_in_order(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=4)
    out = cluster.command(["job", "submit-file", write(cluster, "job.toml", DIAMOND)])
    assert out == "Job submitted successfully, job ID: 1\n"
    cluster.wait_for_job_state(1, "FINISHED")
    a, b, c, d = (stamp(cluster, n) for n in "abcd")
    assert a < b and a < c and max(b, c) < d
    info = cluster.command(["job", "info", "1"])
    assert "4; Ids: 1-4" in info
    assert "Resources" not in info  # graph jobs have no shared description rows
    task = cluster.command(["task", "info", "1", "4"])
    dep_line = next(line for line in task.splitlines() if "Dependencies" in line)
    assert "3,2" in dep_line
    detail = cluster.json(["job", "info", "1"])
    graphs = detail[0]["submits"]
    assert len(graphs) == 1 and len(graphs[0]["graph"]) == 4


def test_failure_aborts_dependants(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    job = """
[[task]]
id = 0
command = ["false"]

[[task]]
id = 1
deps = [0]
command = ["touch", "never1"]

[[task]]
id = 2
deps = [1]
command = ["touch", "never2"]

[[task]]
id = 3
command = ["true"]
"""
    out = cluster.command(
        ["--output-mode", "quiet", "job", "submit-file", write(cluster, "j.toml", job)]
    )
    assert out == "1\n"
    cluster.wait_for_job_state(1, "FAILED")
    assert cluster.task_states(1) == {0: "failed", 1: "aborted", 2: "aborted", 3: "finished"}
    assert not (cluster.work_dir / "never1").exists()
    tasks = cluster.json(["task", "list", "1"])["1"]
    aborted = next(t for t in tasks if t["id"] == 1)
    assert aborted["state"] == "aborted"


def graph_request(cluster: ClusterEnv, **request: Any) -> Any:
    """Send one `submit-graph` request, as the Python API will."""
    ctx = Context(cluster.server_dir, False, "cli", False, False)
    with connect_to_server(ctx) as session:
        return session.request("submit-graph", **request)


def test_open_job_attach_with_deps_on_earlier_submit(cluster: ClusterEnv) -> None:
    cluster.start_server()
    assert cluster.command(["job", "open"]) == "Job 1 is open.\n"
    first = """
[[task]]
id = 1
command = ["bash", "-c", "sleep 0.3; date +%s.%N > first"]
"""
    second = """
[[task]]
id = 5
deps = [4]
command = ["true"]

[[task]]
id = 4
command = ["true"]
"""
    out = cluster.command(
        [
            "--output-mode",
            "json",
            "job",
            "submit-file",
            "--job",
            "1",
            write(cluster, "a.toml", first),
        ]
    )
    assert json.loads(out) == {"id": 1}
    cluster.command(["job", "submit-file", "--job", "1", write(cluster, "b.toml", second)])
    # A collision is refused, nothing is submitted.
    err = cluster.command(["job", "submit-file", "--job", "1", "b.toml"], expect_fail=True)
    assert "Task 4 already exists in job 1." in err  # first in topological order
    # A job file's deps stay inside the file (stage C) ...
    third = '[[task]]\nid = 9\ndeps = [1]\ncommand = ["true"]\n'
    err = cluster.command(
        ["job", "submit-file", "--job", "1", write(cluster, "c.toml", third)], expect_fail=True
    )
    assert "Task 9 is part of dependency cycle" in err
    # ... but the graph request (the Python API's) may depend on earlier submits.
    task = {
        "id": 7,
        "deps": [1],
        "program": {
            "args": ["bash", "-c", "test -f first && date +%s.%N > second"],
            "env": {},
            "cwd": str(cluster.work_dir),
            "stdout": None,
            "stderr": None,
        },
        "resources": parse_task_request("1").to_wire(),
    }
    submit_desc = {"submit_dir": str(cluster.work_dir), "stream_path": None, "tasks": [task]}
    assert graph_request(cluster, job=1, job_desc={}, submit_desc=submit_desc) == {"job": 1}
    with pytest.raises(HqError, match=r"tasks\[0\]\.program\.args"):
        bad = {**task, "id": 8, "program": {**task["program"], "args": "true"}}
        graph_request(cluster, job=1, job_desc={}, submit_desc={**submit_desc, "tasks": [bad]})
    cluster.start_worker(cpus=2)
    wait_until(lambda: (cluster.work_dir / "second").exists(), what="the dependant")
    assert stamp(cluster, "first") < stamp(cluster, "second")
    assert "4; Ids: 1,4-5,7" in cluster.command(["job", "info", "1"])


def test_restore_mid_graph_after_kill(cluster: ClusterEnv) -> None:
    journal = cluster.work_dir / "journal.bin"
    server = cluster.start_server("--journal", str(journal))
    worker = cluster.start_worker(cpus=2)
    job = """
[[task]]
id = 1
command = ["bash", "-c", "echo x >> ran1"]

[[task]]
id = 2
command = ["bash", "-c", "echo x >> ran2; test -f go || sleep 100"]

[[task]]
id = 3
deps = [1, 2]
command = ["bash", "-c", "echo x >> ran3"]
"""
    cluster.command(["job", "submit-file", write(cluster, "j.toml", job)])
    cluster.wait_for_task_state(1, 1, "FINISHED")
    cluster.wait_for_task_state(1, 2, "RUNNING")
    # Task progress reaches the disk in periodic batches: make the finish of 1 durable.
    cluster.command(["journal", "flush"])
    kill_process(server, signal.SIGKILL)
    kill_process(worker, signal.SIGKILL)
    (cluster.work_dir / "go").write_text("")
    cluster.start_server("--journal", str(journal))
    assert cluster.task_states(1) == {1: "finished", 2: "waiting", 3: "waiting"}
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    assert (cluster.work_dir / "ran1").read_text() == "x\n"  # not re-run
    assert (cluster.work_dir / "ran2").read_text() == "x\nx\n"
    assert (cluster.work_dir / "ran3").read_text() == "x\n"


def test_errors_reach_the_user(cluster: ClusterEnv) -> None:
    cluster.start_server()
    out = cluster.command(["job", "submit-file", "missing.toml"], expect_fail=True)
    assert "Cannot read missing.toml: No such file or directory" in out
    cycle = """
[[task]]
id = 1
deps = [2]
command = ["true"]

[[task]]
id = 2
deps = [1]
command = ["true"]
"""
    out = cluster.command(["job", "submit-file", write(cluster, "c.toml", cycle)], expect_fail=True)
    assert "cycle" in out and "Traceback" not in out
    out = cluster.command(
        ["job", "submit-file", write(cluster, "x.toml", "foo = 1\n")], expect_fail=True
    )
    assert "Deserialization error: unknown field `foo`" in out
    result = cluster.run(["job", "submit-file", "c.toml", "--wait"])
    assert result.returncode == 2
    assert cluster.json(["job", "list", "--all"]) == []  # nothing was submitted


def test_array_form(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    job = """
[array]
ids = "2,10-12"
entries = ["a", "bb", "ccc", "x"]
command = ["bash", "-c", "echo $HQ_ENTRY > out$HQ_TASK_ID"]
"""
    cluster.command(["job", "submit-file", write(cluster, "a.toml", job)])
    cluster.wait_for_job_state(1, "FINISHED")
    got = {n: (cluster.work_dir / f"out{n}").read_text() for n in (2, 10, 11, 12)}
    assert got == {2: "a\n", 10: "bb\n", 11: "ccc\n", 12: "x\n"}
    # A job file's job has an empty name unless it sets one (graphs.md §1.1).
    assert cluster.json(["job", "info", "1"])[0]["info"]["name"] == ""


def test_resource_variants_choose_what_fits(cluster: ClusterEnv) -> None:
    """test_job_file_resource_variants1/2: only the gpus worker fits the second variant."""
    cluster.start_server()
    cluster.start_worker(cpus=2)
    cluster.start_worker("--resource", "gpus=[0,1]", cpus=2)
    job = """
[[task]]
id = 0
command = ["bash", "-c", "echo $HQ_RESOURCE_VARIANT $HQ_RESOURCE_REQUEST_gpus > out"]

[[task.request]]
resources = { "cpus" = "8" }

[[task.request]]
resources = { "cpus" = "1", "gpus" = "2" }
"""
    cluster.command(["job", "submit-file", write(cluster, "v.toml", job)])
    cluster.wait_for_job_state(1, "FINISHED")
    assert (cluster.work_dir / "out").read_text() == "1 2 compact\n"
    task = cluster.json(["task", "info", "1", "0"])[0]
    assert task["worker"] == 2  # the only worker with gpus
    info = cluster.command(["task", "info", "1", "0"])
    assert "# Variant 1" in info and "# Variant 2" in info


def test_graph_paths_resolve_at_task_start(cluster: ClusterEnv) -> None:
    """test_job_file_submit_maximal's paths: relative cwd against the submit dir."""
    cluster.start_server()
    cluster.start_worker(cpus=1)
    (cluster.work_dir / "test-200").mkdir()
    job = """
[[task]]
id = 200
cwd = "test-200"
command = ["bash", "-c", "pwd; echo $HQ_TASK_ID"]

[[task]]
id = 12
stdout = "testout-%{TASK_ID}"
command = ["echo", "twelve"]
"""
    cluster.command(["job", "submit-file", write(cluster, "p.toml", job)])
    cluster.wait_for_job_state(1, "FINISHED")
    out = (cluster.work_dir / "test-200" / "job-1" / "200.stdout").read_text()
    assert out == f"{cluster.work_dir / 'test-200'}\n200\n"
    assert (cluster.work_dir / "testout-12").read_text() == "twelve\n"
    graph = cluster.json(["job", "info", "1"])[0]["submits"][0]["graph"]
    raw = {task["program"]["cwd"] for task in graph}
    assert "test-200" in raw  # kept as written in JSON
    info = cluster.json(["task", "info", "1", "200"])[0]
    assert info["cwd"] == str(cluster.work_dir / "test-200")
    assert info["stdout"] == str(cluster.work_dir / "test-200" / "job-1" / "200.stdout")


def test_job_file_graph_streams(cluster: ClusterEnv) -> None:
    """A job file's top-level `stream` streams every task of a graph (stream.md §1): no
    per-task files, one stream file, `cat` in task order once the graph has finished."""
    cluster.start_server()
    cluster.start_worker(cpus=2)
    job = """
stream = "output"

[[task]]
id = 1
command = ["bash", "-c", "echo first; echo oops >&2"]

[[task]]
id = 2
deps = [1]
command = ["echo", "second"]

[[task]]
id = 3
deps = [1]
stderr = "none"
command = ["bash", "-c", "echo third; echo dropped >&2"]
"""
    cluster.command(["job", "submit-file", write(cluster, "s.toml", job)])
    cluster.wait_for_job_state(1, "FINISHED")
    assert not (cluster.work_dir / "job-1").exists()
    assert len(list((cluster.work_dir / "output").glob("*.hqs"))) == 1
    log = ["output-log", "output"]
    assert cluster.command([*log, "cat", "1", "stdout"]) == "first\nsecond\nthird\n"
    assert cluster.command([*log, "cat", "1", "stderr"]) == "oops\n"
    assert cluster.command([*log, "jobs"]) == "1\n"
    info = cluster.command(["task", "info", "1", "2"])
    assert any("Stdout" in line and "<Stream>" in line for line in info.splitlines())

    array = """
stream = "output-%{JOB_ID}"

[array]
ids = "1-3"
command = ["bash", "-c", "echo task $HQ_TASK_ID"]
"""
    cluster.command(["job", "submit-file", write(cluster, "a.toml", array)])
    cluster.wait_for_job_state(2, "FINISHED")
    assert not (cluster.work_dir / "job-2").exists()
    expected = "task 1\ntask 2\ntask 3\n"
    assert cluster.command(["output-log", "output-2", "cat", "2", "stdout"]) == expected


def test_job_file_graph_keeps_streaming_after_restore(cluster: ClusterEnv) -> None:
    """A streamed graph's tasks still stream after a journal restore (their stream_dir
    is in the journal's task descriptions; stream_path stays as written)."""
    server = cluster.start_server("--journal", "journal.bin")
    cluster.start_worker(cpus=2)
    job = """
stream = "log-%{JOB_ID}"

[[task]]
id = 1
command = ["echo", "one"]

[[task]]
id = 2
deps = [1]
command = ["bash", "run.sh"]
"""
    script = "echo run $HQ_INSTANCE_ID; [ $HQ_INSTANCE_ID != 0 ] || { touch started; sleep 100; }"
    write(cluster, "run.sh", script)
    cluster.command(["job", "submit-file", write(cluster, "r.toml", job)])
    wait_until(lambda: (cluster.work_dir / "started").exists(), what="the first run of task 2")
    assert cluster.stop_server(server) == 0
    cluster.start_server("--journal", "journal.bin", name="server2")
    cluster.start_worker(cpus=2)
    cluster.wait_for_job_state(1, "FINISHED")
    out = cluster.command(["output-log", "log-1", "cat", "1", "stdout"])
    assert out.startswith("one\nrun ") and int(out.split()[-1]) >= 1
    assert not (cluster.work_dir / "job-1").exists()
    exported = cluster.command(["journal", "export", "journal.bin"])
    assert '"stream_path": "log-%{JOB_ID}"' in exported.replace('":"', '": "')

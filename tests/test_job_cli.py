"""`hq job …` and `hq task …` against a fake session answering in the contract's shapes.

No server runs here: `connect_to_server` is replaced by a FakeSession that records each
request and returns canned replies, so these tests pin down the client half of the
contract (what is asked, what is printed) in all three output modes.
"""

from __future__ import annotations

import copy
import json
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hyperq.cli.main import run
from hyperq.common.duration import format_date, format_local
from hyperq.common.errors import HqError
from tests.tableparse import parse_table, parse_tables
from tests.test_output import T0, wire_task

LOST = HqError("Connection to the server was lost: closed")


class FakeSession:
    """Stands in for ClientSession: canned replies per op, a queue for `recv`."""

    def __init__(self, replies: dict[str, Any], stream: list[Any] | None = None) -> None:
        self.replies = replies
        self.stream = list(stream or [])
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def request(self, op: str, **fields: Any) -> Any:
        self.requests.append((op, fields))
        reply = self.replies[op]
        if isinstance(reply, list) and reply and all(callable(r) for r in reply):
            reply = reply.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(fields)
        return copy.deepcopy(reply)

    def recv(self) -> Any:
        item = self.stream.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Result:
    code: int
    out: str
    err: str


Hq = Callable[..., Result]


@pytest.fixture
def hq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Hq]:
    for name in ("HQ_OUTPUT_MODE", "HQ_DEBUG", "HQ_SERVER_DIR"):
        monkeypatch.delenv(name, raising=False)

    def call(*argv: str) -> Result:
        capsys.readouterr()
        code = run(["--server-dir", str(tmp_path / "server"), *argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield call


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeSession]:
    def install(replies: dict[str, Any], stream: list[Any] | None = None) -> FakeSession:
        session = FakeSession(replies, stream)
        monkeypatch.setattr("hyperq.client.session.connect_to_server", lambda ctx, *a, **k: session)
        return session

    return install


def job_info(
    job_id: int,
    state: str,
    *,
    name: str = "job",
    count: int = 1,
    is_open: bool = False,
    reason: str | None = None,
    stats: dict[str, int] | None = None,
) -> dict[str, Any]:
    task_stats = dict.fromkeys(
        ("running", "finished", "failed", "canceled", "aborted", "waiting"), 0
    )
    if stats is not None:
        task_stats.update(stats)
    elif state in task_stats:
        task_stats[state] = count
    return {
        "id": job_id,
        "name": name,
        "task_count": count,
        "is_open": is_open,
        "cancel_reason": reason,
        "task_stats": task_stats,
        "state": state,
    }


DESC = {
    "program": {
        "args": ["bash", "-c", "echo $FOO"],
        "env": {"FOO2": "BAR2", "FOO": "BAR", "HQ_ENTRY": "hidden"},
        "cwd": "/sub",
        "stdout": "/sub/job-1/%{TASK_ID}.stdout",
        "stderr": None,
    },
    "resources": [
        {
            "n_nodes": 0,
            "min_time": 0.0,
            "weight": 10000,
            "resources": [
                {"resource": "gpus", "request": "All"},
                {"resource": "cpus", "request": {"ForceCompact": 20000}},
            ],
        }
    ],
    "pin_mode": "taskset",
    "priority": 3,
    "time_limit": 0.5,
    "task_dir": False,
    "crash_limit": "never-restart",
}


def job_detail(info: dict[str, Any], **extra: Any) -> dict[str, Any]:
    detail = {
        "info": info,
        "max_fails": None,
        "started_at": T0,
        "finished_at": T0 + 0.503,
        "submits": [{"array": DESC}],
        "submit_dirs": ["/sub"],
        "submit_ids": [[[0, 0, 1]]],
        "tasks": [],
        "state": info["state"],
        "workers": [],
        "failed_tasks": [],
        "failed_count": 0,
    }
    detail.update(extra)
    return detail


# job list / summary


JOBS = [
    job_info(2, "waiting", name="a" * 45 + "b" * 31),
    job_info(1, "finished", name="bash"),
    job_info(3, "opened", is_open=True, count=0, reason="no more"),
    job_info(4, "failed", name="ls"),
]


def test_job_list_default_shows_active_and_open(hq: Hq, server: Any) -> None:
    server({"job-list": {"jobs": JOBS, "total": 4}})
    result = hq("job", "list")
    assert result.code == 0
    table = parse_table(result.out)
    assert table.header == ["ID", "Name", "State", "Tasks"]
    assert table.rows == [
        ["2", "a" * 24 + "..." + "b" * 23, "WAITING", "1"],
        ["*3", "job", "OPENED", "0"],
    ]
    lines = result.out.splitlines()
    assert lines[-2:] == [
        "* = Open jobs",
        "There are 4 jobs in total. Use `--all` to display all jobs.",
    ]


def test_job_list_all_filter_and_verbose(hq: Hq, server: Any) -> None:
    server({"job-list": {"jobs": JOBS, "total": 4}})
    result = hq("job", "list", "--all", "--verbose")
    table = parse_table(result.out)
    assert table.header == ["ID", "Name", "State", "Tasks", "Cancel Reason"]
    assert table.get_column_value("ID") == ["1", "2", "*3", "4"]
    assert table.get_column_value("Cancel Reason") == ["", "", "no more", ""]
    assert "in total" not in result.out

    table = parse_table(hq("job", "list", "--filter", "failed,finished").out)
    assert table.get_column_value("State") == ["FINISHED", "FAILED"]

    bad = hq("job", "list", "--filter", "done")
    assert bad.code == 2 and "invalid value 'done'" in bad.err


def test_job_list_empty_and_singular_total(hq: Hq, server: Any) -> None:
    server({"job-list": {"jobs": [job_info(1, "finished")], "total": 1}})
    result = hq("job", "list")
    table = parse_table(result.out)
    assert table.header[:3] == ["ID", "Name", "State"] and len(table) == 0
    assert "There is 1 job in total. Use `--all` to display all jobs." in result.out


def test_job_list_json_and_quiet(hq: Hq, server: Any) -> None:
    server({"job-list": {"jobs": JOBS, "total": 4}})
    data = json.loads(hq("--output-mode=json", "job", "list", "--all").out)
    assert [job["id"] for job in data] == [1, 2, 3, 4]
    assert data[2] == {
        "id": 3,
        "name": "job",
        "task_count": 0,
        "is_open": True,
        "cancel_reason": "no more",
        "task_stats": dict.fromkeys(
            ("running", "finished", "failed", "canceled", "aborted", "waiting"), 0
        ),
    }
    quiet = hq("--output-mode=quiet", "job", "list", "--all")
    assert quiet.out.splitlines() == ["1 FINISHED", "2 WAITING", "3 OPENED", "4 FAILED"]


def test_job_summary(hq: Hq, server: Any) -> None:
    server({"job-summary": {"counts": {"running": 1, "waiting": 0, "finished": 2, "failed": 1}}})
    table = parse_table(hq("job", "summary").out)
    assert table.header == ["Status", "Count"]
    assert table.rows == [
        ["RUNNING", "1"],
        ["WAITING", "0"],
        ["FINISHED", "2"],
        ["FAILED", "1"],
        ["ABORTED", "0"],
        ["CANCELED", "0"],
    ]


# job info


def test_job_info_single_task_rows(hq: Hq, server: Any) -> None:
    session = server(
        {
            "job-info": {
                "jobs": [job_detail(job_info(1, "finished", name="bash"), workers=[1])],
                "missing": [],
                "worker_names": {1: "worker1"},
            }
        }
    )
    result = hq("job", "info", "1")
    assert result.code == 0
    assert session.requests == [
        ("job-info", {"selector": {"kind": "ids", "ranges": [[1, 1, 1]]}, "with_tasks": False})
    ]
    table = parse_table(result.out)
    assert [row[0] for row in table.rows] == [
        "ID",
        "Name",
        "State",
        "Cancel Reason",
        "Session",
        "Tasks",
        "Workers",
        "Resources",
        "Pin",
        "Priority",
        "Command",
        "Stdout",
        "Stderr",
        "Environment",
        "Working directory",
        "Task time limit",
        "Crash limit",
        "Submission date",
        "Submission directory",
        "Makespan",
    ]
    table.check_row_value("ID", "1")
    table.check_row_value("State", "FINISHED")
    table.check_row_value("Cancel Reason", "")
    table.check_row_value("Session", "closed")
    table.check_row_value("Tasks", "1; Ids: 0")
    table.check_row_value("Workers", "worker1")
    table.check_row_value("Resources", "cpus: 2 compact!\ngpus: all")
    table.check_row_value("Pin", "taskset")
    table.check_row_value("Priority", "3")
    table.check_row_value("Command", "bash\n-c\necho $FOO")
    table.check_row_value("Stdout", "/sub/job-1/%{TASK_ID}.stdout")
    table.check_row_value("Stderr", "<None>")
    table.check_row_value("Environment", "FOO=BAR\nFOO2=BAR2")
    table.check_row_value("Working directory", "/sub")
    table.check_row_value("Task time limit", "500ms")
    table.check_row_value("Crash limit", "never-restart")
    table.check_row_value("Submission date", format_date(T0))
    table.check_row_value("Submission directory", "/sub")
    table.check_row_value("Makespan", "503ms")


def test_job_info_array_state_lines_and_failures(hq: Hq, server: Any) -> None:
    stats = {"failed": 6, "finished": 150, "canceled": 4, "waiting": 40}
    failed = [wire_task(t, "failed", error=f"error {t}") for t in (9, 3, 5, 7, 1, 11)]
    detail = job_detail(
        job_info(1, "failed", count=200, stats=stats, is_open=True),
        submits=[
            {"array": DESC, "ids": [[10, 20, 1]], "submit_dir": "/a"},
            {"array": DESC, "ids": [[1, 5, 2], [2, 6, 2]], "submit_dir": "/b"},
        ],
        workers=[3, 1, 2],
        failed_tasks=failed,
        failed_count=6,
    )
    server(
        {
            "job-info": {
                "jobs": [detail],
                "missing": [5],
                "worker_names": {1: "w1", 2: "w2"},
            }
        }
    )
    result = hq("job", "info", "1,5")
    assert result.code == 0
    assert "ERROR Job 5 not found" in result.err
    job_table, fail_table = parse_tables(result.out)
    states = job_table.get_row_value("State").split("\n")
    assert states[0] == "[" + "#" * 33 + "." * 7 + "]"
    assert states[1:] == ["FAILED (6)", "FINISHED (150)", "CANCELED (4)", "WAITING (40)"]
    job_table.check_row_value("Session", "open")
    job_table.check_row_value("Tasks", "200; Ids: 1-6,10-20")
    job_table.check_row_value("Workers", "w1, w2, … (3 total)")
    # Several submits: no task description and no submission directory.
    assert job_table.get_row_value("Command") is None
    assert job_table.get_row_value("Submission directory") is None
    assert fail_table.header == ["Task ID", "Worker", "Error"]
    assert fail_table.get_column_value("Task ID") == ["1", "3", "5", "7", "9"]
    assert fail_table.rows[0] == ["1", "w1", "error 1"]
    assert result.out.rstrip().endswith("6 tasks failed. (5 shown)")


def test_job_info_json_asks_for_tasks(hq: Hq, server: Any) -> None:
    detail = job_detail(job_info(1, "waiting", count=2), tasks=[wire_task(1, "waiting")])
    session = server({"job-info": {"jobs": [detail], "missing": [], "worker_names": {}}})
    data = json.loads(hq("--output-mode=json", "job", "info", "last").out)
    assert session.requests[0][1] == {"selector": {"kind": "last"}, "with_tasks": True}
    assert data[0]["tasks"] == [{"id": 1, "state": "waiting"}]
    assert data[0]["finished_at"] == "2024-05-01T10:00:00.503Z"
    assert list(data[0]["submits"][0]) == ["array"]


# per-item outcomes


def test_job_cancel_log_lines(hq: Hq, server: Any) -> None:
    session = server(
        {
            "job-cancel": {
                "results": [
                    {"id": 4, "status": "missing", "canceled": 0, "finished": 0},
                    {"id": 1, "status": "canceled", "canceled": 3, "finished": 2},
                    {"id": 2, "status": "all-finished", "canceled": 0, "finished": 1},
                ]
            }
        }
    )
    result = hq("job", "cancel", "1-4", "--reason", "because")
    assert result.code == 0 and result.out == ""
    assert session.requests[0] == (
        "job-cancel",
        {"selector": {"kind": "ids", "ranges": [[1, 4, 1]]}, "reason": "because"},
    )
    lines = result.err.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO Job 1 canceled (3 tasks canceled, 2 tasks already finished)",
        "ERROR Canceling job 2 failed; all tasks are already finished",
        "ERROR Canceling job 4 failed; job not found",
    ]


def test_job_cancel_nothing_and_json(hq: Hq, server: Any) -> None:
    server({"job-cancel": {"results": []}})
    result = hq("--output-mode=json", "job", "cancel", "all")
    assert json.loads(result.out) == {}
    assert "INFO There is nothing to cancel" in result.err


def test_job_cancel_reason_too_long(hq: Hq, server: Any) -> None:
    server({})
    result = hq("job", "cancel", "1", "--reason", "x" * 201)
    assert result.code == 2
    assert "Cancel reason must be shorter than 200 you entered 201." in result.err


@pytest.mark.parametrize(
    ("forgotten", "ignored", "message"),
    [
        (1, 0, "INFO 1 job were forgotten"),
        (6, 1, "INFO 6 jobs were forgotten, 1 were ignored due to wrong state or invalid ID"),
        (0, 1, "INFO 0 jobs were forgotten, 1 were ignored"),
    ],
)
def test_job_forget(hq: Hq, server: Any, forgotten: int, ignored: int, message: str) -> None:
    session = server({"job-forget": {"forgotten": forgotten, "ignored": ignored}})
    result = hq("job", "forget", "all")
    assert result.code == 0 and message in result.err
    assert session.requests[0][1]["states"] == ["finished", "failed", "aborted", "canceled"]
    hq("job", "forget", "all", "--filter", "canceled,failed")
    assert session.requests[1][1]["states"] == ["canceled", "failed"]


def test_job_open_and_close(hq: Hq, server: Any) -> None:
    session = server(
        {
            "job-open": {"job": 7},
            "job-close": {
                "results": [
                    {"id": 7, "status": "closed"},
                    {"id": 2, "status": "already-closed"},
                    {"id": 9, "status": "missing"},
                ],
                "nothing": False,
            },
        }
    )
    assert hq("job", "open").out == "Job 7 is open.\n"
    assert session.requests[0] == ("job-open", {"name": "job", "max_fails": None})
    assert hq("--output-mode=quiet", "job", "open", "--name", "x", "--max-fails=2").out == "7\n"
    assert session.requests[1][1] == {"name": "x", "max_fails": 2}
    assert hq("job", "open", "--name", "a\tb").code == 1

    result = hq("job", "close", "2,7,9")
    assert result.code == 0
    assert [line.split(" ", 1)[1] for line in result.err.splitlines()] == [
        "ERROR Closing job 2 failed; job is already closed",
        "INFO Job 7 closed",
        "ERROR Closing job 9 failed; job not found",
    ]
    session.replies["job-close"] = {"results": [], "nothing": True}
    assert "INFO There is nothing to close" in hq("job", "close", "all").err


# task-ids


def test_job_task_ids(hq: Hq, server: Any) -> None:
    session = server(
        {"job-task-ids": {"jobs": {1: [[2, 2, 1], [7, 9, 2], [20, 30, 1]]}, "missing": []}}
    )
    assert hq("job", "task-ids", "1").out == "2,7,9,20-30\n"
    assert hq("job", "task-ids", "1", "--filter", "failed").code == 0
    assert session.requests[1][1]["states"] == ["failed"]
    session.replies["job-task-ids"] = {"jobs": {1: [], 2: [[0, 3, 1]]}, "missing": []}
    assert hq("job", "task-ids", "1-2").out == "1: \n2: 0-3\n"
    assert json.loads(hq("--output-mode=json", "job", "task-ids", "1-2").out) == {
        "1": [],
        "2": [0, 1, 2, 3],
    }
    session.replies["job-task-ids"] = {"jobs": {1: []}, "missing": []}
    assert hq("job", "task-ids", "1").out == "\n"
    session.replies["job-task-ids"] = {"jobs": {}, "missing": [3]}
    missing = hq("job", "task-ids", "3")
    assert missing.code == 1 and "Job Id not found" in missing.err


# wait / progress


def test_job_wait(hq: Hq, server: Any) -> None:
    session = server({"job-wait": {"jobs": [job_info(1, "failed")]}})
    result = hq("job", "wait", "1", "--without-close")
    assert (result.code, result.out, result.err) == (0, "", "")
    assert session.requests == [
        (
            "job-wait",
            {"selector": {"kind": "ids", "ranges": [[1, 1, 1]]}, "without_close": True},
        )
    ]
    assert json.loads(hq("--output-mode=json", "job", "wait", "all").out) == {}
    session.replies["job-wait"] = LOST
    assert hq("job", "wait", "all").code == 0
    session.replies["job-wait"] = HqError("boom")
    assert hq("job", "wait", "all").code == 1


def test_wait_for_jobs_accepts_ids(server: Any) -> None:
    from hyperq.cli.jobwait import wait_for_jobs

    session = server({"job-wait": {"jobs": [job_info(3, "finished")]}})
    jobs = wait_for_jobs(None, session, [3, 4])  # type: ignore[arg-type]
    assert jobs[0]["id"] == 3
    assert session.requests[0][1]["selector"] == {"kind": "ids", "ranges": [[3, 4, 1]]}
    wait_for_jobs(None, session, 5)  # type: ignore[arg-type]
    assert session.requests[1][1]["selector"] == {"kind": "ids", "ranges": [[5, 5, 1]]}


def test_job_progress_lines(hq: Hq, server: Any) -> None:
    first = [
        job_info(1, "running", count=2, stats={"running": 1, "waiting": 1}),
        job_info(2, "finished"),
    ]
    middle = [job_info(1, "running", count=2, stats={"running": 1, "finished": 1}), first[1]]
    last = [job_info(1, "failed", count=2, stats={"failed": 1, "finished": 1}), first[1]]
    session = server({"job-progress": {"jobs": first}}, [{"jobs": middle}, {"jobs": last}])
    result = hq("job", "progress", "all")
    assert result.code == 0 and result.err == ""
    assert session.requests == [("job-progress", {"selector": {"kind": "all"}})]
    lines = result.out.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "1/2 jobs, 1/3 tasks 1 RUNNING 1 FINISHED",
        "1/2 jobs, 2/3 tasks 1 RUNNING 2 FINISHED",
        "2/2 jobs, 3/3 tasks 2 FINISHED 1 FAILED",
    ]
    assert lines[-1].startswith("[" + "#" * 40 + "]")


def test_job_progress_nothing_to_wait_for(hq: Hq, server: Any) -> None:
    server({"job-progress": {"jobs": [job_info(1, "finished")]}})
    result = hq("job", "progress", "1")
    assert result.code == 0 and result.out == ""
    assert "WARN There are no jobs to wait for" in result.err


def test_job_progress_server_lost(hq: Hq, server: Any) -> None:
    running = [job_info(1, "running")]
    server({"job-progress": {"jobs": running}}, [{"ok": {"jobs": running}}, LOST])
    result = hq("job", "progress", "1")
    # Unchanged updates are not repeated on a non-terminal.
    assert result.code == 0 and len(result.out.splitlines()) == 1


# cat


def cat_tasks(tmp_path: Path) -> dict[str, Any]:
    out_dir = tmp_path / "sub" / "job-1"
    out_dir.mkdir(parents=True)
    for task_id in (3, 4):
        (out_dir / f"{task_id}.stdout").write_text(f"out {task_id}\n")
    stdout = str(tmp_path / "sub" / "job-1" / "%{TASK_ID}.stdout")
    cwd = str(tmp_path / "sub")
    return {
        "jobs": {
            1: [
                wire_task(4, "failed", cwd=cwd, stdout=stdout),
                wire_task(3, "finished", cwd=cwd, stdout=stdout, stderr=None),
                wire_task(5, "waiting", cwd=cwd, stdout=stdout),
            ]
        },
        "missing": [],
        "worker_names": {},
    }


def test_job_cat_prints_files(hq: Hq, server: Any, tmp_path: Path) -> None:
    session = server({"task-list": cat_tasks(tmp_path)})
    result = hq("job", "cat", "1", "stdout", "--print-task-header")
    assert result.code == 0
    assert result.out == "# Job 1, task 3\nout 3\n# Job 1, task 4\nout 4\n# Job 1, task 5\n"
    assert "WARN Task 5 has no `stdout` stream associated with it" in result.err
    assert session.requests[0] == (
        "task-list",
        {"selector": {"kind": "ids", "ranges": [[1, 1, 1]]}, "tasks": None, "states": None},
    )
    stderr = hq("job", "cat", "1", "stderr")
    assert "WARN Task 3 has no `stderr` stream associated with it" in stderr.err
    assert "cannot be opened" in stderr.err
    assert hq("--output-mode=quiet", "job", "cat", "1", "stdout").out == "out 3\nout 4\n"


def test_job_cat_task_filters(hq: Hq, server: Any, tmp_path: Path) -> None:
    session = server({"task-list": cat_tasks(tmp_path)})
    result = hq("job", "cat", "--task-status=failed", "--tasks", "3-4,8", "1", "stdout")
    assert result.out == "out 4\n"
    assert "WARN Task 8 of job 1 not found" in result.err
    assert "Task 3 " not in result.err
    # With explicit IDs the states are filtered here, not by the server.
    assert session.requests[0][1]["tasks"] == [[3, 4, 1], [8, 8, 1]]
    assert session.requests[0][1]["states"] is None
    hq("job", "cat", "--task-status", "finished,failed", "1", "stdout")
    assert session.requests[1][1]["states"] == ["finished", "failed"]


def test_job_cat_missing_jobs(hq: Hq, server: Any) -> None:
    session = server({"task-list": {"jobs": {}, "missing": [], "worker_names": {}}})
    assert "ERROR No jobs were found" in hq("job", "cat", "last", "stdout").err
    session.replies["task-list"] = {"jobs": {2: []}, "missing": [4], "worker_names": {}}
    result = hq("job", "cat", "2,4", "stdout")
    assert result.code == 0
    assert "WARN No tasks were selected for job 2, there is nothing to print" in result.err
    assert "ERROR Job 4 was not found" in result.err
    json_mode = hq("--output-mode=json", "job", "cat", "2", "stdout")
    assert json_mode.code == 1
    assert json.loads(json_mode.out) == {"error": "JSON output mode doesn't support job output"}


# task list / info


def test_task_list_single_and_multi(hq: Hq, server: Any) -> None:
    long_error = 'Cannot execute "foo": No such file or directory (os error 2)'
    tasks = {
        1: [
            wire_task(1, "failed", error=long_error),
            wire_task(0, "finished", workers=[1, 2]),
            wire_task(2, "waiting"),
        ]
    }
    session = server(
        {"task-list": {"jobs": tasks, "missing": [], "worker_names": {1: "w1", 2: "w2"}}}
    )
    result = hq("task", "list", "1")
    table = parse_table(result.out)
    assert table.header == ["Task ID", "State", "Worker", "Makespan", "Error"]
    assert table.rows == [
        ["0", "FINISHED", "w1\nw2", "1s 500ms", ""],
        ["1", "FAILED", "w1", "1s 500ms", long_error[:16] + "..."],
        ["2", "WAITING", "", "", ""],
    ]
    assert "INFO An error message was truncated. Use -v to display the full error." in result.err
    verbose = parse_table(hq("task", "list", "1", "-v").out)
    assert verbose.get_column_value("Error")[1] == long_error

    session.replies["task-list"] = {
        "jobs": {2: [wire_task(0, "finished")], 1: [wire_task(5, "finished")]},
        "missing": [3],
        "worker_names": {},
    }
    result = hq("task", "list", "1-3", "--task-status", "finished", "--tasks", "0-5")
    table = parse_table(result.out)
    assert table.get_column_value("Job ID") == ["1", "2"]
    assert table.get_column_value("Worker") == ["N/A", "N/A"]
    assert "WARN Job 3 not found" in result.err
    assert session.requests[-1][1] == {
        "selector": {"kind": "ids", "ranges": [[1, 3, 1]]},
        "tasks": [[0, 5, 1]],
        "states": ["finished"],
    }


def test_task_list_json(hq: Hq, server: Any) -> None:
    server(
        {
            "task-list": {
                "jobs": {1: [wire_task(1, "waiting"), wire_task(0, "finished")]},
                "missing": [],
                "worker_names": {},
            }
        }
    )
    data = json.loads(hq("--output-mode=json", "task", "list", "1").out)
    assert list(data) == ["1"]
    assert [task["id"] for task in data["1"]] == [0, 1]
    assert data["1"][0]["stdout"] == "/sub/job-1/0.stdout"
    assert data["1"][0]["worker"] == 1


def info_task(task_id: int, state: str, **extra: Any) -> dict[str, Any]:
    task = wire_task(task_id, state, **extra)
    task.update(
        program={"args": ["bash", "-c", "uname"], "env": {"A": "1"}},
        resources=DESC["resources"],
        priority=-1,
        pin=None,
        time_limit=None,
        task_dir=True,
        crash_limit=5,
        deps=[1, 2],
        entry=None,
        submit_dir="/sub",
        job_id=1,
        server_uid="abc",
    )
    return task


def test_task_info(hq: Hq, server: Any) -> None:
    session = server(
        {
            "task-info": {
                "job": 1,
                "tasks": [info_task(6, "failed", error="x" * 300), info_task(5, "finished")],
                "missing_tasks": [4],
                "worker_names": {1: "worker1"},
            }
        }
    )
    result = hq("task", "info", "1", "4-6")
    assert result.code == 0
    assert "WARN Task 4 not found" in result.err
    assert session.requests[0] == (
        "task-info",
        {"selector": {"kind": "ids", "ranges": [[1, 1, 1]]}, "tasks": [[4, 6, 1]]},
    )
    first, second = parse_tables(result.out)
    assert [row[0] for row in first.rows] == [
        "Task ID",
        "State",
        "Command",
        "Environment",
        "Worker",
        "Start",
        "End",
        "Makespan",
        "Workdir",
        "Stdout",
        "Stderr",
        "Time limit",
        "Resources",
        "Priority",
        "Pin",
        "Task dir",
        "Crash limit",
        "Dependencies",
        "Error",
    ]
    first.check_row_value("Task ID", "5")
    first.check_row_value("State", "FINISHED")
    first.check_row_value("Command", "bash\n-c\nuname")
    first.check_row_value("Environment", "A=1")
    first.check_row_value("Worker", "worker1")
    first.check_row_value("Start", format_local(T0))
    first.check_row_value("End", format_local(T0 + 1.5))
    first.check_row_value("Makespan", "1s 500ms")
    first.check_row_value("Workdir", "/sub")
    first.check_row_value("Stdout", "/sub/job-1/5.stdout")
    first.check_row_value("Stderr", "/sub/job-1/5.stderr")
    first.check_row_value("Time limit", "None")
    first.check_row_value("Resources", "cpus: 2 compact!\ngpus: all")
    first.check_row_value("Priority", "-1")
    first.check_row_value("Pin", "none")
    first.check_row_value("Task dir", "yes")
    first.check_row_value("Crash limit", "5")
    first.check_row_value("Dependencies", "1,2")
    first.check_row_value("Error", "")
    second.check_row_value("Error", "x" * 237 + "...")
    verbose = parse_tables(hq("task", "info", "last", "6", "-v").out)
    verbose[1].check_row_value("Error", "x" * 300)
    assert session.requests[-1][1]["selector"] == {"kind": "last"}


def test_task_info_json_and_missing_job(hq: Hq, server: Any) -> None:
    session = server(
        {
            "task-info": {
                "job": 1,
                "tasks": [info_task(0, "running")],
                "missing_tasks": [],
                "worker_names": {},
            }
        }
    )
    data = json.loads(hq("--output-mode=json", "task", "info", "1", "0").out)
    assert data == [
        {
            "id": 0,
            "state": "running",
            "cwd": "/sub",
            "stdout": "/sub/job-1/0.stdout",
            "stderr": "/sub/job-1/0.stderr",
            "started_at": "2024-05-01T10:00:00Z",
            "worker": 1,
        }
    ]
    session.replies["task-info"] = {
        "job": None,
        "tasks": [],
        "missing_tasks": [],
        "worker_names": {},
    }
    result = hq("task", "info", "8", "0")
    assert result.code == 0 and "ERROR Cannot find job 8" in result.err
    session.replies["task-info"] = {
        "job": 9,
        "found": False,
        "tasks": [],
        "missing_tasks": [],
        "worker_names": {},
    }
    assert "ERROR Cannot find job 9" in hq("task", "info", "9", "0").err
    assert hq("task", "info", "1-2", "0").code == 2
    assert hq("task", "info", "all", "0").code == 2


def test_stub_commands_not_supported(hq: Hq) -> None:
    for argv in (("journal", "report", "journal.bin", "report.html"),):
        result = hq(*argv)
        assert result.code == 1 and "not supported" in result.err


def test_job_submit_entry_is_loaded_lazily(hq: Hq, monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperq.cli import job

    assert "submit" in job.COMMANDS and "submit" in list(job.COMMANDS)
    calls: list[dict[str, Any]] = []
    fake = types.ModuleType("hyperq.cli.submit")
    fake.COMMANDS = {  # type: ignore[attr-defined]
        "submit": (
            "Submit\n\nUsage:\n  hq job submit [options] [<COMMAND>...]\n\n"
            "Options:\n  --name <N>  Name\n",
            lambda ctx, args: calls.append(args) or 0,
            True,
        )
    }
    monkeypatch.setitem(sys.modules, "hyperq.cli.submit", fake)
    result = hq("job", "submit", "--name", "x", "echo", "--y")
    assert result.code == 0
    assert calls[0]["--name"] == "x" and calls[0]["<command>"] == ["echo", "--y"]

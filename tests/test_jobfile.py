"""Job definition files without a server: schema, IDs, every validation error."""

from __future__ import annotations

from typing import Any

import pytest

from hyperq.cli import jobtoml
from hyperq.cli.jobfile import build_graph, parse_job_file
from hyperq.common.errors import HqError
from hyperq.common.resources import ResourceRequest
from hyperq.server.graphapi import check_task


def parse(text: str, job: int | None = None) -> Any:
    """The request, with each task's request indices replaced by the table's entries."""
    request = parse_job_file(text, submit_dir="/home/u", job=job)
    table = request.submit_desc.get("requests")
    if table is not None:
        tasks = []
        for task in request.submit_desc["tasks"]:
            task = {**task, "resources": table[task["resources"]]}
            if "variants" in task:
                task["variants"] = [table[i] for i in task["variants"]]
            tasks.append(task)
        request.submit_desc["tasks"] = tasks
    return request


def error_of(text: str) -> str:
    with pytest.raises(HqError) as caught:
        parse(text)
    return caught.value.message


def test_minimal_task() -> None:
    request = parse('[[task]]\ncommand = ["sleep", "1"]\n')
    assert request.op == "submit-graph"
    assert request.job_desc == {"name": "", "max_fails": None}
    (task,) = request.submit_desc["tasks"]
    # Defaults are left out of the request (it must stay small) ...
    assert task == {
        "id": 1,  # all implicit: 1, 2, 3, ...
        "program": {
            "args": ["sleep", "1"],
            "stdout": {"path": "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout", "rm_if_finished": False},
            "stderr": {"path": "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr", "rm_if_finished": False},
        },
        "resources": task["resources"],
    }
    assert ResourceRequest.from_wire(task["resources"]).display_lines() == ["cpus: 1 compact"]
    # ... and come back on the server, which checks every field.
    full = check_task(task, 0, {}, "/home/u")
    assert full["deps"] == [] and full["program"]["cwd"] == "/home/u"
    assert full["program"]["env"] == {}
    assert (full["pin"], full["priority"], full["crash_limit"], full["stdin"]) == (
        None,
        0,
        5,
        None,
    )
    assert (full["time_limit"], full["task_dir"]) == (None, False)


MAXIMAL = """
name = "test-job"
max_fails = 11
data_layer = false

[[task]]
id = 12
command = ["a", "b"]
stdout = "testout-%{TASK_ID}"
stderr = { path = "testerr-%{TASK_ID}", on_close = "rm-if-finished" }
stdin = "Hello world"
task_dir = true
time_limit = "1m 10s"
priority = -1
crash_limit = 12
pin = "taskset"
env = { FOO = "BAR" }

[[task.request]]
resources = { "cpus" = "4 compact!", "gpus" = 2 }
weight = 11.2

[[task.request]]
resources = { "gpus" = 1.1 }
time_request = "10s"

[[task]]
id = 200
cwd = "test-200"
stdout = "none"
command = ["c"]
deps = [12, 12]
crash_limit = "never-restart"

[[task.request]]
n_nodes = 2
"""


def test_maximal_schema() -> None:
    request = parse(MAXIMAL)
    assert request.job_desc == {"name": "test-job", "max_fails": 11}
    first, second = request.submit_desc["tasks"]
    assert first["id"] == 12 and second["id"] == 200 and second["deps"] == [12, 12]
    program = first["program"]
    assert program["stdout"] == {"path": "testout-%{TASK_ID}", "rm_if_finished": False}
    assert program["stderr"] == {"path": "testerr-%{TASK_ID}", "rm_if_finished": True}
    assert program["env"] == {"FOO": "BAR"}
    assert first["stdin"] == b"Hello world" and first["task_dir"] is True
    assert (first["time_limit"], first["priority"], first["crash_limit"]) == (70.0, -1, 12)
    assert first["pin"] == "taskset"
    variants = [ResourceRequest.from_wire(v) for v in first["variants"]]
    assert variants[0].display_lines() == ["cpus: 4 compact!", "gpus: 2 compact", "[weight: 11.2]"]
    assert variants[1].display_lines() == ["gpus: 1.1 compact"]
    assert variants[1].min_time == 10.0
    assert first["resources"] == first["variants"][0]
    assert second["program"]["cwd"] == "test-200" and second["program"]["stdout"] is None
    assert second["crash_limit"] == "never-restart"
    nodes = ResourceRequest.from_wire(second["resources"])
    assert nodes.n_nodes == 2 and nodes.display_lines() == ["nodes: 2"]
    assert second["task_dir"] is True  # a multi-node task needs its node file


def test_attach_ignores_name_and_max_fails() -> None:
    request = parse(MAXIMAL, job=3)
    assert request.job_desc == {"name": None, "max_fails": None}


def test_auto_ids_follow_the_largest_explicit_id() -> None:
    text = "".join(
        f"[[task]]\n{line}command = ['x']\n" for line in ("", "id = 12\n", "id = 3\n", "", "")
    )
    ids = sorted(t["id"] for t in parse(text).submit_desc["tasks"])
    assert ids == [3, 12, 13, 14, 15]


def test_unordered_dependencies_are_sent_in_topological_order() -> None:
    text = """
[[task]]
id = 1
deps = [3, 20]
command = ["x"]
[[task]]
id = 3
command = ["x"]
[[task]]
id = 2
deps = [1]
command = ["x"]
[[task]]
id = 20
deps = [3]
command = ["x"]
[[task]]
id = 5
command = ["x"]
[[task]]
id = 10
command = ["x"]
"""
    order = [t["id"] for t in parse(text).submit_desc["tasks"]]
    assert order == [3, 5, 10, 20, 1, 2]


def test_equal_requests_share_one_table_entry() -> None:
    text = "".join(f"[[task]]\nid = {i}\ncommand = ['x', '{i % 2}']\n" for i in range(6))
    request = parse_job_file(text, submit_dir="/home/u")
    assert len(request.submit_desc["requests"]) == 1
    assert {task["resources"] for task in request.submit_desc["tasks"]} == {0}
    full = check_task(request.submit_desc["tasks"][0], 0, {0: ["table"]}, "/home/u")
    assert full["resources"] == ["table"]
    with pytest.raises(HqError, match=r"tasks\[0\]\.resources: no such index"):
        check_task(request.submit_desc["tasks"][0], 0, {}, "/home/u")


def test_zero_amounts_are_accepted() -> None:
    request = parse('[[task]]\ncommand = ["x"]\n[[task.request]]\nresources = { "gpus" = 0 }\n')
    wire = request.submit_desc["tasks"][0]["resources"]
    assert ResourceRequest.from_wire(wire).display_lines() == ["gpus: 0 compact"]


def test_empty_request_asks_for_nothing() -> None:
    request = parse('[[task]]\ncommand = ["x"]\n[[task.request]]\nresources = {}\n')
    assert ResourceRequest.from_wire(request.submit_desc["tasks"][0]["resources"]).entries == ()


def test_array_with_ids_and_entries() -> None:
    request = parse('[array]\nids = "2,10-12"\nentries = ["a", "bb", "ccc", "x"]\ncommand = ["x"]')
    assert request.op == "submit"
    tasks = request.submit_desc["tasks"]
    assert [tasks["entries"][i] for i in (2, 10, 11, 12)] == ["a", "bb", "ccc", "x"]
    only_ids = parse('[array]\nids = "2, 10-14, 120"\ncommand = ["x"]')
    assert only_ids.task_count == 7
    only_entries = parse('[array]\nentries = ["a", "b", "c"]\ncommand = ["x"]')
    assert only_entries.submit_desc["tasks"]["ids"] == [[0, 0, 1], [1, 1, 1], [2, 2, 1]]


# ---------------------------------------------------------------------------------------
# errors, stage by stage


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = ", "Deserialization error: "),  # TOML syntax, with line and column
        ("foo = 1\n[[task]]\ncommand = ['x']", "unknown field `foo`"),
        ("[[task]]\nid = 1\n", "missing field `command`"),
        ("[[task]]\ncommand = 'x'", "invalid type"),
        ("[[task]]\ncommand = ['x']\nbar = 2", "unknown field `bar`"),
        ("[[task]]\ncommand = ['x']\nid = -1", "invalid value"),
        (
            "[[task]]\ncommand = ['x']\ncrash_limit = 0",
            "Crash limit cannot be 0. Use `never-restart` or `unlimited` instead.",
        ),
        ("[[task]]\ncommand = ['x']\ncrash_limit = 'often'", "Invalid crash limit: often"),
        (
            "[[task]]\ncommand = ['x']\n[[task.request]]\nweight = 0",
            "Resource weight has to be positive number",
        ),
        (
            "[[task]]\ncommand = ['x']\n[[task.request]]\nweight = -1.5",
            "Resource weight has to be positive number",
        ),
        ("[[task]]\ncommand = ['x']\ntime_limit = '01:00:00'", "invalid duration"),
        ("[[task]]\ncommand = ['x']\nstdout = { path = 'a' }", "missing field `on_close`"),
        ("[[task]]\ncommand = ['x']\npin = 'numa'", "unknown variant `numa`"),
        ("name = 'x'", "Deserialization error: No tasks defined"),
        (
            "[array]\nids = '1'\ncommand = ['x']\n[[task]]\ncommand = ['x']",
            "Deserialization error: Definition of array job and individual task cannot be mixed",
        ),
        (
            "[array]\ncommand = ['x']",
            "Deserialization error: One of attributes of array must be defined: 'ids', 'entries'",
        ),
        (
            "[array]\nids = '1-3'\nentries = ['a']\ncommand = ['x']",
            "Deserialization error: Items 'ids' and 'entries' does not match",
        ),
        (
            "[[task]]\nid = 1\ncommand = ['x']\n[[task]]\nid = 1\ncommand = ['x']",
            "Task 1 is defined multiple times",
        ),
        (
            "[[task]]\nid = 1\ndeps = [1]\ncommand = ['x']",
            "Task 1 is part of dependency cycle or has an invalid dependencies",
        ),
        ("[[task]]\nid = 1\ndeps = [7]\ncommand = ['x']", "Task 1 is part of dependency cycle"),
    ],
)
def test_errors(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_toml_syntax_error_has_line_and_column() -> None:
    message = error_of("[[task]]\ncommand = \n")
    assert message.startswith("Deserialization error: ") and "line" in message


def test_structure_errors_come_in_order() -> None:
    # Mixing is reported before the array's own problems (types come first: stage A).
    assert "cannot be mixed" in error_of("[array]\ncommand=['y']\n[[task]]\ncommand=['x']")
    assert "missing field `command`" in error_of("[array]\n[[task]]\ncommand=['x']")


def test_long_cycle_and_stage_c_without_prefix() -> None:
    n = 500
    tasks = [(i, [(i + 1) % n], {}) for i in range(n)]
    with pytest.raises(HqError) as caught:
        build_graph(tasks)
    assert caught.value.message.endswith(
        "is part of dependency cycle or has an invalid dependencies"
    )
    assert not caught.value.message.startswith("Deserialization")
    # Breaking the ring makes it a chain: sorted from its end.
    tasks[-1] = (n - 1, [], {})
    order = [t["id"] for t in build_graph(tasks)]
    assert order == list(range(n - 1, -1, -1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[[task]]\ncommand = ['x']\nid = true",
            "invalid type: bool `True`, expected an integer for key `id`",
        ),
        (
            "[[task]]\ncommand = ['x']\nid = 4294967296",
            "invalid value: integer `4294967296`, expected 0..4294967295 for key `id`",
        ),
        (
            "[[task]]\ncommand = ['x']\ndeps = 3",
            "invalid type: int `3`, expected a sequence of task IDs for key `deps`",
        ),
        # The first bad dependency in the list is the one reported.
        (
            "[[task]]\ncommand = ['x']\ndeps = [1, 'a', -1]",
            "invalid type: str `'a'`, expected an integer for key `deps`",
        ),
        (
            "[[task]]\ncommand = ['x']\ndeps = [1, -1, 'a']",
            "invalid value: integer `-1`, expected 0..4294967295 for key `deps`",
        ),
        (
            "[[task]]\nbad = 1\ncommand = ['x']\nworse = 2",
            "unknown field `bad`, expected one of `command`, `env`, `cwd`, `stdout`, `stderr`, "
            "`stdin`, `pin`, `task_dir`, `time_limit`, `priority`, `crash_limit`, `request`, "
            "`id`, `deps`",
        ),
        # Tasks equal but for a 1 and a true (== in Python) are checked one by one.
        (
            "[[task]]\nid = 1\ncommand = ['x']\npriority = 1\n"
            "[[task]]\nid = 2\ncommand = ['x']\npriority = true",
            "invalid type: bool `True`, expected an integer for key `priority`",
        ),
        ("task = [1]", "invalid type: int `1`, expected a table for key `task`"),
    ],
)
def test_exact_task_errors(text: str, expected: str) -> None:
    assert error_of(text) == f"Deserialization error: {expected}"


def test_fast_toml_path_and_tomllib_build_the_same_request() -> None:
    tasks = "".join(
        f"[[task]]\nid = {i}\ndeps = [{', '.join(str(d) for d in range(max(0, i - 3), i))}]\n"
        f"command = ['run', '{i % 3}']\nstdout = 'none'\n"
        + ("[[task.request]]\nresources = { cpus = 2 }\n" if i % 4 == 0 else "")
        + ("[task.env]\nA = 'b'\n" if i % 5 == 0 else "")
        for i in range(200)
    )
    # A multi-line array is outside the fast path: tomllib reads the second text.
    other = tasks.replace("command = ['run', '0']", "command = [\n'run',\n'0']")
    assert jobtoml.fast_loads(tasks) is not None and jobtoml.fast_loads(other) is None
    fast = parse_job_file(tasks, submit_dir="/home/u")
    slow = parse_job_file(other, submit_dir="/home/u")
    assert (fast.op, fast.job_desc, fast.task_count) == (slow.op, slow.job_desc, slow.task_count)
    assert fast.submit_desc == slow.submit_desc


def test_integer_too_long_for_python_is_a_deserialization_error() -> None:
    text = "[[task]]\nid = " + "9" * 5000 + "\ncommand = ['true']\n"
    with pytest.raises(HqError, match=r"^Deserialization error: .*4300"):
        parse_job_file(text, submit_dir="/tmp")

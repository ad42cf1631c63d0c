"""`hq submit` on the client: options → job_desc/submit_desc, errors, warnings, directives.

Everything here runs without a server: the builder is pure apart from reading the
files the options name, and `submit()` is tested against a fake session.
"""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from hyperq.cli.args import parse
from hyperq.cli.directives import INVALID_DIRECTIVE
from hyperq.cli.submit import COMMANDS, SUBMIT_USAGE, submit
from hyperq.cli.submitdesc import (
    DEFAULT_STDERR,
    DEFAULT_STDOUT,
    STDIN_PROMPT,
    STREAM_PIPE,
    BuiltSubmit,
    build_submit,
    default_job_name,
    parse_output_spec,
    request_from_args,
)
from hyperq.common.context import Context
from hyperq.common.errors import HqError, UsageError
from hyperq.common.resources import AMOUNT_SCALE

SUBMIT_DIR = "/submit/dir"


def args_of(argv: list[str], path: tuple[str, ...] = ("submit",)) -> dict[str, Any]:
    return parse(SUBMIT_USAGE, list(path), argv, options_first=True)


def build(argv: list[str], stdin: bytes | None = None) -> BuiltSubmit:
    return build_submit(request_from_args(args_of(argv)), submit_dir=SUBMIT_DIR, stdin=stdin)


def desc(argv: list[str], stdin: bytes | None = None) -> dict[str, Any]:
    return build(argv, stdin).submit_desc


def warnings_of(argv: list[str]) -> list[str]:
    return build(argv).warnings


# ---------------------------------------------------------------------------------------
# Defaults and the command


def test_defaults() -> None:
    built = build(["--", "bash", "-c", "echo 'hello'"])
    assert built.job_desc == {"name": "bash", "max_fails": None}
    assert built.warnings == []
    assert built.task_count == 1
    assert built.submit_desc == {
        "submit_dir": SUBMIT_DIR,
        "stream_path": None,
        "tasks": {"ids": None, "entries": None, "entry_offset": 0},
        "program": {
            "args": ["bash", "-c", "echo 'hello'"],
            "env": {},
            "cwd": "%{SUBMIT_DIR}",
            "stdout": {"path": "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout", "rm_if_finished": False},
            "stderr": {"path": "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr", "rm_if_finished": False},
        },
        "resources": [[["cpus", AMOUNT_SCALE, "compact"]], 0, 0.0, AMOUNT_SCALE],
        "pin": None,
        "priority": 0,
        "time_limit": None,
        "crash_limit": 5,
        "task_dir": False,
        "stdin": None,
    }


def test_job_submit_path_parses_the_same() -> None:
    argv = ["--name=x", "--array=1-3", "sleep", "1"]
    a = build_submit(request_from_args(args_of(argv, ("job", "submit"))), submit_dir="/d")
    b = build_submit(request_from_args(args_of(argv)), submit_dir="/d")
    assert a == b


def test_everything_after_the_command_belongs_to_it() -> None:
    built = build(["sleep", "1", "--name=sleep_prog"])
    assert built.submit_desc["program"]["args"] == ["sleep", "1", "--name=sleep_prog"]
    assert built.job_desc["name"] == "sleep"


def test_double_dash_starts_the_command() -> None:
    assert desc(["--", "--name", "x"])["program"]["args"] == ["--name", "x"]


def test_missing_command_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="required arguments were not provided"):
        request_from_args(args_of([]))


@pytest.mark.parametrize(
    ("word", "name"),
    [
        ("bash", "bash"),
        ("/bin/hostname", "hostname"),
        ("./test.sh", "test.sh"),
        ("dir/", "dir"),
        ("/", "job"),
        ("..", "job"),
        ("", "job"),
    ],
)
def test_default_job_name(word: str, name: str) -> None:
    assert default_job_name([word]) == name


# ---------------------------------------------------------------------------------------
# Job options


def test_custom_name() -> None:
    assert build(["--name=sleep_prog", "sleep", "1"]).job_desc["name"] == "sleep_prog"


@pytest.mark.parametrize("bad", ["second_sleep \n", "second_sleep \t"])
def test_name_with_newline_or_tab(bad: str) -> None:
    with pytest.raises(HqError, match=r"^name cannot have a newline or a tab$"):
        build([f"--name={bad}", "sleep", "1"])


def test_max_fails() -> None:
    assert build(["--max-fails", "0", "ls"]).job_desc["max_fails"] == 0
    assert build(["--max-fails=12", "ls"]).job_desc["max_fails"] == 12
    for bad in ("-1", "x"):
        with pytest.raises(UsageError, match=r"invalid value .* for '--max-fails"):
            build(["--max-fails", bad, "ls"])


def test_open_job_rejects_job_options() -> None:
    with pytest.raises(HqError) as info:
        build(["--job=1", "--name=Abc", "--", "hostname"])
    assert info.value.message == "Parameter --name is not allowed when submitting to an open job."
    with pytest.raises(HqError) as info:
        build(["--job=1", "--max-fails=12", "--", "hostname"])
    assert (
        info.value.message == "Parameter --max-fails is not allowed when submitting to an open job."
    )


def test_open_job_id() -> None:
    request = request_from_args(args_of(["--job=3", "hostname"]))
    assert request.job == 3
    assert request_from_args(args_of(["hostname"])).job is None
    with pytest.raises(UsageError):
        request_from_args(args_of(["--job=x", "hostname"]))


def test_wait_and_progress_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="'--wait' cannot be used with '--progress'"):
        request_from_args(args_of(["--wait", "--progress", "ls"]))
    assert request_from_args(args_of(["--wait", "ls"])).wait
    assert request_from_args(args_of(["--progress", "ls"])).progress


# ---------------------------------------------------------------------------------------
# Task options


def test_env() -> None:
    program = desc(["--env", "FOO=BAR", "--env", "FOO2=BAR2", "--env=X", "--env=Y=a=b", "ls"])[
        "program"
    ]
    assert program["env"] == {"FOO": "BAR", "FOO2": "BAR2", "X": "", "Y": "a=b"}


def test_env_duplicates_warn_and_last_wins() -> None:
    built = build(["--env", "A=1", "--env", "A=2", "ls"])
    assert built.submit_desc["program"]["env"] == {"A": "2"}
    assert built.warnings == [
        "Some environment variables were ignored. Check if you haven't used duplicate keys."
    ]


def test_env_empty_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="Environment variable cannot be empty"):
        build(["--env=", "ls"])


def test_crash_limit() -> None:
    assert desc(["--crash-limit=7", "ls"])["crash_limit"] == 7
    assert desc(["--crash-limit", "never-restart", "ls"])["crash_limit"] == "never-restart"
    assert desc(["--crash-limit", "unlimited", "ls"])["crash_limit"] == "unlimited"
    with pytest.raises(UsageError) as info:
        build(["--crash-limit", "0", "ls"])
    assert "Crash limit cannot be 0. Use `never-restart` or `unlimited` instead." in str(info.value)
    with pytest.raises(UsageError):
        build(["--crash-limit", "sometimes", "ls"])


def test_priority() -> None:
    assert desc(["--priority", "3", "ls"])["priority"] == 3
    assert desc(["--priority", "-5", "ls"])["priority"] == -5
    assert desc(["--priority=2147483647", "ls"])["priority"] == 2**31 - 1
    for bad in ("2147483648", "high"):
        with pytest.raises(UsageError, match="'--priority <PRIORITY>'"):
            build(["--priority", bad, "ls"])


def test_time_limit_and_request() -> None:
    d = desc(["--time-limit=500ms", "--time-request", "1h 30m", "ls"])
    assert d["time_limit"] == 0.5
    assert d["resources"][2] == 5400.0
    assert desc(["--time-limit", "01:00:00", "ls"])["time_limit"] == 3600.0
    with pytest.raises(UsageError, match="'--time-limit <DURATION>'"):
        build(["--time-limit", "soon", "ls"])


def test_pin() -> None:
    assert desc(["--pin", "taskset", "ls"])["pin"] == "taskset"
    assert desc(["--pin=omp", "ls"])["pin"] == "omp"
    with pytest.raises(UsageError, match="possible values: taskset, omp"):
        build(["--pin", "numa", "ls"])


def test_task_dir() -> None:
    assert desc(["--task-dir", "ls"])["task_dir"] is True


def test_cwd_template_is_sent_raw() -> None:
    assert desc(["--cwd", "/tmp/%{TASK_ID}", "ls"])["program"]["cwd"] == "/tmp/%{TASK_ID}"
    assert desc(["--cwd=rel", "ls"])["program"]["cwd"] == "rel"


def test_cwd_may_not_contain_cwd_placeholder() -> None:
    with pytest.raises(HqError) as info:
        build(["--cwd", "%{CWD}/foo", "--", "bash", "-c", "echo 'hello'"])
    assert info.value.message == (
        "Working directory path cannot contain the working directory placeholder `%{CWD}`."
    )


def test_resources() -> None:
    d = desc(["--cpus=2 compact", "--resource", "gpus=1", "--resource", "mem=100", "ls"])
    assert d["resources"][0] == [
        ["cpus", 2 * AMOUNT_SCALE, "compact"],
        ["gpus", AMOUNT_SCALE, "compact"],
        ["mem", 100 * AMOUNT_SCALE, "compact"],
    ]
    assert desc(["--cpus", "all", "ls"])["resources"][0] == [["cpus", 0, "all"]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cpus=2", "--resource=cpus=2"], "--cpus and --resource cpus=... cannot be combined"),
        (["--resource=gpus=1", "--resource=gpus=2"], "Resource 'gpus' defined more than once"),
        (["--cpus=0"], "Zero resources cannot be requested"),
    ],
)
def test_resource_errors(argv: list[str], message: str) -> None:
    with pytest.raises(HqError) as info:
        build([*argv, "ls"])
    assert message in info.value.message


def test_weight() -> None:
    assert desc(["--weight", "0.5", "ls"])["resources"][3] == AMOUNT_SCALE // 2
    with pytest.raises(UsageError, match="greater than 0"):
        build(["--weight", "0", "ls"])


def test_nodes_are_stored() -> None:
    d = desc(["--nodes", "2", "ls"])
    assert d["resources"][1] == 2
    assert d["task_dir"] is True
    for other in (["--cpus", "2"], ["--pin", "omp"]):
        with pytest.raises(UsageError, match="'--nodes <NODES>' cannot be used with"):
            build(["--nodes", "2", *other, "ls"])


def test_stream_is_stored_raw() -> None:
    assert desc(["--stream", "log-%{JOB_ID}", "ls"])["stream_path"] == "log-%{JOB_ID}"


def test_on_notify_is_accepted() -> None:
    assert desc(["--on-notify", "echo", "ls"])["on_notify"] == "echo"


# ---------------------------------------------------------------------------------------
# stdout / stderr


def test_output_specs() -> None:
    d = desc(["--stdout=abc", "--stderr=xyz", "ls"])["program"]
    assert d["stdout"] == {"path": "abc", "rm_if_finished": False}
    assert d["stderr"] == {"path": "xyz", "rm_if_finished": False}
    d = desc(["--stdout=none", "--stderr=none", "ls"])["program"]
    assert d["stdout"] is None and d["stderr"] is None
    d = desc(["--stdout=out.txt:rm-if-finished", "--stderr=:rm-if-finished", "ls"])["program"]
    assert d["stdout"] == {"path": "out.txt", "rm_if_finished": True}
    assert d["stderr"] == {"path": DEFAULT_STDERR, "rm_if_finished": True}
    assert desc(["--stdout", "/abs/%{TASK_ID}.out", "ls"])["program"]["stdout"]["path"] == (
        "/abs/%{TASK_ID}.out"
    )
    assert DEFAULT_STDOUT.endswith("%{TASK_ID}.stdout")


@pytest.mark.parametrize("bad", ["", ":", "foo:", "foo:bar", "a:b:rm-if-finished"])
def test_bad_output_specs(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_output_spec(bad)
    with pytest.raises(UsageError, match="'--stdout <STDOUT>'"):
        build([f"--stdout={bad}", "ls"])


# ---------------------------------------------------------------------------------------
# Warnings


@pytest.mark.parametrize("channel", ["stdout", "stderr"])
def test_warning_missing_task_id_in_array_output(channel: str) -> None:
    warnings = warnings_of(["--array=1-4", f"--{channel}=foo", "/bin/hostname"])
    assert warnings == [
        f"You have submitted an array job, but the `{channel}` path does not contain the task "
        "ID placeholder.\nIndividual tasks might thus overwrite the file. Consider adding "
        f"`%{{TASK_ID}}` to the `--{channel}` value."
    ]


@pytest.mark.parametrize("channel", ["stdout", "stderr"])
def test_no_warning_when_cwd_has_task_id(channel: str) -> None:
    argv = ["--array=1-4", "--cwd", "task-%{TASK_ID}", f"--{channel}", "%{CWD}/foo", "hostname"]
    assert warnings_of(argv) == []


def test_missing_task_id_warning_cases() -> None:
    assert warnings_of(["--stdout=foo", "ls"]) == []  # one task
    assert warnings_of(["--array=1-4", "--stdout=none", "ls"]) == []
    assert warnings_of(["--array=1-4", "--stdout=:rm-if-finished", "ls"]) == []
    assert warnings_of(["--array=1-4", "--stdout=%{TASK_ID}.out", "ls"]) == []
    # An absolute path ignores --cwd, as the path join does.
    assert len(warnings_of(["--array=1-4", "--cwd=%{TASK_ID}", "--stdout=/x/out", "ls"])) == 1


def test_unknown_placeholders() -> None:
    warnings = warnings_of(
        [
            "--stream",
            "log-%{FOO}",
            "--stdout",
            "dir/%{BAR}/%{BAZ}",
            "--stderr",
            "dir/%{TAS_ID}",
            "--cwd",
            "%{BAR}",
            "--",
            "hostname",
        ]
    )
    assert "Found unknown placeholder `FOO` in log path" in warnings
    assert "Found unknown placeholders `BAR, BAZ` in stdout path" in warnings
    assert "Found unknown placeholder `TAS_ID` in stderr path" in warnings
    assert "Found unknown placeholder `BAR` in working directory path" in warnings
    assert len(warnings) == 4


def test_many_output_files() -> None:
    assert warnings_of(["--array=1-1000", "ls"]) == [
        "The job will create 2000 files for stdout and stderr. Consider using the `--stream` "
        "option to stream all outputs into a single file"
    ]
    assert warnings_of(["--array=1-1000", "--stdout=none", "ls"]) == [
        "The job will create 1000 files for stderr. Consider using the `--stream` "
        "option to stream all outputs into a single file"
    ]
    assert warnings_of(["--array=1-499", "ls"]) == []
    assert warnings_of(["--array=1-1000", "--stream=logs", "ls"]) == []


def test_stream_pipes_channels_not_given() -> None:
    built = build(["--stream=logs", "ls"])
    assert built.warnings == []
    assert built.submit_desc["stream_path"] == "logs"
    assert built.submit_desc["program"]["stdout"] == {"path": STREAM_PIPE, "rm_if_finished": False}
    assert built.submit_desc["program"]["stderr"] == {"path": STREAM_PIPE, "rm_if_finished": False}
    assert build(["ls"]).submit_desc["program"]["stdout"]["path"] == DEFAULT_STDOUT


def test_stream_keeps_explicit_channels() -> None:
    program = build(["--stream=logs", "--stderr=none", "ls"]).submit_desc["program"]
    assert program["stdout"]["path"] == STREAM_PIPE
    assert program["stderr"] is None
    program = build(["--stream=logs", "--stdout=out-%{TASK_ID}:rm-if-finished", "ls"]).submit_desc[
        "program"
    ]
    assert program["stdout"] == {"path": "out-%{TASK_ID}", "rm_if_finished": True}
    assert program["stderr"]["path"] == STREAM_PIPE


# ---------------------------------------------------------------------------------------
# Arrays and entries


def test_array_ids_are_sent_compact() -> None:
    built = build(["--array=30-36", "--", "bash", "-c", "echo"])
    assert built.submit_desc["tasks"] == {"ids": [[30, 36, 1]], "entries": None, "entry_offset": 0}
    assert built.task_count == 7
    big = build(["--array=0-3999999999:2", "--stdout=none", "--stderr=none", "ls"])
    assert big.submit_desc["tasks"]["ids"] == [[0, 3999999998, 2]]
    assert big.task_count == 2_000_000_000


def test_bad_array_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'--array <ARRAY>'"):
        build(["--array=5-1", "ls"])


@pytest.mark.parametrize("content", ["One\nTwo\nThree\nFour", "One\nTwo\nThree\nFour\n"])
def test_each_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input").write_text(content)
    built = build(["--each-line=input", "--", "bash", "-c", "echo $HQ_ENTRY"])
    assert built.submit_desc["tasks"] == {
        "ids": None,
        "entries": ["One", "Two", "Three", "Four"],
        "entry_offset": 0,
    }
    assert built.task_count == 4


def test_each_line_keeps_empty_lines_and_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input").write_bytes(b"a\n\nb\r\n\xff\n")
    assert desc(["--each-line", "input", "ls"])["tasks"]["entries"] == ["a", "", "b\r", "\ufffd"]


def test_from_json_compact_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input").write_text('[123, {"x":\n[1,2,3]}, 2.5, "s", null, "ž"]')
    entries = desc(["--from-json=input", "--", "bash", "-c", "echo $HQ_ENTRY"])["tasks"]["entries"]
    assert entries == ["123", '{"x":[1,2,3]}', "2.5", '"s"', "null", '"ž"']


def test_from_json_top_must_be_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input").write_text('{"x":\n[1,2,3]}')
    with pytest.raises(HqError) as info:
        build(["--from-json=input", "--", "bash", "-c", "echo $HQ_ENTRY"])
    assert info.value.message == (
        "input: The top element of the provided JSON file has to be an array"
    )


def test_from_json_invalid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input").write_text("[1, NaN]")
    with pytest.raises(HqError, match="input: Invalid JSON"):
        build(["--from-json=input", "ls"])


def test_entries_file_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HqError, match="Cannot read file `nope`"):
        build(["--each-line=nope", "ls"])


def test_each_line_and_from_json_conflict() -> None:
    with pytest.raises(UsageError, match="cannot be used with"):
        build(["--each-line=a", "--from-json=b", "ls"])


def test_each_line_with_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input").write_text("One\nTwo\nThree\nFour\nFive\nSix\nSeven")
    built = build(["--each-line=input", "--array", "2-4, 6", "--", "bash", "-c", "echo"])
    tasks = built.submit_desc["tasks"]
    assert tasks["ids"] == [[2, 4, 1], [6, 6, 1]]
    # The server reads task T's entry at entries[T] when IDs are given.
    assert [tasks["entries"][t] for t in (2, 3, 4, 6)] == ["Three", "Four", "Five", "Seven"]
    assert built.task_count == 4


def test_json_with_array_drops_missing_indices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input").write_text('["One", "Two", "Three", "Four", "Five", "Six", "Seven"]')
    built = build(["--from-json=input", "--array", "2-3, 5, 6, 7, 1000", "--", "echo"])
    tasks = built.submit_desc["tasks"]
    assert tasks["ids"] == [[2, 3, 1], [5, 6, 1]]
    assert [tasks["entries"][t] for t in (2, 3, 5, 6)] == ['"Three"', '"Four"', '"Six"', '"Seven"']
    assert len(tasks["entries"]) == 7
    assert built.task_count == 4


def test_array_beyond_entries_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input").write_text("a\nb\n")
    built = build(["--each-line=input", "--array=10-20", "ls"])
    assert built.submit_desc["tasks"]["ids"] == []
    assert built.submit_desc["tasks"]["entries"] == []
    assert built.task_count == 0


# ---------------------------------------------------------------------------------------
# stdin


def test_stdin_data_is_sent() -> None:
    assert desc(["--stdin", "bash"], stdin=b"echo Hello")["stdin"] == b"echo Hello"
    assert desc(["--stdin", "bash"], stdin=b"")["stdin"] == b""


def test_directives_stdin_needs_stdin() -> None:
    with pytest.raises(HqError) as info:
        build(["--directives=stdin", "bash"])
    assert info.value.message == "You have to use `--stdin` when you specify `--directives=stdin`."


def test_bad_directives_mode() -> None:
    with pytest.raises(UsageError, match="possible values: auto, file, stdin, off"):
        request_from_args(args_of(["--directives=always", "ls"]))


# ---------------------------------------------------------------------------------------
# Directives


REFERENCE_SCRIPT = """#! /bin/bash
# Hello!
#HQ --name abc --array=1-10
#HQ --cpus="2 compact"

./do-something

#HQ --this-should-be-ignored
"""


@pytest.fixture
def scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Path("test.sh").write_text(REFERENCE_SCRIPT)
    Path("test").write_text(REFERENCE_SCRIPT)
    Path("input").write_text("line\n" * 5)
    return tmp_path


def test_directives_from_sh_file(scripts: Path) -> None:
    built = build(["test.sh"])
    assert built.job_desc["name"] == "abc"
    assert built.submit_desc["resources"][0] == [["cpus", 2 * AMOUNT_SCALE, "compact"]]
    assert built.submit_desc["tasks"]["ids"] == [[1, 10, 1]]
    assert built.submit_desc["program"]["args"] == ["/bin/bash", "test.sh"]


def test_cli_overrides_directives(scripts: Path) -> None:
    built = build(["--name=xyz", "test.sh"])
    assert built.job_desc["name"] == "xyz"
    assert built.submit_desc["tasks"]["ids"] == [[1, 10, 1]]


def test_cli_task_group_replaces_directive_group(scripts: Path) -> None:
    built = build(["--name=xyz", "--each-line", "input", "test.sh"])
    assert built.job_desc["name"] == "xyz"
    assert built.submit_desc["resources"][0] == [["cpus", 2 * AMOUNT_SCALE, "compact"]]
    assert built.submit_desc["tasks"]["ids"] is None
    assert built.submit_desc["tasks"]["entries"] == ["line"] * 5


def test_auto_mode_only_reads_sh_files(scripts: Path) -> None:
    built = build(["test"])
    assert built.job_desc["name"] == "test"
    assert built.submit_desc["program"]["args"] == ["test"]
    built = build(["--directives", "file", "test"])
    assert built.job_desc["name"] == "abc"
    assert built.submit_desc["program"]["args"] == ["/bin/bash", "test"]


@pytest.mark.parametrize("mode", ["auto", "file"])
def test_invalid_directive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("test.sh").write_text("#! /bin/bash\n#HQ --foo=bar\n./do-something\n")
    with pytest.raises(HqError) as info:
        build(["--directives", mode, "test.sh"])
    assert not isinstance(info.value, UsageError)
    assert info.value.message.startswith(INVALID_DIRECTIVE + "\n")
    assert "unexpected argument '--foo' found" in info.value.message


def test_directives_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("test.sh").write_text("#! /bin/bash\n#HQ --foo=bar\n./do-something\n")
    assert build(["--directives", "off", "test.sh"]).submit_desc["program"]["args"] == ["test.sh"]


def test_directive_value_errors_are_directive_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("test.sh").write_text("#HQ --crash-limit 0\n")
    with pytest.raises(HqError) as info:
        build(["test.sh"])
    assert not isinstance(info.value, UsageError)
    assert info.value.message.startswith(INVALID_DIRECTIVE + "\n")
    assert "Crash limit cannot be 0" in info.value.message


def test_directive_priority_and_cli_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("test.sh").write_text("#! /bin/bash\n#HQ --priority 100\n\n./do-something\n")
    assert desc(["--directives", "file", "test.sh"])["priority"] == 100
    assert desc(["--priority", "8", "--directives", "file", "test.sh"])["priority"] == 8
    assert desc(["--priority", "0", "test.sh"])["priority"] == 0


def test_shebang_with_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("test.sh").write_text('#!/bin/bash -l\necho "hello"\n')
    built = build(["--directives", "file", "test.sh", "arg"])
    assert built.submit_desc["program"]["args"] == ["/bin/bash", "-l", "test.sh", "arg"]
    assert built.job_desc["name"] == "bash"


def test_no_shebang_keeps_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("test.sh").write_text("#HQ --name=n\necho hi\n")
    built = build(["./test.sh"])
    assert built.submit_desc["program"]["args"] == ["./test.sh"]
    assert built.job_desc["name"] == "n"


def test_stdin_does_not_prepend_file_shebang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("test.sh").write_text("#!/bin/bash\n#HQ --name=n\n")
    built = build(["--stdin", "test.sh"], stdin=b"data")
    assert built.submit_desc["program"]["args"] == ["test.sh"]
    assert built.job_desc["name"] == "n"


def test_directives_from_stdin() -> None:
    data = b"#!/bin/bash\n#HQ --name=abc\necho Hello\n"
    built = build(["--stdin", "--directives=stdin", "bash"], stdin=data)
    assert built.job_desc["name"] == "abc"
    assert built.submit_desc["program"]["args"] == ["bash"]
    assert built.submit_desc["stdin"] == data
    built = build(["--name", "xyz", "--stdin", "--directives=stdin", "bash"], stdin=data)
    assert built.job_desc["name"] == "xyz"


def test_stdin_shebang_is_ignored() -> None:
    built = build(["--stdin", "--directives=stdin", "bash"], stdin=b"#!/foo/bar\necho 'Hello'")
    assert built.submit_desc["program"]["args"] == ["bash"]


def test_directive_lists_are_concatenated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("job.sh").write_text(
        "#HQ --env A=from-script --env B=1 --resource gpus=1 --task-dir\n"
        "#HQ --time-limit 10s --stdout=%{TASK_ID}.out --pin omp\n"
    )
    built = build(["--env", "A=from-cli", "--cpus", "2", "job.sh"])
    d = built.submit_desc
    assert d["program"]["env"] == {"A": "from-cli", "B": "1"}
    assert d["resources"][0] == [
        ["cpus", 2 * AMOUNT_SCALE, "compact"],
        ["gpus", AMOUNT_SCALE, "compact"],
    ]
    assert d["task_dir"] is True
    assert d["time_limit"] == 10.0
    assert d["pin"] == "omp"
    assert d["program"]["stdout"] == {"path": "%{TASK_ID}.out", "rm_if_finished": False}
    assert "Some environment variables were ignored" in built.warnings[0]


def test_directive_option_spanning_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("job.sh").write_text("#HQ --name\n#HQ split\n")
    assert build(["job.sh"]).job_desc["name"] == "split"


def test_directive_name_blocks_open_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("job.sh").write_text("#HQ --name n\n")
    with pytest.raises(HqError, match="Parameter --name is not allowed"):
        build(["--job=1", "job.sh"])


def test_missing_script_in_auto_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HqError, match=r"^Could not parse directives from missing\.sh: "):
        build(["missing.sh"])


def test_reader_is_replaceable() -> None:
    seen: list[tuple[str, int | None]] = []

    def reader(path: str, limit: int | None) -> bytes:
        seen.append((path, limit))
        return b"#HQ --name=from-reader --each-line=list\n" if path == "x.sh" else b"a\nb\n"

    request = request_from_args(args_of(["x.sh"]))
    built = build_submit(request, submit_dir="/d", reader=reader)
    assert built.job_desc["name"] == "from-reader"
    assert built.submit_desc["tasks"]["entries"] == ["a", "b"]
    assert seen == [("x.sh", 32 * 1024), ("list", None)]


# ---------------------------------------------------------------------------------------
# submit(): the I/O around the builder, with a fake server session


class FakeSession:
    def __init__(self, job_id: int = 7) -> None:
        self.job_id = job_id
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def request(self, op: str, **fields: Any) -> Any:
        self.requests.append((op, fields))
        return {"job": self.job_id}

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> FakeSession:
    import hyperq.client.session

    fake = FakeSession()
    monkeypatch.setattr(hyperq.client.session, "connect_to_server", lambda ctx: fake)
    return fake


def make_ctx(tmp_path: Path, mode: str = "cli") -> Context:
    return Context(tmp_path / "server", True, mode, False, False)


def test_submit_sends_one_request_and_prints_one_line(
    session: FakeSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = submit(make_ctx(tmp_path), args_of(["--array=1-3", "--", "bash", "-c", "echo"]))
    assert code == 0
    out, err = capsys.readouterr()
    assert out == "Job submitted successfully, job ID: 7\n"
    assert err == ""
    [(op, fields)] = session.requests
    assert op == "submit"
    assert fields["job"] is None
    assert fields["job_desc"] == {"name": "bash", "max_fails": None}
    assert fields["submit_desc"]["tasks"]["ids"] == [[1, 3, 1]]
    assert Path(fields["submit_desc"]["submit_dir"]).is_absolute()
    assert session.closed


@pytest.mark.parametrize(("mode", "expected"), [("json", {"id": 7}), ("quiet", 7)])
def test_submit_output_modes(
    session: FakeSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    expected: Any,
) -> None:
    submit(make_ctx(tmp_path, mode), args_of(["ls"]))
    assert json.loads(capsys.readouterr().out) == expected


def test_submit_to_open_job(session: FakeSession, tmp_path: Path) -> None:
    submit(make_ctx(tmp_path), args_of(["--job=4", "ls"]))
    assert session.requests[0][1]["job"] == 4


def test_submit_logs_warnings_on_stderr(
    session: FakeSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(make_ctx(tmp_path), args_of(["--array=1-4", "--stdout=foo", "ls"]))
    out, err = capsys.readouterr()
    assert out == "Job submitted successfully, job ID: 7\n"
    assert " WARN You have submitted an array job, but the `stdout` path" in err


def test_submit_reads_stdin_after_prompt(
    session: FakeSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"echo Hello")))
    submit(make_ctx(tmp_path), args_of(["--stdin", "bash"]))
    assert capsys.readouterr().out == f"{STDIN_PROMPT}\nJob submitted successfully, job ID: 7\n"
    assert session.requests[0][1]["submit_desc"]["stdin"] == b"echo Hello"


def test_submit_errors_before_connecting(
    session: FakeSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(HqError):
        submit(make_ctx(tmp_path), args_of(["--cwd=%{CWD}", "ls"]))
    assert session.requests == []
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("flag", "function"), [("--wait", "wait_for_jobs"), ("--progress", "progress_of_jobs")]
)
def test_submit_wait_and_progress(
    session: FakeSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    function: str,
) -> None:
    calls: list[tuple[str, Any, list[int]]] = []

    def follow(name: str) -> Any:
        def run(ctx: Context, used: Any, ids: list[int]) -> list[dict[str, Any]]:
            calls.append((name, used, ids))
            return [{"id": 7, "state": "failed"}]

        return run

    module = types.ModuleType("hyperq.cli.jobwait")
    module.wait_for_jobs = follow("wait_for_jobs")  # type: ignore[attr-defined]
    module.progress_of_jobs = follow("progress_of_jobs")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hyperq.cli.jobwait", module)
    code = submit(make_ctx(tmp_path), args_of([flag, "ls"]))
    assert code == 0
    assert calls == [(function, session, [7])]
    assert len(session.requests) == 1


def test_directive_options_are_submit_options() -> None:
    from hyperq.cli.args import known_options, value_options
    from hyperq.cli.directives import DIRECTIVE_OPTIONS

    assert set(DIRECTIVE_OPTIONS) <= known_options(SUBMIT_USAGE)
    takes_value = value_options(SUBMIT_USAGE)
    for name, metavar in DIRECTIVE_OPTIONS.items():
        assert (name in takes_value) == (metavar is not None), name


def test_commands_table() -> None:
    usage, function, options_first = COMMANDS["submit"]
    assert usage is SUBMIT_USAGE and function is submit and options_first is True


# ---------------------------------------------------------------------------------------
# Through the entry point: exit codes and streams


def test_cli_exit_codes(
    session: FakeSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hyperq.cli.main import run

    monkeypatch.chdir(tmp_path)
    server = ["--server-dir", str(tmp_path / "server")]

    assert run([*server, "submit", "--crash-limit", "0", "ls"]) == 2
    assert "Crash limit cannot be 0. Use `never-restart` or `unlimited` instead." in (
        capsys.readouterr().err
    )

    assert run([*server, "submit", "--cwd", "%{CWD}/foo", "ls"]) == 1
    assert "Working directory path cannot contain" in capsys.readouterr().err

    Path("test.sh").write_text("#! /bin/bash\n#HQ --foo=bar\n./do-something\n")
    assert run([*server, "submit", "--directives", "auto", "test.sh"]) == 1
    err = capsys.readouterr().err
    assert "You have used invalid parameter(s) after a #HQ directive." in err
    assert "unexpected argument '--foo' found" in err

    assert run([*server, "submit", "--wait", "--progress", "ls"]) == 2
    capsys.readouterr()

    assert session.requests == []
    assert run(["submit", "--", "bash", "-c", "echo 'hello'", *server]) == 0
    out, _err = capsys.readouterr()
    assert out.strip() == "Job submitted successfully, job ID: 7"
    # Global options after the command's first word belong to the command.
    args = session.requests[0][1]["submit_desc"]["program"]["args"]
    assert args == ["bash", "-c", "echo 'hello'", *server]


def test_stream_directive_and_command_line_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("s.sh").write_text("#! /bin/bash\n#HQ --stream from-directive --stderr=none\necho\n")
    built = build(["s.sh"])
    assert built.submit_desc["stream_path"] == "from-directive"
    assert built.submit_desc["program"]["stdout"]["path"] == STREAM_PIPE
    assert built.submit_desc["program"]["stderr"] is None
    assert build(["--stream=cli", "s.sh"]).submit_desc["stream_path"] == "cli"

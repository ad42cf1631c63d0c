"""The original's placeholder, entry and `#HQ` directive tests, ported.

Sources: `tests/test_placeholders.py`, `tests/test_entries.py`, `tests/test_directives.py`.
The original's `task info` shows paths in one `Paths` cell; the spec gives them their own
`Workdir`/`Stdout`/`Stderr` rows, which is what is checked here.
"""

from __future__ import annotations

import pytest

from tests.compat import default_output, job_states, table, tables
from tests.harness import ClusterEnv
from tests.tableparse import Table


def paths(info: Table) -> tuple[str | None, str | None, str | None]:
    return (
        info.get_row_value("Workdir"),
        info.get_row_value("Stdout"),
        info.get_row_value("Stderr"),
    )


# --- placeholders ------------------------------------------------------------------------


def test_cwd_recursive_placeholder(cluster: ClusterEnv) -> None:
    cluster.start_server()
    out = cluster.command(
        ["submit", "--cwd", "%{CWD}/foo", "--", "bash", "-c", "echo 'hello'"], expect_fail=True
    )
    assert (
        "Working directory path cannot contain the working directory placeholder `%{CWD}`." in out
    )
    assert cluster.job_states() == {}


def test_job_paths_prefilled_placeholders(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "hostname"])
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("Stdout", str(default_output(cluster.work_dir, task_id="%{TASK_ID}")))
    info.check_row_value(
        "Stderr", str(default_output(cluster.work_dir, task_id="%{TASK_ID}", kind="stderr"))
    )
    info.check_row_value("Working directory", str(cluster.work_dir))


def test_job_paths_prefilled_placeholders_resolvable_cwd(cluster: ClusterEnv) -> None:
    cluster.start_server()
    foo = cluster.work_dir / "foo"
    cluster.command(["submit", "--cwd", str(foo), "hostname"])
    table(cluster, ["job", "info", "1"]).check_row_value(
        "Stdout", f"{foo}/job-1/%{{TASK_ID}}.stdout"
    )
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    assert paths(table(cluster, ["task", "info", "1", "0"])) == (
        str(foo),
        f"{foo}/job-1/0.stdout",
        f"{foo}/job-1/0.stderr",
    )


def test_job_paths_prefilled_placeholders_unresolvable_cwd(cluster: ClusterEnv) -> None:
    cluster.start_server()
    base = cluster.work_dir
    cluster.command(["submit", "--cwd", f"{base}/%{{TASK_ID}}", "hostname"])
    table(cluster, ["job", "info", "1"]).check_row_value(
        "Stdout", f"{base}/%{{TASK_ID}}/job-1/%{{TASK_ID}}.stdout"
    )
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    assert paths(table(cluster, ["task", "info", "1", "0"])) == (
        f"{base}/0",
        f"{base}/0/job-1/0.stdout",
        f"{base}/0/job-1/0.stderr",
    )
    assert (base / "0/job-1/0.stdout").read_text().strip() != ""


def test_task_resolve_submit_placeholders(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "echo", "test"])
    # A task that has not started has no instance yet, so no resolved paths.
    assert paths(table(cluster, ["task", "info", "1", "0"])) == ("", "", "")
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    assert paths(table(cluster, ["task", "info", "1", "0"])) == (
        str(cluster.work_dir),
        str(default_output(cluster.work_dir)),
        str(default_output(cluster.work_dir, kind="stderr")),
    )
    task = cluster.json(["task", "list", "1"])["1"][0]
    assert (task["cwd"], task["stdout"], task["stderr"]) == paths(
        table(cluster, ["task", "info", "1", "0"])
    )


def test_task_resolve_worker_placeholders(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(
        [
            "submit",
            "--stdout",
            "%{INSTANCE_ID}.out",
            "--stderr",
            "%{INSTANCE_ID}.err",
            "--cwd",
            "%{INSTANCE_ID}-dir",
            "echo",
            "test",
        ]
    )
    assert paths(table(cluster, ["task", "info", "1", "0"])) == ("", "", "")
    cluster.start_worker()
    cluster.wait_for_job_state(1, "FINISHED")
    wd = cluster.work_dir
    assert paths(table(cluster, ["task", "info", "1", "0"])) == (
        f"{wd}/0-dir",
        f"{wd}/0-dir/0.out",
        f"{wd}/0-dir/0.err",
    )
    assert (wd / "0-dir/0.out").read_text() == "test\n"


def test_server_uid_placeholder_in_stdout(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    server_uid = cluster.json(["server", "info"])["server_uid"]
    cluster.command(
        ["submit", "--stdout", "out-%{SERVER_UID}-%{JOB_ID}", "--", "bash", "-c", "echo Hello"]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    assert (cluster.work_dir / f"out-{server_uid}-1").read_text() == "Hello\n"
    table(cluster, ["job", "info", "1"]).check_row_value(
        "Stdout", f"{cluster.work_dir}/out-{server_uid}-1"
    )


@pytest.mark.parametrize("channel", ["stdout", "stderr"])
def test_warning_missing_placeholder_in_output(cluster: ClusterEnv, channel: str) -> None:
    cluster.start_server()
    out = cluster.command(["submit", "--array=1-4", f"--{channel}=foo", "/bin/hostname"])
    assert (
        f"WARN You have submitted an array job, but the `{channel}` path does not contain the "
        "task ID placeholder.\nIndividual tasks might thus overwrite the file. Consider adding "
        f"`%{{TASK_ID}}` to the `--{channel}` value." in out
    )


@pytest.mark.parametrize("channel", ["stdout", "stderr"])
def test_missing_placeholder_in_output_present_in_cwd(cluster: ClusterEnv, channel: str) -> None:
    cluster.start_server()
    out = cluster.command(
        [
            "submit",
            "--array=1-4",
            "--cwd",
            "task-%{TASK_ID}",
            f"--{channel}",
            "%{CWD}/foo",
            "/bin/hostname",
        ]
    )
    assert "path does not contain the task ID placeholder." not in out


def test_unknown_placeholder(cluster: ClusterEnv) -> None:
    cluster.start_server()
    out = cluster.command(
        [
            "submit",
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
    assert "Found unknown placeholder `FOO` in log path" in out
    assert "Found unknown placeholders `BAR, BAZ` in stdout path" in out
    assert "Found unknown placeholder `TAS_ID` in stderr path" in out
    assert "Found unknown placeholder `BAR` in working directory path" in out
    assert "--stream" not in out


def test_many_output_files_warning(cluster: ClusterEnv) -> None:
    cluster.start_server()
    out = cluster.command(["submit", "--array=1-1000", "--stderr=none", "--", "true"])
    assert (
        "The job will create 1000 files for stdout. Consider using the `--stream` option to "
        "stream all outputs into a single file" in out
    )
    out = cluster.command(["submit", "--array=1-999", "--", "true"])
    assert "files for stdout and stderr" in out
    out = cluster.command(["submit", "--array=1-999", "--stderr=none", "--", "true"])
    assert "Consider using the `--stream` option" not in out
    cluster.command(["job", "cancel", "all"])


# --- entries -----------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["One\nTwo\nThree\nFour", "One\nTwo\nThree\nFour\n"])
def test_entries_each_line(cluster: ClusterEnv, content: str) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    (cluster.work_dir / "input").write_text(content)
    cluster.command(["submit", "--each-line=input", "--", "bash", "-c", "echo $HQ_ENTRY"])
    cluster.wait_for_job_state(1, "FINISHED")
    for task_id, line in enumerate(["One", "Two", "Three", "Four"]):
        assert default_output(cluster.work_dir, 1, task_id).read_text() == line + "\n"
    assert not default_output(cluster.work_dir, 1, 4).exists()
    assert job_states(cluster, 1)[-1] == "FINISHED (4)"


def test_entries_from_json_entry(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    (cluster.work_dir / "input").write_text('[123, {"x":\n[1,2,3]}, 2.5]')
    cluster.command(["submit", "--from-json=input", "--", "bash", "-c", "echo $HQ_ENTRY"])
    cluster.wait_for_job_state(1, "FINISHED")
    for task_id, entry in enumerate(["123", '{"x":[1,2,3]}', "2.5"]):
        assert default_output(cluster.work_dir, 1, task_id).read_text() == entry + "\n"
    assert not default_output(cluster.work_dir, 1, 3).exists()
    assert job_states(cluster, 1)[-1] == "FINISHED (3)"


def test_entries_invalid_from_json_entry(cluster: ClusterEnv) -> None:
    cluster.start_server()
    (cluster.work_dir / "input").write_text('{"x":\n[1,2,3]}')
    out = cluster.command(
        ["submit", "--from-json=input", "--", "bash", "-c", "echo $HQ_ENTRY"], expect_fail=True
    )
    assert "input: The top element of the provided JSON file has to be an array" in out
    assert cluster.job_states() == {}


def test_entries_conflicting_options(cluster: ClusterEnv) -> None:
    cluster.start_server()
    (cluster.work_dir / "input").write_text("[1]")
    result = cluster.run(["submit", "--from-json=input", "--each-line=input", "--", "true"])
    assert result.returncode == 2


def test_each_line_with_array(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    (cluster.work_dir / "input").write_text("One\nTwo\nThree\nFour\nFive\nSix\nSeven")
    cluster.command(
        [
            "submit",
            "--each-line=input",
            "--array",
            "2-4, 6",
            "--",
            "bash",
            "-c",
            "echo $HQ_ENTRY,$HQ_TASK_ID",
        ]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    expected = [None, None, "Three,2\n", "Four,3\n", "Five,4\n", None, "Seven,6\n"]
    for task_id, text in enumerate(expected):
        path = default_output(cluster.work_dir, 1, task_id)
        assert (path.read_text() if path.exists() else None) == text
    assert job_states(cluster, 1)[-1] == "FINISHED (4)"


def test_json_with_array(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=2)
    (cluster.work_dir / "input").write_text(
        '["One", "Two", "Three", "Four", "Five", "Six", "Seven"]'
    )
    cluster.command(
        [
            "submit",
            "--from-json=input",
            "--array",
            "2-3, 5, 6, 7, 1000",
            "--",
            "bash",
            "-c",
            "echo $HQ_ENTRY,$HQ_TASK_ID",
        ]
    )
    cluster.wait_for_job_state(1, "FINISHED")
    expected = [None, None, '"Three",2\n', '"Four",3\n', None, '"Six",5\n', '"Seven",6\n']
    for task_id, text in enumerate(expected):
        path = default_output(cluster.work_dir, 1, task_id)
        assert (path.read_text() if path.exists() else None) == text
    assert job_states(cluster, 1)[-1] == "FINISHED (4)"
    table(cluster, ["job", "info", "1"]).check_row_value("Tasks", "4; Ids: 2-3,5-6")


# --- #HQ directives ----------------------------------------------------------------------

DIRECTIVES = """#! /bin/bash
# Hello!
#HQ --name abc --array=1-10
#HQ --cpus="2 compact"

./do-something

#HQ --this-should-be-ignored
"""


def test_hq_directives_from_file(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(cpus=1)
    wd = cluster.work_dir
    (wd / "test.sh").write_text(DIRECTIVES)
    (wd / "test").write_text(DIRECTIVES)
    (wd / "input").write_text("line\n" * 5)

    def check(job_id: int, name: str, tasks: str) -> None:
        info = tables(cluster, ["job", "info", str(job_id)])[0]
        info.check_row_value("Name", name)
        info.check_row_value("Resources", "cpus: 2 compact")
        info.check_row_value("Tasks", tasks)

    cluster.command(["submit", "test.sh"])
    check(1, "abc", "10; Ids: 1-10")
    cluster.command(["submit", "--name=xyz", "test.sh"])
    check(2, "xyz", "10; Ids: 1-10")
    cluster.command(["submit", "--name=xyz", "--each-line", "input", "test.sh"])
    check(3, "xyz", "5; Ids: 0-4")

    # Not a `.sh` file: no directives in auto mode (and the file is not executable).
    cluster.command(["submit", "test"])
    cluster.wait_for_job_state(4, "FAILED")
    tables(cluster, ["job", "info", "4"])[0].check_row_value("Name", "test")

    cluster.command(["submit", "--directives", "file", "test"])
    table(cluster, ["job", "info", "5"]).check_row_value("Name", "abc")
    cluster.command(["job", "cancel", "all"])


@pytest.mark.parametrize(("mode", "script"), [("auto", "test.sh"), ("file", "program")])
def test_hq_directives_invalid_option(cluster: ClusterEnv, mode: str, script: str) -> None:
    cluster.start_server()
    (cluster.work_dir / script).write_text("#! /bin/bash\n#HQ --foo=bar\n./do-something\n")
    result = cluster.run(["submit", "--directives", mode, script])
    assert result.returncode == 1
    assert "You have used invalid parameter(s) after a #HQ directive." in result.stderr
    assert "unexpected argument '--foo' found" in result.stderr


def test_hq_directives_mode_stdin(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    script = "#!/bin/bash\n#HQ --name=abc\necho Hello\n"
    cluster.command(["submit", "--stdin", "--directives=stdin", "bash"], stdin=script)
    cluster.wait_for_job_state(1, "FINISHED")
    assert default_output(cluster.work_dir, 1).read_bytes() == b"Hello\n"
    table(cluster, ["job", "info", "1"]).check_row_value("Name", "abc")

    cluster.command(
        ["submit", "--name", "xyz", "--stdin", "--directives=stdin", "bash"], stdin=script
    )
    table(cluster, ["job", "info", "2"]).check_row_value("Name", "xyz")


def test_hq_directives_mode_stdin_no_stdin(cluster: ClusterEnv) -> None:
    cluster.start_server()
    out = cluster.command(["submit", "--directives=stdin", "bash"], expect_fail=True)
    assert "You have to use `--stdin` when you specify `--directives=stdin`." in out


def test_hq_directives_stdin_ignore_shebang(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    cluster.command(
        ["submit", "--stdin", "--directives=stdin", "bash"], stdin="#!/foo/bar\necho 'Hello'"
    )
    cluster.wait_for_job_state(1, "FINISHED")
    table(cluster, ["job", "info", "1"]).check_row_value("Command", "bash")


def test_hq_directives_mode_off(cluster: ClusterEnv) -> None:
    cluster.start_server()
    (cluster.work_dir / "test.sh").write_text("#! /bin/bash\n#HQ --foo=bar\n./do-something\n")
    cluster.command(["submit", "--directives", "off", "test.sh"])
    table(cluster, ["job", "info", "1"]).check_row_value("Name", "test.sh")


def test_hq_directives_overwrite_from_cli(cluster: ClusterEnv) -> None:
    cluster.start_server()
    (cluster.work_dir / "test.sh").write_text(
        "#! /bin/bash\n#HQ --priority 100\n#HQ --env A=1\n\n./do-something\n"
    )
    cluster.command(["submit", "--directives", "file", "test.sh"])
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("Priority", "100")
    info.check_row_value("Environment", "A=1")
    cluster.command(
        ["submit", "--priority", "8", "--env", "B=2", "--directives", "file", "test.sh"]
    )
    info = table(cluster, ["job", "info", "2"])
    info.check_row_value("Priority", "8")
    # Lists from both sources are concatenated.
    info.check_row_value("Environment", "A=1\nB=2")


def test_hq_directives_shebang_with_args(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker()
    (cluster.work_dir / "test.sh").write_text('#!/bin/bash -l\necho "hello"\n')
    cluster.command(["submit", "--directives", "file", "test.sh"])
    cluster.wait_for_job_state(1, "FINISHED")
    info = table(cluster, ["job", "info", "1"])
    info.check_row_value("Command", "/bin/bash\n-l\ntest.sh")
    info.check_row_value("Name", "bash")
    assert default_output(cluster.work_dir).read_text() == "hello\n"

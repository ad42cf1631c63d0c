"""The task launcher against real tiny processes (jobs.md §5)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import trio

from hyperq.worker import launcher
from hyperq.worker.launcher import TaskLaunchSpec, run_task

DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"


def make_spec(tmp_path: Path, argv: list[str], **changes) -> TaskLaunchSpec:
    work_dir = tmp_path / "work"
    work_dir.mkdir(exist_ok=True)
    fields = {
        "job_id": 1,
        "task_id": 0,
        "instance": 0,
        "argv": argv,
        "env": {},
        "cwd": str(tmp_path),
        "stdout": DEFAULT_STDOUT,
        "stderr": DEFAULT_STDERR,
        "submit_dir": str(tmp_path),
        "server_uid": "uid1",
        "work_dir": str(work_dir),
    }
    fields.update(changes)
    return TaskLaunchSpec(**fields)


def stdout_of(tmp_path: Path, task_id: int = 0) -> str:
    return (tmp_path / "job-1" / f"{task_id}.stdout").read_text()


def env_of(tmp_path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout_of(tmp_path).splitlines() if "=" in line)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


async def wait_until(predicate, interval: float = 0.01):
    while not predicate():
        await trio.sleep(interval)


async def run(spec: TaskLaunchSpec, limit: float = 10):
    with trio.fail_after(limit):
        return await run_task(spec)


async def test_finished_with_outputs(tmp_path):
    outcome = await run(make_spec(tmp_path, ["sh", "-c", "echo out; echo err >&2; pwd"]))
    assert outcome.finished and outcome.error is None
    assert stdout_of(tmp_path) == f"out\n{tmp_path}\n"
    assert (tmp_path / "job-1" / "0.stderr").read_text() == "err\n"


async def test_env_vars(tmp_path):
    spec = make_spec(
        tmp_path,
        ["env"],
        job_id=1,
        task_id=7,
        instance=2,
        entry="line x",
        env={"FOO": "bar", "HQ_JOB_ID": "overridden"},
        cpu_labels=["3", "5"],
        resource_env={"HQ_RESOURCE_REQUEST_cpus": "2 compact"},
        hq_executable="/opt/hq",
        stdout="%{CWD}/job-%{JOB_ID}/0.stdout",
    )
    assert (await run(spec)).finished
    env = env_of(tmp_path)
    assert env["HQ_JOB_ID"] == "1"
    assert env["HQ_TASK_ID"] == "7"
    assert env["HQ_INSTANCE_ID"] == "2"
    assert env["HQ_SUBMIT_DIR"] == str(tmp_path)
    assert env["HQ_ENTRY"] == "line x"
    assert env["HQ_CPUS"] == "3,5"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["HQ_RESOURCE_REQUEST_cpus"] == "2 compact"
    assert env["HQ"] == "/opt/hq"
    assert env["FOO"] == "bar"
    assert env["PATH"] == os.environ["PATH"]
    for absent in ("HQ_PIN", "HQ_TASK_DIR", "HQ_ERROR_FILENAME", "OMP_PLACES"):
        assert absent not in env


async def test_env_without_entry_and_user_omp(tmp_path):
    spec = make_spec(tmp_path, ["env"], env={"OMP_NUM_THREADS": "9"}, cpu_labels=["0"])
    assert (await run(spec)).finished
    env = env_of(tmp_path)
    assert env["OMP_NUM_THREADS"] == "9"
    assert "HQ_ENTRY" not in env


async def test_fractional_cpus_no_omp_threads(tmp_path):
    spec = make_spec(
        tmp_path, ["env"], cpu_labels=["0"], cpus_whole=False, base_env={"PATH": os.environ["PATH"]}
    )
    assert (await run(spec)).finished
    env = env_of(tmp_path)
    assert "OMP_NUM_THREADS" not in env
    assert env["HQ_CPUS"] == "0"


async def test_pin_omp(tmp_path):
    spec = make_spec(tmp_path, ["env"], pin="omp", cpu_labels=["1", "2"])
    assert (await run(spec)).finished
    env = env_of(tmp_path)
    assert (env["HQ_PIN"], env["OMP_PLACES"], env["OMP_PROC_BIND"]) == ("omp", "{1,2}", "close")

    spec = make_spec(
        tmp_path,
        ["env"],
        pin="omp",
        cpu_labels=["1"],
        env={"OMP_PLACES": "mine", "OMP_PROC_BIND": "spread"},
    )
    assert (await run(spec)).finished
    env = env_of(tmp_path)
    assert (env["OMP_PLACES"], env["OMP_PROC_BIND"]) == ("mine", "spread")


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset")
async def test_pin_taskset(tmp_path):
    script = "echo $HQ_PIN; grep Cpus_allowed_list /proc/self/status"
    spec = make_spec(tmp_path, ["sh", "-c", script], pin="taskset", cpu_labels=["0"])
    assert (await run(spec)).finished
    lines = stdout_of(tmp_path).splitlines()
    assert lines[0] == "taskset"
    assert lines[1].split() == ["Cpus_allowed_list:", "0"]


async def test_pin_without_cpus(tmp_path):
    for pin in ("taskset", "omp"):
        outcome = await run(make_spec(tmp_path, ["true"], pin=pin))
        assert outcome.error == "Pinning failed, no CPU ids allocated for task"


async def test_instance_placeholders_resolved(tmp_path):
    spec = make_spec(
        tmp_path,
        ["pwd"],
        cwd="%{INSTANCE_ID}-dir",
        stdout="%{INSTANCE_ID}.out",
        stderr="%{INSTANCE_ID}.err",
        instance=3,
    )
    assert (await run(spec)).finished
    assert (tmp_path / "3-dir" / "3.out").read_text() == f"{tmp_path}/3-dir\n"
    assert (tmp_path / "3-dir" / "3.err").read_text() == ""


async def test_output_none(tmp_path):
    spec = make_spec(tmp_path, ["sh", "-c", "echo hi; echo err >&2"], stdout=None, stderr=None)
    assert (await run(spec)).finished
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


async def test_stdin_data(tmp_path):
    spec = make_spec(tmp_path, ["cat"], stdin=b"hello\nworld\n")
    assert (await run(spec)).finished
    assert stdout_of(tmp_path) == "hello\nworld\n"


async def test_no_stdin_is_empty(tmp_path):
    assert (await run(make_spec(tmp_path, ["cat"]))).finished
    assert stdout_of(tmp_path) == ""


async def test_stdin_not_read(tmp_path):
    spec = make_spec(tmp_path, ["sh", "-c", "head -c 3"], stdin=b"x" * 1_000_000)
    assert (await run(spec)).finished
    assert stdout_of(tmp_path) == "xxx"
    spec = make_spec(tmp_path, ["true"], stdin=b"y" * 1_000_000)
    assert (await run(spec)).finished


async def test_exit_code(tmp_path):
    outcome = await run(make_spec(tmp_path, ["sh", "-c", "exit 3"]))
    assert not outcome.finished
    assert outcome.error == "Program terminated with exit code 3."


@pytest.mark.parametrize(("signum", "name"), [(15, "SIGTERM"), (9, "SIGKILL"), (6, "SIGABRT")])
async def test_killed_by_signal(tmp_path, signum, name):
    outcome = await run(make_spec(tmp_path, ["sh", "-c", f"kill -{signum} $$"]))
    assert outcome.error == (
        f"Program terminated with exit code -1. Received signal {signum} ({name})."
    )


async def test_unknown_signal_name(tmp_path):
    outcome = await run(make_spec(tmp_path, ["sh", "-c", "kill -s WINCH $$; kill -s SYS $$"]))
    assert outcome.error == "Program terminated with exit code -1. Received signal 31 (unknown)."


async def test_missing_program(tmp_path):
    outcome = await run(make_spec(tmp_path, ["foo", "--bar", "--baz=5"]))
    assert outcome.error == (
        'Cannot execute "foo --bar --baz=5": No such file or directory (os error 2)\n'
        "The program that you have tried to execute (`foo`) was not found."
    )
    outcome = await run(make_spec(tmp_path, ["/non-existent-program"]))
    assert outcome.error == (
        'Cannot execute "/non-existent-program": No such file or directory (os error 2)\n'
        "The program that you have tried to execute (`/non-existent-program`) was not found."
    )


async def test_missing_program_quotes_escaped(tmp_path):
    outcome = await run(make_spec(tmp_path, ["nope", 'say "hi"', "back\\slash"]))
    assert outcome.error.splitlines()[0] == (
        'Cannot execute "nope say \\"hi\\" back\\\\slash": No such file or directory (os error 2)'
    )


async def test_missing_program_file_in_cwd_hint(tmp_path):
    (tmp_path / "foo").write_text("hostname")
    outcome = await run(make_spec(tmp_path, ["foo"]))
    assert outcome.error == (
        'Cannot execute "foo": No such file or directory (os error 2)\n'
        "The program that you have tried to execute (`foo`) was not found.\n"
        f"The file `{tmp_path}/foo` exists, maybe you have meant `./foo` instead?"
    )


async def test_script_not_executable(tmp_path):
    (tmp_path / "test.sh").write_text("echo 'Hello' > out.txt\n")
    outcome = await run(make_spec(tmp_path, ["./test.sh"]))
    assert outcome.error == (
        'Cannot execute "./test.sh": Permission denied (os error 13)\n'
        "The script that you have tried to execute (`./test.sh`) is not executable.\n"
        "Try making it executable or add a shebang line to it."
    )
    (tmp_path / "prog").write_text("")
    outcome = await run(make_spec(tmp_path, ["./prog"]))
    assert outcome.error == 'Cannot execute "./prog": Permission denied (os error 13)'


async def test_scripts_run_by_path(tmp_path):
    script = tmp_path / "test.sh"
    script.write_text("#!/bin/sh\necho Hello >> out.txt\n")
    script.chmod(0o755)
    for argv0 in ("./test.sh", str(script)):
        assert (await run(make_spec(tmp_path, [argv0]))).finished
    # Without a shebang an executable file is run by /bin/sh, as execvp does.
    bare = tmp_path / "bare"
    bare.write_text("echo Bare >> out.txt\n")
    bare.chmod(0o755)
    assert (await run(make_spec(tmp_path, ["./bare"]))).finished
    assert (tmp_path / "out.txt").read_text() == "Hello\nHello\nBare\n"


async def test_path_lookup_uses_task_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "mytool"
    tool.write_text("#!/bin/sh\necho from-tool\n")
    tool.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    assert (await run(make_spec(tmp_path, ["mytool"], env={"PATH": path}))).finished
    assert stdout_of(tmp_path) == "from-tool\n"


async def test_outputs_exist_after_spawn_failure(tmp_path):
    spec = make_spec(tmp_path, ["/non-existent"], stdout_rm_if_finished=True)
    assert not (await run(spec)).finished
    assert (tmp_path / "job-1" / "0.stdout").is_file()
    assert (tmp_path / "job-1" / "0.stderr").is_file()


async def test_nul_byte_in_argument(tmp_path):
    outcome = await run(make_spec(tmp_path, ["echo", "a\0b"]))
    assert outcome.error.startswith('Cannot execute "echo a\\0b": ')


async def test_rm_if_finished(tmp_path):
    spec = make_spec(tmp_path, ["echo", "x"], stdout_rm_if_finished=True)
    assert (await run(spec)).finished
    assert not (tmp_path / "job-1" / "0.stdout").exists()
    assert (tmp_path / "job-1" / "0.stderr").exists()

    spec = make_spec(
        tmp_path, ["sh", "-c", "exit 1"], stdout_rm_if_finished=True, stderr_rm_if_finished=True
    )
    assert not (await run(spec)).finished
    assert (tmp_path / "job-1" / "0.stdout").exists()
    assert (tmp_path / "job-1" / "0.stderr").exists()


async def test_start_failure_for_bad_output_path(tmp_path):
    outcome = await run(make_spec(tmp_path, ["true"], stdout="/dev/null/x/out"))
    assert not outcome.finished
    assert outcome.error.startswith("Cannot create stdout directory at /dev/null/x/out")


async def test_no_command(tmp_path):
    assert (await run(make_spec(tmp_path, []))).error == "No command arguments"


async def test_task_dir(tmp_path):
    script = 'echo "$HQ_TASK_DIR"; echo "$HQ_ERROR_FILENAME"; touch "$HQ_TASK_DIR/xyz"'
    spec = make_spec(tmp_path, ["sh", "-c", script], task_dir=True)
    assert (await run(spec)).finished
    task_dir, error_file = stdout_of(tmp_path).splitlines()
    assert os.path.dirname(task_dir) == spec.work_dir
    assert os.path.basename(task_dir).startswith("t")
    assert error_file == f"{task_dir}/hq-error"
    assert not os.path.exists(task_dir)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Testing message\n", "Testing message\n"),
        ("", "Task created an error file, but it is empty"),
        ("a" * 10_000, "a" * 2048 + "\n[The message was truncated]"),
    ],
)
async def test_error_file(tmp_path, content, expected):
    (tmp_path / "msg").write_text(content)
    script = f'cat {tmp_path}/msg > "$HQ_ERROR_FILENAME"; exit 1'
    outcome = await run(make_spec(tmp_path, ["sh", "-c", script], task_dir=True))
    assert outcome.error == expected


async def test_error_file_ignored_on_success(tmp_path):
    script = 'echo boom > "$HQ_ERROR_FILENAME"'
    assert (await run(make_spec(tmp_path, ["sh", "-c", script], task_dir=True))).finished


async def test_error_file_missing_gives_exit_code(tmp_path):
    outcome = await run(make_spec(tmp_path, ["sh", "-c", "exit 2"], task_dir=True))
    assert outcome.error == "Program terminated with exit code 2."


async def test_time_limit(tmp_path):
    start = time.monotonic()
    outcome = await run(make_spec(tmp_path, ["sleep", "10"], time_limit=0.2), limit=5)
    assert outcome.error == "Time limit reached"
    assert time.monotonic() - start < 3


async def _cancel_when_started(
    tmp_path: Path, spec: TaskLaunchSpec, pid_lines: int, limit: float = 10
) -> tuple[list[int], float]:
    """Run `spec`, cancel it once its stdout holds `pid_lines` pids.

    Returns the pids and the seconds from the cancel to run_task's end.
    """
    pids: list[int] = []
    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:

            async def runner():
                await run_task(spec)
                pytest.fail("run_task returned instead of raising Cancelled")

            nursery.start_soon(runner)

            def started():
                path = tmp_path / "job-1" / "0.stdout"
                return path.exists() and len(path.read_text().split()) == pid_lines

            await wait_until(started)
            pids = [int(p) for p in stdout_of(tmp_path).split()]
            cancelled_at = time.monotonic()
            nursery.cancel_scope.cancel()
    return pids, time.monotonic() - cancelled_at


async def test_cancel_kills_process_group(tmp_path):
    # A background job of a non-interactive shell ignores SIGINT: it dies only through
    # the SIGKILL to the group.
    script = "sleep 100 & echo $!; echo $$; wait"
    spec = make_spec(tmp_path, ["sh", "-c", script], task_dir=True)
    pids, _ = await _cancel_when_started(tmp_path, spec, 2)
    with trio.fail_after(5):
        await wait_until(lambda: not any(alive(pid) for pid in pids))
    assert not any((tmp_path / "work").iterdir())  # task dir removed


async def test_cancel_sigint_ignored_then_sigkill(tmp_path):
    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "child = os.fork()\n"
        "if child:\n"
        "    print(os.getpid(), child, flush=True)\n"
        "time.sleep(100)\n"
    )
    spec = make_spec(tmp_path, [sys.executable, "-c", code])
    pids, elapsed = await _cancel_when_started(tmp_path, spec, 2)
    assert 1.0 <= elapsed < 5
    with trio.fail_after(5):
        await wait_until(lambda: not any(alive(pid) for pid in pids))


# With a long grace, a task that needed the SIGKILL would take the whole grace: ending
# well before it means SIGINT alone was enough (a 1 s bound was flaky on a loaded box).
LONG_GRACE = 30.0


async def test_cancel_sigint_is_enough(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "KILL_GRACE_SECONDS", LONG_GRACE)
    spec = make_spec(tmp_path, ["sh", "-c", "echo $$; sleep 100"])
    pids, elapsed = await _cancel_when_started(tmp_path, spec, 1, limit=LONG_GRACE + 10)
    assert elapsed < LONG_GRACE  # no SIGKILL needed
    assert not alive(pids[0])


async def test_cancel_while_feeding_stdin(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "KILL_GRACE_SECONDS", LONG_GRACE)
    spec = make_spec(tmp_path, ["sh", "-c", "echo $$; sleep 100"], stdin=b"z" * 1_000_000)
    pids, elapsed = await _cancel_when_started(tmp_path, spec, 1, limit=LONG_GRACE + 10)
    assert elapsed < LONG_GRACE
    assert not alive(pids[0])


async def test_without_pidfd(tmp_path, monkeypatch):
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    assert (await run(make_spec(tmp_path, ["sh", "-c", "exit 4"]))).error == (
        "Program terminated with exit code 4."
    )
    outcome = await run(make_spec(tmp_path, ["sleep", "10"], time_limit=0.1), limit=5)
    assert outcome.error == "Time limit reached"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
async def test_parent_death_signal(tmp_path):
    code = (
        "import ctypes\n"
        "value = ctypes.c_int()\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(value))\n"  # PR_GET_PDEATHSIG
        "print(value.value)\n"
    )
    spec = make_spec(tmp_path, [sys.executable, "-c", code], parent_death_signal=True)
    assert (await run(spec)).finished
    assert stdout_of(tmp_path) == "15\n"
    spec = make_spec(tmp_path, [sys.executable, "-c", code])
    assert (await run(spec)).finished
    assert stdout_of(tmp_path) == "0\n"


async def test_program_cache_finds_by_task_path_and_expires(tmp_path, monkeypatch):
    from hyperq.worker.launcher import ProgramCache

    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
    old = second / "mytool"
    old.write_text("#!/bin/sh\necho old\n")
    old.chmod(0o755)
    cache = ProgramCache()
    path = f"{first}:{second}:{os.environ['PATH']}"
    spec = make_spec(tmp_path, ["mytool"], env={"PATH": path}, programs=cache)
    assert (await run(spec)).finished
    assert stdout_of(tmp_path) == "old\n"
    # A program appearing earlier in PATH is not seen while the entry is fresh...
    new = first / "mytool"
    new.write_text("#!/bin/sh\necho new\n")
    new.chmod(0o755)
    assert cache.find("mytool", {"PATH": path}) == str(old)
    # ...but is once it has expired.
    monkeypatch.setattr(launcher, "PROGRAM_CACHE_SECONDS", 0.0)
    assert (await run(spec)).finished
    assert stdout_of(tmp_path) == "new\n"
    # Each PATH has its own entry.
    assert cache.find("mytool", {"PATH": f"{second}"}) == str(old)
    assert cache.find("sh", {"PATH": "/bin"}) == "/bin/sh"


# --- launch + Reaper (how the worker runs tasks without stdin or streaming) ------------


class Ends:
    """What a Reaper reported, by task id (None: cancelled)."""

    def __init__(self) -> None:
        self.outcomes: dict[int, object] = {}

    def __call__(self, task, outcome) -> None:
        assert task.spec.task_id not in self.outcomes
        self.outcomes[task.spec.task_id] = outcome


async def start_reaper(nursery, ends: Ends):
    from hyperq.worker.launcher import Reaper

    reaper = Reaper(ends)
    nursery.start_soon(reaper.run)
    await wait_until(lambda: reaper.running)
    return reaper


def launched(tmp_path: Path, argv: list[str], task_id: int, **changes):
    from hyperq.worker.launcher import RunningTask, launch

    task = launch(make_spec(tmp_path, argv, task_id=task_id, **changes))
    assert isinstance(task, RunningTask)
    return task


async def test_reaper_reports_each_end_like_run_task(tmp_path):
    from hyperq.worker.launcher import launch

    ends = Ends()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            reaper = await start_reaper(nursery, ends)
            for task_id in range(40):
                code = task_id % 3  # 0 finishes, others fail with their code
                reaper.watch(launched(tmp_path, ["sh", "-c", f"exit {code}"], task_id))
            # A task that cannot start never reaches the reaper.
            outcome = launch(make_spec(tmp_path, ["/nonexistent/program"], task_id=99))
            assert not outcome.finished and "was not found" in outcome.error
            await wait_until(lambda: len(ends.outcomes) == 40)
            assert len(reaper) == 0
            reaper.close_when_idle()
    for task_id, outcome in ends.outcomes.items():
        code = task_id % 3
        expected = None if code == 0 else f"Program terminated with exit code {code}."
        assert outcome.error == expected


async def test_reaper_time_limit_cancel_and_shutdown_kill_groups(tmp_path):
    ends = Ends()
    script = "echo $$; sleep 100 & echo $!; wait"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            reaper = await start_reaper(nursery, ends)
            limited = launched(tmp_path, ["sh", "-c", script], 1, time_limit=0.3)
            cancelled = launched(tmp_path, ["sh", "-c", script], 2)
            left = launched(tmp_path, ["sh", "-c", script], 3)
            quick = launched(tmp_path, ["true"], 4, time_limit=60)
            for task in (limited, cancelled, left, quick):
                reaper.watch(task)
            await wait_until(
                lambda: all(len(stdout_of(tmp_path, t).split()) == 2 for t in (1, 2, 3))
            )
            pids = {t: [int(p) for p in stdout_of(tmp_path, t).split()] for t in (1, 2, 3)}
            cancelled.cancel()
            await wait_until(lambda: {1, 2, 4} <= set(ends.outcomes))
            assert ends.outcomes[1].error == "Time limit reached"
            assert ends.outcomes[2] is None  # cancelled: nothing to report
            assert ends.outcomes[4].finished
            assert 3 not in ends.outcomes
            nursery.cancel_scope.cancel()  # the worker ends: what still runs is killed
    assert ends.outcomes[3] is None
    with trio.fail_after(10):  # the leaders and their children: every group is gone
        await wait_until(lambda: not any(alive(p) for group in pids.values() for p in group))


async def test_reaper_close_when_idle_waits_for_running_tasks(tmp_path):
    ends = Ends()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            reaper = await start_reaper(nursery, ends)
            reaper.watch(launched(tmp_path, ["sleep", "0.3"], 1))
            reaper.close_when_idle()
        # The nursery ended only after the task did (finish-running).
    assert ends.outcomes[1].finished


def launch_watched(reaper, tmp_path: Path, argv: list[str], task_id: int, cwd: str, programs):
    """Launch a task in `cwd` printing into `out<task_id>` (outside the cwd: opening it
    must not make the cwd), and have `reaper` wait for it."""
    from hyperq.worker.launcher import RunningTask, launch

    spec = make_spec(
        tmp_path,
        argv,
        task_id=task_id,
        cwd=cwd,
        programs=programs,
        stdout=str(tmp_path / f"out{task_id}"),
        stderr=None,
    )
    task = launch(spec)
    assert isinstance(task, RunningTask)
    reaper.watch(task)


async def test_a_working_directory_removed_since_its_last_task_is_made_again(tmp_path):
    """The worker remembers directories it saw, to skip a stat per spawn; one removed (or
    replaced by a file) meanwhile is made again, or fails the task as before."""
    from hyperq.worker.launcher import ProgramCache, launch

    programs = ProgramCache()
    cwd = tmp_path / "a" / "b"
    ends = Ends()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            reaper = await start_reaper(nursery, ends)
            for task_id in range(3):
                if task_id == 1:
                    shutil.rmtree(tmp_path / "a")
                launch_watched(reaper, tmp_path, ["sh", "-c", "pwd"], task_id, str(cwd), programs)
                await wait_until(lambda n=task_id + 1: len(ends.outcomes) == n)
                assert str(cwd) in programs.dirs
            shutil.rmtree(tmp_path / "a")
            (tmp_path / "a").write_text("")
            spec = make_spec(
                tmp_path, ["true"], task_id=3, cwd=str(cwd), programs=programs, stdout=None
            )
            outcome = launch(spec)
            reaper.close_when_idle()
    assert [ends.outcomes[t].finished for t in range(3)] == [True] * 3
    assert [(tmp_path / f"out{t}").read_text() for t in range(3)] == [f"{cwd}\n"] * 3
    assert not outcome.finished
    assert outcome.error.startswith("Could not create working directory: "), outcome.error


async def test_spawns_share_devnull_and_return_to_the_workers_directory(tmp_path):
    """With a worker's cache, `/dev/null` and the way back home are opened once: tasks
    in another directory and in the worker's own run where they should, the worker
    stays in its directory, and no descriptor is left behind per task."""
    from hyperq.worker.launcher import ProgramCache

    home = os.getcwd()
    programs = ProgramCache()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ends = Ends()
    fds_before = len(os.listdir("/proc/self/fd"))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            reaper = await start_reaper(nursery, ends)
            for task_id, cwd in enumerate([str(elsewhere), home, str(elsewhere), home]):
                # stdin is /dev/null: cat ends at once.
                launch_watched(reaper, tmp_path, ["sh", "-c", "pwd; cat"], task_id, cwd, programs)
                assert os.getcwd() == home
            await wait_until(lambda: len(ends.outcomes) == 4)
            reaper.close_when_idle()
    assert all(ends.outcomes[t].finished for t in range(4))
    assert [(tmp_path / f"out{t}").read_text() for t in range(4)] == [
        f"{elsewhere}\n",
        f"{home}\n",
        f"{elsewhere}\n",
        f"{home}\n",
    ]
    # The two kept descriptors, nothing per task; closing the cache gives them back.
    assert len(os.listdir("/proc/self/fd")) == fds_before + 2
    programs.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"entry": "line"},
        {"pin": "taskset", "cpu_labels": ["0", "1"]},
        {"pin": "omp", "cpu_labels": ["0"], "env": {"OMP_PLACES": "mine"}},
        {"cwd": "dir-%{TASK_ID}", "stdout": "%{INSTANCE_ID}.out", "stderr": None},
        {"cwd": "plain", "stdout": "out", "stderr": "err"},
        {"task_dir": True, "resource_env": {"HQ_RESOURCE_VALUES_gpus": "1"}},
        {"env": {"HQ_TASK_ID": "user", "HQ_ACCESS_KEY": "user", "A": "1"}, "access": True},
    ],
)
def test_a_launch_template_prepares_each_task_as_if_alone(tmp_path, changes):
    """Tasks sharing a template (one description and allocation) get exactly what each
    would get alone: the same variables in the same order, argv and paths, with their
    own IDs, entry, access key and task_dir."""
    from hyperq.worker.launcher import LaunchTemplate, _prepare

    changes = dict(changes)
    access = changes.pop("access", False)
    template = LaunchTemplate("HQ_ACCESS_KEY" if access else None)
    base = {"PATH": os.environ.get("PATH", ""), "HOME": "/home/x", "HQ_TASK_ID": "stale"}
    for task_id, instance in ((3, 0), (4, 2), (9, 1)):
        task = dict(changes)
        if "entry" in task:
            task["entry"] = f"line {task_id}"
        if access:
            task["env"] = {**task["env"], "HQ_ACCESS_KEY": f"socket:token{task_id}"}
        task.update(task_id=task_id, instance=instance, base_env=base, hq_executable="/bin/hq")
        expected = _prepare(make_spec(tmp_path, ["prog", "arg"], **task))
        got = _prepare(make_spec(tmp_path, ["prog", "arg"], template=template, **task))
        for prepared in (expected, got):
            if prepared[2] is not None:  # task_dir: each task makes its own
                shutil.rmtree(prepared[2])
        env, argv, task_dir, *paths = got
        assert list(env.items()) == [
            (k, v.replace(expected[2] or "\0", task_dir or "\0")) for k, v in expected[0].items()
        ]
        assert (argv, paths) == (expected[1], list(expected[3:]))
        assert (task_dir is None) == (expected[2] is None)
        assert env["HQ_TASK_ID"] == str(task_id) and env["HQ_INSTANCE_ID"] == str(instance)
    assert template.env is not None  # filled by the first task, used by the others


def test_a_spec_for_another_task_of_its_template_is_that_task_s_spec_built_whole(tmp_path):
    """`for_task` (the worker's per-task copy of its template's shared spec) gives the
    spec that building it field by field gives, and leaves the shared one as it was."""
    from hyperq.worker.launcher import LaunchTemplate

    template = LaunchTemplate(None)
    common = {
        "stdout": str(tmp_path / "out"), "pin": "omp", "cpu_labels": ["0", "1"],
        "resource_env": {"HQ_RESOURCE_VALUES_gpus": "1"}, "time_limit": 5.0,
        "task_dir": True, "template": template,
    }
    shared = make_spec(tmp_path, ["prog", "a"], task_id=-1, instance=-1, **common)
    before = dict(vars(shared))
    for task_id, instance, entry, nodes, env in (
        (3, 0, None, [], {"A": "1"}),
        (7, 2, "line 7", ["h1", "h2"], {"A": "1", "HQ_ACCESS_KEY": "s:t7"}),
    ):
        got = shared.for_task(shared.job_id, task_id, instance, entry, nodes, env)
        whole = make_spec(
            tmp_path, ["prog", "a"], task_id=task_id, instance=instance, entry=entry,
            node_hosts=nodes, env=env, **common,
        )
        assert got == whole
        assert got.stream is None and got is not shared
        got.stdout = None  # as attach_stream does for a streamed channel
    assert vars(shared) == before

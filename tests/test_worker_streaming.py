"""The worker's streaming through `run_task` and through `launch` + `Reaper`, with real
task processes and no server."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from hyperq.stream.format import KIND_END, FileHeader, Record
from hyperq.stream.reader import read_records
from hyperq.worker.launcher import (
    Reaper,
    RunningTask,
    TaskLaunchSpec,
    TaskOutcome,
    can_launch,
    launch,
    run_task,
)
from hyperq.worker.streamcopier import Copier
from hyperq.worker.streaming import StreamError, StreamFiles, TaskStream, attach_stream

PIPE = {"path": "<pipe>", "rm_if_finished": False}


def make_spec(tmp_path: Path, files: StreamFiles, argv: list[str], **changes) -> TaskLaunchSpec:
    work_dir = tmp_path / "work"
    work_dir.mkdir(exist_ok=True)
    spec = TaskLaunchSpec(
        job_id=changes.pop("job_id", 1),
        task_id=changes.pop("task_id", 0),
        instance=changes.pop("instance", 0),
        argv=argv,
        env={},
        cwd=str(tmp_path),
        stdout="<pipe>",
        stderr="<pipe>",
        submit_dir=str(tmp_path),
        server_uid="uid1",
        work_dir=str(work_dir),
        **changes,
    )
    return attach_stream(spec, str(tmp_path / "logs"), files)


@contextlib.asynccontextmanager
async def running_files() -> AsyncIterator[StreamFiles]:
    """A worker's stream files with their pipe reader running, as the worker has them."""
    files = StreamFiles("uid1", 7)
    async with trio.open_nursery() as nursery:
        await nursery.start(files.run)
        try:
            yield files
        finally:
            files.close()
            nursery.cancel_scope.cancel()


def records_in(directory: Path) -> list[Record]:
    [path] = list(directory.glob("*.hqs"))
    header, records, damages = read_records(path.read_bytes())
    assert header == FileHeader("uid1", 7)
    assert damages == []
    return records


async def test_output_and_end_are_on_disk_when_run_task_returns(tmp_path: Path) -> None:
    async with running_files() as files:
        spec = make_spec(tmp_path, files, ["bash", "-c", "echo out; echo err >&2; exit 3"])
        outcome = await run_task(spec)
        assert outcome.error == "Program terminated with exit code 3."
        records = records_in(tmp_path / "logs")
        data = {(r.channel, r.data) for r in records if r.kind != KIND_END}
        assert data == {(0, b"out\n"), (1, b"err\n")}
        assert records[-1].kind == KIND_END


async def test_many_tasks_share_one_file_without_mixing(tmp_path: Path) -> None:
    async with running_files() as files:
        async with trio.open_nursery() as nursery:
            for task in range(8):
                script = f"for i in $(seq 200); do echo task{task}-line$i; done"
                spec = make_spec(tmp_path, files, ["bash", "-c", script], task_id=task)
                nursery.start_soon(run_task, spec)
        records = records_in(tmp_path / "logs")
        for task in range(8):
            text = b"".join(r.data for r in records if r.task == task)
            assert text == b"".join(b"task%d-line%d\n" % (task, i) for i in range(1, 201))
            assert [r.kind for r in records if r.task == task][-1] == KIND_END


async def test_cancel_keeps_what_was_printed(tmp_path: Path) -> None:
    async with running_files() as files:
        marker = tmp_path / "printed"
        spec = make_spec(tmp_path, files, ["bash", "-c", f"echo Start; touch {marker}; sleep 100"])
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_task, spec)
                while not marker.exists():
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
        assert [r.data for r in records_in(tmp_path / "logs") if r.data] == [b"Start\n"]


async def test_uncreatable_directory_fails_the_task(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file")
    async with running_files() as files:
        spec = make_spec(tmp_path, files, ["echo", "lost"])
        outcome = await run_task(spec)
        assert outcome.error is not None
        assert outcome.error.startswith(f"Cannot create stream directory {tmp_path / 'logs'}: ")


async def test_write_failure_fails_and_the_next_task_gets_a_fresh_file(tmp_path: Path) -> None:
    async with running_files() as files:
        writer = await files.writer(str(tmp_path / "logs"))
        writer.copier.process.kill()  # writes now fail: nobody reads the pipe
        writer.copier.process.wait()
        writer.append(b"x")
        with pytest.raises(StreamError):
            await writer.write_pending()
        stream = TaskStream(files, str(tmp_path / "logs"), (1, 0, 0), (True, False))
        assert await stream.open() is None
        assert stream.writer is not writer
        async with stream.running():
            pass  # no task: the pipes just close
        assert len(list((tmp_path / "logs").glob("*.hqs"))) == 2


async def test_copier_writes_in_order_and_reports_write_errors(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    copier = Copier(fd)
    # A process group of its own: Ctrl-C to the worker's group must not end it first.
    assert os.getpgid(copier.process.pid) == copier.process.pid
    for n in range(50):
        await copier.write(b"%d," % n * (n * 997 % 3000))
    copier.close()
    copier.wait()
    assert copier.process.returncode == 0  # it ended by itself, on EOF
    os.close(fd)
    assert (tmp_path / "out").read_bytes() == b"".join(
        b"%d," % n * (n * 997 % 3000) for n in range(50)
    )
    full = os.open("/dev/full", os.O_WRONLY)
    copier = Copier(full)
    with pytest.raises(OSError) as error:
        await copier.write(b"lost")
    assert error.value.errno == errno.ENOSPC
    with pytest.raises(OSError):  # the copier has ended
        await copier.write(b"lost")
    copier.close()
    copier.wait()
    os.close(full)


async def test_no_pipes_fails_the_task_not_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_files() as files:
        spec = make_spec(tmp_path, files, ["echo", "lost"])

        def no_pipes(flags: int) -> tuple[int, int]:
            raise OSError(24, "Too many open files")

        monkeypatch.setattr(os, "pipe2", no_pipes)
        outcome = await run_task(spec)
        assert outcome.error == "Streaming: Too many open files (os error 24)"


# --- launch + Reaper: streamed tasks whose stream file is open already ----------------


@contextlib.asynccontextmanager
async def running_reaper(
    tmp_path: Path,
) -> AsyncIterator[tuple[StreamFiles, Reaper, dict[int, tuple[TaskOutcome | None, bool]]]]:
    """Stream files with the log directory's file open, and a Reaper whose reports also
    say whether the task's END was in the file at that moment."""
    ends: dict[int, tuple[TaskOutcome | None, bool]] = {}
    logs = tmp_path / "logs"

    def on_end(task: RunningTask, outcome: TaskOutcome | None) -> None:
        on_disk = any(r.kind == KIND_END and r.task == task.spec.task_id for r in records_in(logs))
        ends[task.spec.task_id] = (outcome, on_disk)

    async with running_files() as files:
        await files.writer(str(logs))
        reaper = Reaper(on_end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reaper.run)
            while not reaper.running:
                await trio.sleep(0.01)
            yield files, reaper, ends
            reaper.close_when_idle()


def launched(spec: TaskLaunchSpec, reaper: Reaper) -> RunningTask:
    assert can_launch(spec)
    task = launch(spec)
    assert isinstance(task, RunningTask)
    reaper.watch(task)
    return task


async def test_fast_path_reports_after_the_output_and_end_are_on_disk(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_reaper(tmp_path) as (files, reaper, ends):
            for task_id in range(20):
                script = f"echo out{task_id}; echo err{task_id} >&2; exit {task_id % 2}"
                launched(
                    make_spec(tmp_path, files, ["bash", "-c", script], task_id=task_id), reaper
                )
    records = records_in(tmp_path / "logs")
    for task_id in range(20):
        outcome, end_on_disk = ends[task_id]
        assert end_on_disk
        assert outcome is not None
        assert outcome.finished == (task_id % 2 == 0)
        data = {(r.channel, r.data) for r in records if r.task == task_id and r.data}
        assert data == {(0, b"out%d\n" % task_id), (1, b"err%d\n" % task_id)}


async def test_fast_path_time_limit_keeps_what_was_printed(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_reaper(tmp_path) as (files, reaper, ends):
            spec = make_spec(
                tmp_path, files, ["bash", "-c", "echo Start; sleep 100"], time_limit=0.5
            )
            launched(spec, reaper)
    outcome, end_on_disk = ends[0]
    assert outcome == TaskOutcome("Time limit reached")
    assert end_on_disk
    assert [r.data for r in records_in(tmp_path / "logs") if r.data] == [b"Start\n"]


async def test_fast_path_cancel_keeps_what_was_printed(tmp_path: Path) -> None:
    marker = tmp_path / "printed"
    with trio.fail_after(30):
        async with running_reaper(tmp_path) as (files, reaper, ends):
            script = f"echo Start; touch {marker}; sleep 100"
            task = launched(make_spec(tmp_path, files, ["bash", "-c", script]), reaper)
            while not marker.exists():
                await trio.sleep(0.02)
            task.cancel()
    assert ends[0] == (None, True)
    assert [r.data for r in records_in(tmp_path / "logs") if r.data] == [b"Start\n"]


async def test_fast_path_stopped_worker_keeps_what_was_printed(tmp_path: Path) -> None:
    marker = tmp_path / "printed"
    ends: dict[int, TaskOutcome | None] = {}
    with trio.fail_after(30):
        async with running_files() as files:
            await files.writer(str(tmp_path / "logs"))
            reaper = Reaper(lambda task, outcome: ends.__setitem__(task.spec.task_id, outcome))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reaper.run)
                while not reaper.running:
                    await trio.sleep(0.01)
                script = f"echo Start; touch {marker}; sleep 100"
                launched(make_spec(tmp_path, files, ["bash", "-c", script]), reaper)
                while not marker.exists():
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()  # the worker stops, killing its tasks
    assert ends == {0: None}
    assert [r.data for r in records_in(tmp_path / "logs") if r.data] == [b"Start\n"]


async def test_fast_path_spawn_failure_writes_end_before_the_report(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_reaper(tmp_path) as (files, reaper, ends):
            launched(make_spec(tmp_path, files, ["./no-such-program"]), reaper)
    outcome, end_on_disk = ends[0]
    assert outcome is not None and outcome.error is not None
    assert outcome.error.startswith('Cannot execute "./no-such-program"')
    assert end_on_disk


async def test_fast_path_only_with_the_stream_file_open(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file")
    async with running_files() as files:
        spec = make_spec(tmp_path, files, ["echo", "lost"])
        assert not can_launch(spec)  # creating the file is run_task's (and its error)


async def test_fast_path_no_pipes_fails_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_reaper(tmp_path) as (files, _reaper, _ends):
        spec = make_spec(tmp_path, files, ["echo", "lost"])

        def no_pipes(flags: int) -> tuple[int, int]:
            raise OSError(24, "Too many open files")

        monkeypatch.setattr(os, "pipe2", no_pipes)
        assert can_launch(spec)
        assert launch(spec) == TaskOutcome("Streaming: Too many open files (os error 24)")


async def test_fast_path_reports_when_a_grandchild_holds_the_pipe(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_reaper(tmp_path) as (files, reaper, ends):
            # The grandchild keeps stdout open after the task's process is gone: the end
            # waits DRAIN_SECONDS for its EOF, then is reported without END.
            script = "echo a; echo b >&2; (sleep 4; echo late) &"
            launched(make_spec(tmp_path, files, ["bash", "-c", script]), reaper)
    assert ends[0] == (TaskOutcome(), False)
    records = records_in(tmp_path / "logs")
    assert {(r.channel, r.data) for r in records} == {(0, b"a\n"), (1, b"b\n")}

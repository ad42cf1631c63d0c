"""The journal writer service: group commit, flush period, the sink process."""

from pathlib import Path

import pytest
import trio

from hyperq.common.errors import HqError, only_hq_error
from hyperq.server.events import JobCompleted, TaskAssigned
from hyperq.server.journal import Journal, JournalSink
from hyperq.server.journalfile import HEADER, create_journal, read_journal


def open_journal(tmp_path: Path, flush_period: float = 3600) -> Journal:
    path = str(tmp_path / "j")
    create_journal(path)
    return Journal(path, len(HEADER), 1, flush_period)


async def test_concurrent_syncs_share_fsyncs(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)

            async def request(i: int) -> None:
                journal.append([JobCompleted(1.0, i), TaskAssigned(1.0, i, 0, 1)])
                await journal.sync()
                # Acknowledged means on disk.
                records, _ = read_journal(journal.path)
                assert i in [value[2] for _, value in records]

            async with trio.open_nursery() as requests:
                for i in range(1, 41):
                    requests.start_soon(request, i)
            nursery.cancel_scope.cancel()
    records, _ = read_journal(journal.path)
    # Transient events are not persisted; every persisted one is there once, in order.
    assert sorted(value[2] for _, value in records) == list(range(1, 41))
    assert [seq for seq, _ in records] == list(range(1, 41))
    assert journal.fsyncs < 40
    assert sum(journal.batch_sizes) == 40


async def test_shutdown_under_steady_load(tmp_path: Path) -> None:
    """With requests always queued the writer never waits unshielded; a cancel must
    still end it, and every acknowledged request is on disk."""
    journal = open_journal(tmp_path)
    acked: list[int] = []
    enough = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)

            async def requester(first: int) -> None:
                i = first
                while True:
                    journal.append([JobCompleted(1.0, i)])
                    await journal.sync()
                    acked.append(i)
                    if len(acked) >= 200:
                        enough.set()
                    i += 8

            for k in range(8):
                nursery.start_soon(requester, k)
            await enough.wait()
            nursery.cancel_scope.cancel()
    records, _ = read_journal(journal.path)
    on_disk = {value[2] for _, value in records}
    assert len(acked) >= 200
    assert set(acked) <= on_disk


async def test_flush_period_and_final_flush(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, flush_period=0.05)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            journal.append([JobCompleted(1.0, 7)])
            # Nobody asks for a sync: the flush period alone gets it to disk.
            while journal.synced < 1:
                await trio.sleep(0.01)
            journal.flush_period = 3600
            journal.append([JobCompleted(1.0, 8)])
            nursery.cancel_scope.cancel()
    # Cancelling the tree still writes what was queued.
    records, report = read_journal(journal.path)
    assert [value[2] for _, value in records] == [7, 8]
    # While running, the sink keeps zero-filled space ahead; a clean close cuts it off.
    assert Path(journal.path).stat().st_size == report.valid_end == journal.durable_end


async def test_sink_failure_is_an_error_not_a_lost_ack(tmp_path: Path) -> None:
    """If the journal cannot be written, nobody is told their events are on disk."""
    journal = open_journal(tmp_path)
    released: list[int] = []
    with pytest.raises(BaseExceptionGroup) as caught, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            assert journal._sink is not None
            journal._sink.process.kill()

            async def request() -> None:
                journal.append([JobCompleted(1.0, 1)])
                with pytest.raises(trio.ClosedResourceError):
                    await journal.sync()
                released.append(1)

            nursery.start_soon(request)
    error = only_hq_error(caught.value)
    assert error is not None and "its writer process exited" in error.message
    assert released == [1]
    records, _ = read_journal(journal.path)
    assert records == []


async def test_sink_reports_write_errors(tmp_path: Path) -> None:
    """The sink's own error message reaches the server (here: the path is a directory)."""
    with pytest.raises(HqError, match="Is a directory"):
        await JournalSink.open(str(tmp_path), len(HEADER))


async def test_sink_without_a_clean_close_leaves_the_file_alone(tmp_path: Path) -> None:
    """A bare end of input means the server died, and a new one may already be writing:
    the sink then neither truncates nor touches the file again, and lets go of its lock."""
    journal = open_journal(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.append([JobCompleted(1.0, 1)])
        await journal.sync()
        sink = journal._sink
        assert sink is not None
        size_while_running = Path(journal.path).stat().st_size
        assert size_while_running > journal.durable_end  # zero-filled space ahead
        await sink._stdin.aclose()  # as if the server were gone
        with trio.fail_after(10):
            await sink.process.wait()
        assert Path(journal.path).stat().st_size == size_while_running
        journal._closed = True
        nursery.cancel_scope.cancel()
    records, report = read_journal(journal.path)
    assert [value[2] for _, value in records] == [1] and report.torn_tail == 0


def test_restore_refuses_a_journal_another_writer_holds(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fcntl

    from hyperq.server import recovery

    path = str(tmp_path / "j")
    create_journal(path)
    monkeypatch.setattr(recovery, "OTHER_WRITER_WAIT", 0.2)
    with open(path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(HqError, match="is in use by another process"):
            recovery.recover(path)
    recovery.recover(path)  # the lock is gone: fine

"""The journal writer service: group commit, flush period, inline or threaded fsync."""

from pathlib import Path

import trio

from hyperq.server import journal as journal_module
from hyperq.server.events import JobCompleted, TaskAssigned
from hyperq.server.journal import INLINE_FSYNC_LIMIT, Journal
from hyperq.server.journalfile import HEADER, create_journal, open_for_append, read_journal


def open_journal(tmp_path: Path, flush_period: float = 3600) -> Journal:
    path = str(tmp_path / "j")
    create_journal(path)
    return Journal(path, open_for_append(path, len(HEADER)), 1, flush_period)


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


async def test_flush_period_and_final_flush(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    journal = open_journal(tmp_path, flush_period=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.append([JobCompleted(1.0, 7)])
        await trio.sleep(1.5)  # virtual time: the periodic flush has run
        assert journal.synced == 1
        journal.append([JobCompleted(1.0, 8)])
        nursery.cancel_scope.cancel()
    # Cancelling the tree still writes what was queued.
    records, _ = read_journal(journal.path)
    assert [value[2] for _, value in records] == [7, 8]


async def test_slow_fsync_moves_to_a_thread(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    journal = open_journal(tmp_path)
    real = journal_module._write_batch

    def slow(file, records):  # type: ignore[no-untyped-def]
        real(file, records)
        return INLINE_FSYNC_LIMIT * 10

    monkeypatch.setattr(journal_module, "_write_batch", slow)
    threads: list[bool] = []
    real_to_thread = trio.to_thread.run_sync

    async def spy(fn, *args):  # type: ignore[no-untyped-def]
        threads.append(True)
        return await real_to_thread(fn, *args)

    monkeypatch.setattr(trio.to_thread, "run_sync", spy)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            for i in range(3):
                journal.append([JobCompleted(1.0, i + 1)])
                await journal.sync()
            nursery.cancel_scope.cancel()
    # The first (fast-estimated) write ran in the loop; after it proved slow, threads.
    assert len(threads) >= 2

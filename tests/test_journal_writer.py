"""The journal writer service: group commit, flush period, the sink process."""

import enum
import types
from pathlib import Path

import pytest
import trio
import trio.testing
from cbor2 import CBOREncodeError

from hyperq.common.errors import HqError, only_hq_error
from hyperq.server.journal.format import HEADER, create_journal, encode_record, read_journal
from hyperq.server.journal.writer import Journal, JournalSink
from hyperq.server.model.events import (
    Event,
    JobCompleted,
    JobCreated,
    TaskAssigned,
    persisted,
    plain_record,
    to_record,
)
from hyperq.transport.codec import encode_unbounded
from tests.test_events import SAMPLES, T
from tests.test_model import submit_desc


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


async def test_requests_woken_with_the_writer_share_its_batch(tmp_path: Path) -> None:
    """Requests that become runnable in the same scheduling round as the writer's wake
    go out in its batch, in whichever order trio runs that round (it reverses half of
    them: each repetition would catch a writer that flushed first with odds 1/2)."""
    journal = open_journal(tmp_path)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            for repetition in range(12):
                go = trio.Event()

                async def request(i: int, go: trio.Event = go) -> None:
                    await go.wait()
                    journal.append([JobCompleted(1.0, i)])
                    await journal.sync()

                before = len(journal.batch_sizes)
                async with trio.open_nursery() as requests:
                    for i in range(4):
                        requests.start_soon(request, 10 * repetition + i)
                    await trio.testing.wait_all_tasks_blocked()
                    go.set()  # the four requests are runnable in the next round...
                    journal.append([JobCompleted(1.0, 10 * repetition + 9)])
                    await journal.sync()  # ...and so is the writer this wakes
                assert journal.batch_sizes[before:] == [5]
            nursery.cancel_scope.cancel()
    records, _ = read_journal(journal.path)
    assert len(records) == 60


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


async def test_sink_refuses_a_batch_it_cannot_decode(tmp_path: Path) -> None:
    """A malformed batch is an error the server hears about, and nothing is written."""
    path = str(tmp_path / "j")
    create_journal(path)
    sink = await JournalSink.open(path, len(HEADER))
    try:
        with pytest.raises(HqError, match="cannot encode a record"):
            await sink.request(b"W", b"not a marshal dump")
    finally:
        await sink.close()
    assert Path(path).read_bytes() == HEADER


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


def test_restore_refuses_a_journal_another_writer_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import fcntl

    from hyperq.server.journal import recovery

    path = str(tmp_path / "j")
    create_journal(path)
    monkeypatch.setattr(recovery, "OTHER_WRITER_WAIT", 0.2)
    with open(path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with caplog.at_level("INFO"), pytest.raises(HqError, match="is in use by another"):
            recovery.recover(path)
    # The wait is announced once, not left to look like a hang.
    waits = [r.getMessage() for r in caplog.records if "still held by another" in r.getMessage()]
    assert len(waits) == 1 and "waiting up to 0.2 s" in waits[0]
    recovery.recover(path)  # the lock is gone: fine


class Level(enum.IntEnum):
    HIGH = 3


def _server_encoding(event: Event) -> bytes:
    """The CBOR payload of an event's record, encoded in the server as the format says."""
    try:
        return encode_unbounded(to_record(event))
    except (TypeError, ValueError, CBOREncodeError):
        return encode_unbounded(plain_record(event))


async def _journal_bytes(tmp_path: Path, events: list[Event]) -> bytes:
    journal = open_journal(tmp_path)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            journal.append(events[: len(events) // 2])
            await journal.sync()
            journal.append(events[len(events) // 2 :])
            await journal.sync()
            nursery.cancel_scope.cancel()
    return Path(journal.path).read_bytes()


async def test_the_sink_writes_the_records_the_server_would(tmp_path: Path) -> None:
    """The sink encodes what the server hands it (marshalled records) into exactly the
    bytes of the format: header, then each persisted event framed with its seq."""
    events = persisted(SAMPLES)
    expected = HEADER + b"".join(
        encode_record(seq, _server_encoding(event)) for seq, event in enumerate(events, 1)
    )
    assert await _journal_bytes(tmp_path, events) == expected


async def test_records_marshal_cannot_carry_are_encoded_by_the_server(tmp_path: Path) -> None:
    """Values of types other than the builtin ones (an IntEnum, a read-only mapping) do
    not survive marshal; such records reach the disk encoded as before, in the same
    batch as ordinary ones."""
    proxy_desc = types.MappingProxyType({"name": "proxy", "max_fails": None})
    events: list[Event] = [
        JobCompleted(T, 1),
        JobCreated(T, 2, True, {"name": "enum", "max_fails": Level.HIGH}, submit_desc()),
        JobCreated(T, 3, True, proxy_desc, submit_desc()),  # type: ignore[arg-type]
        # Neither marshal nor CBOR takes a path as a map key: the plain form does.
        JobCreated(T, 4, True, {"name": "odd", "max_fails": None, Path("/x"): 1}, submit_desc()),
        JobCompleted(T, 5),
    ]
    expected = HEADER + b"".join(
        encode_record(seq, _server_encoding(event)) for seq, event in enumerate(events, 1)
    )
    data = await _journal_bytes(tmp_path, events)
    assert data == expected
    records, report = read_journal(str(tmp_path / "j"))
    assert report.damaged == [] and report.torn_tail == 0
    assert records[1][1][4] == {"name": "enum", "max_fails": 3}
    assert records[2][1][4] == {"name": "proxy", "max_fails": None}
    assert records[3][1][4] == {"name": "odd", "max_fails": None, "/x": 1}

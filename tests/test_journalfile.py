"""The journal's file format: torn tails, damage in the middle, foreign headers."""

from pathlib import Path

import pytest

from hyperq.common.errors import HqError
from hyperq.server.journal.format import HEADER, encode_record, read_journal
from hyperq.server.journal.prune import keep_event
from hyperq.server.model.events import JobCompleted, ServerStart, ServerStop, from_record, to_record
from hyperq.transport.codec import encode_unbounded


def write_journal(path: Path, count: int) -> list[int]:
    """A journal of `count` events; returns the offset where each record starts."""
    offsets = []
    data = bytearray(HEADER)
    for seq in range(1, count + 1):
        offsets.append(len(data))
        event = JobCompleted(float(seq), seq)
        data += encode_record(seq, encode_unbounded(to_record(event)))
    path.write_bytes(bytes(data))
    return offsets


def jobs_of(records: list) -> list[int]:
    return [from_record(value).job for _, value in records]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write_journal(path, 50)
    records, report = read_journal(str(path))
    assert jobs_of(records) == list(range(1, 51))
    assert report.torn_tail == 0 and report.damaged == []
    assert report.valid_end == path.stat().st_size
    assert report.last_seq == 50


@pytest.mark.parametrize("cut", [1, 5, 12, 20])
def test_torn_tail_is_reported_not_fatal(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "j"
    offsets = write_journal(path, 10)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    records, report = read_journal(str(path))
    assert jobs_of(records) == list(range(1, 10))
    assert report.valid_end == offsets[9]
    assert report.torn_tail == len(data) - cut - offsets[9]


def test_zeroed_block_in_the_middle_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j"
    offsets = write_journal(path, 100)
    data = bytearray(path.read_bytes())
    # Zero records 40..59 (and a bit into the 60th's neighbour boundary).
    start, end = offsets[39], offsets[60]
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    records, report = read_journal(str(path))
    assert jobs_of(records) == list(range(1, 40)) + list(range(61, 101))
    assert report.damaged == [(start, end - start, 21)]
    assert report.torn_tail == 0


def test_garbled_bytes_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j"
    offsets = write_journal(path, 30)
    data = bytearray(path.read_bytes())
    for i in range(offsets[10] + 3, offsets[12] + 5):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    records, report = read_journal(str(path))
    assert jobs_of(records) == list(range(1, 11)) + list(range(14, 31))
    assert len(report.damaged) == 1
    assert report.damaged[0][2] == 3


def test_foreign_and_newer_headers_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b"HQJOURNAL-OTHER-FORMAT")
    with pytest.raises(HqError, match=r"^Cannot open event log file at .*: not a hyperq journal"):
        read_journal(str(path))
    path.write_bytes(HEADER[:-2] + b"\x00\x09")
    with pytest.raises(HqError, match=r"^Cannot open event log file at .*: format version 9"):
        read_journal(str(path))
    with pytest.raises(HqError, match="Cannot open event log file at"):
        read_journal(str(tmp_path / "missing"))


def test_prune_rules() -> None:
    from hyperq.server.model.events import TaskCanceled, WorkerConnected

    assert keep_event(ServerStart(1.0, "abc"), set(), set()) is not None
    assert keep_event(ServerStop(1.0), set(), set()) is not None
    assert keep_event(JobCompleted(1.0, 3), {3}, set()) is not None
    assert keep_event(JobCompleted(1.0, 4), {3}, set()) is None
    assert keep_event(WorkerConnected(1.0, 2, {}), set(), {1}) is None
    canceled = TaskCanceled(1.0, ((1, ((0, 5, 1),)), (2, ((0, 1, 1),))))
    kept = keep_event(canceled, {2}, set())
    assert kept == TaskCanceled(1.0, ((2, ((0, 1, 1),)),))
    assert keep_event(canceled, {7}, set()) is None


def test_zero_filled_tail_is_the_end(tmp_path: Path) -> None:
    """The writer allocates zero-filled space ahead; readers stop there, quietly."""
    path = tmp_path / "j"
    write_journal(path, 30)
    end = path.stat().st_size
    with open(path, "ab") as f:
        f.write(bytes(1 << 20))
    records, report = read_journal(str(path))
    assert jobs_of(records) == list(range(1, 31))
    assert (report.valid_end, report.torn_tail, report.damaged) == (end, 0, [])


def test_torn_record_over_the_zero_tail(tmp_path: Path) -> None:
    """A crash mid-write leaves part of a record over the zeros: a torn tail."""
    path = tmp_path / "j"
    offsets = write_journal(path, 30)
    data = path.read_bytes()
    path.write_bytes(data[: offsets[-1] + 10] + bytes(4 << 20))
    records, report = read_journal(str(path))
    assert jobs_of(records) == list(range(1, 30))
    assert report.valid_end == offsets[-1]
    assert report.torn_tail == len(path.read_bytes()) - offsets[-1]
    assert report.damaged == []


def test_long_zeroed_run_mid_file_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j"
    offsets = write_journal(path, 30)
    data = path.read_bytes()
    path.write_bytes(data[: offsets[10]] + bytes(2 << 20) + data[offsets[11] :])
    records, report = read_journal(str(path))
    assert jobs_of(records) == [*range(1, 11), *range(12, 31)]
    assert report.damaged == [(offsets[10], (2 << 20), 1)]

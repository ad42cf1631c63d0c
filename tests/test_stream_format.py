"""The stream file format without processes: records, torn tails, damage, the index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperq.stream.reader as reader
from hyperq.common.errors import HqError
from hyperq.stream.format import (
    HEAD_SIZE,
    KIND_DATA,
    KIND_END,
    MAX_DATA,
    FileHeader,
    Record,
    encode_header,
    encode_record,
)
from hyperq.stream.reader import load, read_records
from hyperq.stream.writer import FLUSH_THRESHOLD, Pending, create_file, write_all

HEADER = FileHeader("AbCdEf", 3)

ids = st.integers(min_value=0, max_value=2**32 - 1)
records = st.one_of(
    st.builds(
        Record,
        kind=st.just(KIND_DATA),
        time_ms=st.integers(min_value=0, max_value=2**62),
        job=ids,
        task=ids,
        instance=ids,
        channel=st.integers(min_value=0, max_value=1),
        data=st.binary(min_size=1, max_size=300),
    ),
    st.builds(
        Record,
        kind=st.just(KIND_END),
        time_ms=st.integers(min_value=0, max_value=2**62),
        job=ids,
        task=ids,
        instance=ids,
        channel=st.just(0),
        data=st.just(b""),
    ),
)


@settings(max_examples=300)
@given(st.lists(records, max_size=20), st.data())
def test_any_truncation_reads_the_complete_records_before_it(
    written: list[Record], data: st.DataObject
) -> None:
    header = encode_header(HEADER)
    chunks = [encode_record(r) for r in written]
    whole = header + b"".join(chunks)
    cut = data.draw(st.integers(min_value=len(header), max_value=len(whole)))
    # The reader works in chunks; boundaries anywhere must not matter.
    chunk = data.draw(st.sampled_from([HEAD_SIZE + 1, 64, 1000, 1 << 20]))
    saved = reader.CHUNK
    reader.CHUNK = chunk
    try:
        got_header, got, damages = read_records(whole[:cut])
    finally:
        reader.CHUNK = saved
    assert got_header == HEADER
    assert damages == []
    complete = 0
    end = len(header)
    for chunk in chunks:
        end += len(chunk)
        if end > cut:
            break
        complete += 1
    assert got == written[:complete]


def _file(records_: list[Record]) -> bytes:
    return encode_header(HEADER) + b"".join(encode_record(r) for r in records_)


def _data(task: int, text: bytes, time_ms: int = 1) -> Record:
    return Record(KIND_DATA, time_ms, 1, task, 0, 0, text)


def test_damaged_data_byte_skips_that_record_only() -> None:
    written = [_data(t, b"line %d\n" % t) for t in range(3)]
    raw = bytearray(_file(written))
    second = len(encode_header(HEADER)) + len(encode_record(written[0]))
    raw[second + HEAD_SIZE + 2] ^= 0xFF  # inside the second record's data
    _header, got, damages = read_records(bytes(raw))
    assert got == [written[0], written[2]]
    assert len(damages) == 1
    assert damages[0].offset == second
    assert "checksum" in damages[0].reason


def test_damaged_head_byte_resumes_at_the_next_record() -> None:
    written = [_data(t, b"x" * 50) for t in range(4)]
    raw = bytearray(_file(written))
    second = len(encode_header(HEADER)) + len(encode_record(written[0]))
    raw[second + 20] ^= 0x01  # inside the second record's head (its size or ids)
    _header, got, damages = read_records(bytes(raw))
    assert got == [written[0], written[2], written[3]]
    assert [d.offset for d in damages] == [second]


def test_damage_with_nothing_after_it_is_reported() -> None:
    written = [_data(0, b"a"), _data(1, b"b")]
    raw = bytearray(_file(written))
    raw[-HEAD_SIZE - 1 + 5] ^= 0x10
    _header, got, damages = read_records(bytes(raw))
    assert got == [written[0]]
    assert len(damages) == 1


def test_foreign_or_short_header_is_not_ours() -> None:
    assert read_records(b"hqsf0000" + b"\0" * 40)[0] is None
    assert read_records(encode_header(HEADER)[:-1])[0] is None


def test_pending_threshold_and_take() -> None:
    pending = Pending()
    pending.append(b"a" * FLUSH_THRESHOLD)
    assert not pending.over_threshold
    pending.append(b"b")
    assert pending.over_threshold
    assert pending.take() == b"a" * FLUSH_THRESHOLD + b"b"
    assert pending.size == 0 and pending.take() == b""


def _write_dir(directory: Path, uid: str, worker: int, records_: list[Record]) -> Path:
    fd, path = create_file(str(directory), FileHeader(uid, worker))
    try:
        write_all(fd, b"".join(encode_record(r) for r in records_))
    finally:
        os.close(fd)
    return Path(path)


def test_create_file_makes_directory_and_random_name(tmp_path: Path) -> None:
    first = _write_dir(tmp_path / "a" / "b", "U", 1, [])
    second = _write_dir(tmp_path / "a" / "b", "U", 1, [])
    assert first != second
    assert first.suffix == ".hqs" and len(first.stem) == 12
    assert first.read_bytes() == encode_header(FileHeader("U", 1))


def test_index_current_and_superseded_instances(tmp_path: Path) -> None:
    _write_dir(
        tmp_path,
        "U",
        1,
        [Record(KIND_DATA, 1, 1, 0, 0, 0, b"Start\n")],  # killed before its END
    )
    _write_dir(
        tmp_path,
        "U",
        2,
        [
            Record(KIND_DATA, 2, 1, 0, 1, 0, b"Start\n"),
            Record(KIND_DATA, 3, 1, 0, 1, 0, b"End 1\n"),
            Record(KIND_END, 4, 1, 0, 1, 0),
        ],
    )
    index = load(str(tmp_path))
    try:
        assert len(index.files) == 2
        current = index.current(1, 0)
        assert current.instance_id == 1 and current.finished
        assert b"".join(index.data(current, 0)) == b"Start\nEnd 1\n"
        assert sorted(index.jobs[1][0]) == [0, 1]
    finally:
        index.close()


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(HqError, match=r"No such file or directory \(os error 2\)"):
        load(str(tmp_path / "missing"))
    with pytest.raises(HqError, match=r"^No log files found$"):
        load(str(tmp_path))
    (tmp_path / "junk.hqs").write_bytes(b"not a stream file")
    assert load(str(tmp_path)).jobs == {}
    _write_dir(tmp_path, "B-uid", 1, [_data(0, b"b")])
    _write_dir(tmp_path, "A-uid", 1, [_data(0, b"a")])
    with pytest.raises(HqError) as error:
        load(str(tmp_path))
    assert error.value.message == (
        "Found streams from multiple server instances:\nA-uid\nB-uid\n"
        "Use --server-uid=... to specify server uid"
    )
    index = load(str(tmp_path), "A-uid")
    assert b"".join(index.data(index.current(1, 0), 0)) == b"a"
    index.close()


def test_max_data_is_the_record_limit() -> None:
    big = Record(KIND_DATA, 1, 1, 0, 0, 0, b"z" * MAX_DATA)
    assert read_records(_file([big]))[1] == [big]


@pytest.mark.parametrize("chunk", [40, 57, 100, 1 << 20])
def test_index_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(reader, "CHUNK", chunk)
    written = [_data(t, b"%d" % t * (t * 7 % 60 + 1), time_ms=t) for t in range(30)]
    path = _write_dir(tmp_path, "U", 1, written)
    raw = bytearray(path.read_bytes())
    tenth = raw.index(encode_record(written[10]))
    raw[tenth + 5] ^= 0x40  # damage the head of task 10: resync must find task 11
    twentieth = raw.index(encode_record(written[20]))
    raw[twentieth + HEAD_SIZE] ^= 0x01  # damage the data of task 20
    path.write_bytes(bytes(raw[:-3]))  # and tear the last record
    index = load(str(tmp_path))
    try:
        assert sorted(index.jobs[1]) == [t for t in range(29) if t not in (10, 20)]
        for task in index.jobs[1]:
            assert b"".join(index.data(index.current(1, task), 0)) == written[task].data
        assert [d.offset for d in index.damages] == [tenth, twentieth]
    finally:
        index.close()

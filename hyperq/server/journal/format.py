"""The journal's on-disk format: a header, then length- and CRC-framed CBOR records.

    header  = b"HYPERQ-JOURNAL\\0" + format version (u16, big endian)          17 bytes
    record  = length (u32 BE, of the payload) + CRC32 (u32 BE, of seq + payload)
              + seq (u64 BE, 1, 2, 3, ... across the whole file) + payload (CBOR)

The writer keeps zero-filled space allocated past the last record (sink.py);
a reader takes zeros to the end of the file for the end of the journal.

Reading never gives up on damage. A torn tail (a record cut short by a crash) is
reported so the server can truncate it. Damage in the middle (zeroed or garbled bytes)
is skipped: the reader scans forward for the next offset holding a record with a sane
length and a matching CRC, and reports how many bytes were skipped and, from the
sequence numbers on both sides, how many records were lost. No trio here; callers run
these blocking functions in a thread where it matters.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hyperq.common.errors import HqError

# The records are framed by the journal sink, which runs as a bare script; the one
# definition of the framing lives there.
from hyperq.server.journal.sink import RECORD_HEAD
from hyperq.server.journal.sink import encode_record as encode_record
from hyperq.transport.codec import ProtocolError, decode_unbounded

MAGIC = b"HYPERQ-JOURNAL\0"
FORMAT_VERSION = 1
HEADER = MAGIC + struct.pack(">H", FORMAT_VERSION)
# No single event comes near this; a larger length field can only be damage.
MAX_RECORD = 64 * 1024 * 1024


@dataclass
class ReadReport:
    """What reading a journal found besides the records themselves."""

    records: int = 0
    last_seq: int = 0
    valid_end: int = len(HEADER)  # offset just after the last good record
    torn_tail: int = 0  # bytes after valid_end that are not a complete record
    damaged: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, bytes, records)


_NONZERO = re.compile(rb"[^\0]")


def check_header(data: bytes, path: str) -> None:
    # Every failure to open a journal starts the same way (spec journal.md §4), as
    # HyperQueue's do: scripts match on the prefix.
    if len(data) < len(HEADER) or data[: len(MAGIC)] != MAGIC:
        raise HqError(
            f"Cannot open event log file at {path}: not a hyperq journal (unknown header)"
        )
    version = struct.unpack(">H", data[len(MAGIC) : len(HEADER)])[0]
    if version != FORMAT_VERSION:
        raise HqError(
            f"Cannot open event log file at {path}: format version {version}; this hyperq "
            f"reads version {FORMAT_VERSION}"
        )


def _record_at(data: memoryview, offset: int) -> tuple[int, bytes, int] | None:
    """(seq, payload, end) of a valid record at offset, or None."""
    end_head = offset + RECORD_HEAD.size
    if end_head > len(data):
        return None
    length, crc, seq = RECORD_HEAD.unpack_from(data, offset)
    if length > MAX_RECORD or end_head + length > len(data):
        return None
    payload = bytes(data[end_head : end_head + length])
    if zlib.crc32(payload, zlib.crc32(seq.to_bytes(8, "big"))) != crc:
        return None
    return seq, payload, end_head + length


def iter_records(
    data: bytes, path: str, report: ReadReport, start: int | None = None
) -> Iterator[tuple[int, Any]]:
    """(seq, decoded payload) of every good record from `start` (a record boundary, by
    default the first record); fills `report` as it goes."""
    check_header(data, path)
    view = memoryview(data)
    size = len(data)
    offset = len(HEADER) if start is None else start
    unpack_head = RECORD_HEAD.unpack_from
    head_size = RECORD_HEAD.size
    crc32 = zlib.crc32
    while offset < size:
        # The common case inline (a restore reads every record): a whole, intact record.
        if offset + head_size <= size:
            length, crc, seq = unpack_head(view, offset)
            start = offset + head_size
            end = start + length
            if length <= MAX_RECORD and end <= size:
                payload = view[start:end]
                if crc32(payload, crc32(view[offset + 8 : start])) == crc:
                    try:
                        value = decode_unbounded(payload)
                    except ProtocolError:
                        pass
                    else:
                        report.records += 1
                        report.last_seq = seq
                        report.valid_end = end
                        offset = end
                        yield seq, value
                        continue
        # Not a record here. Zeros to the end: the space the writer allocates ahead
        # (sink.py), so the journal simply ends here.
        if _NONZERO.search(data, offset) is None:
            return
        # Otherwise a torn tail if nothing valid follows, else damage to skip.
        resume = _resync(view, offset + 1)
        if resume is None:
            report.torn_tail = len(data) - offset
            return
        next_seq = RECORD_HEAD.unpack_from(view, resume)[2]
        lost = max(next_seq - report.last_seq - 1, 0)
        report.damaged.append((offset, resume - offset, lost))
        offset = resume


def _resync(view: memoryview, start: int) -> int | None:
    data = view.obj
    assert isinstance(data, bytes | bytearray)
    offset = start
    last = len(view) - RECORD_HEAD.size
    while offset <= last:
        if not any(view[offset : offset + RECORD_HEAD.size]):
            # No record header is all zeros: jump over a zeroed run (damage, or the
            # allocated tail behind a torn record) instead of trying every byte of it.
            found = _NONZERO.search(data, offset)
            if found is None:
                return None
            offset = max(found.start() - RECORD_HEAD.size + 1, offset + 1)
            continue
        if _record_at(view, offset) is not None:
            return offset
        offset += 1
    return None


def read_journal(path: str) -> tuple[list[tuple[int, Any]], ReadReport]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise HqError(f"Cannot open event log file at {path}: {error.strerror}") from None
    report = ReadReport()
    records = list(iter_records(data, path, report))
    return records, report


def create_journal(path: str) -> None:
    """A new, empty journal (header only), durable before anything is appended."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, HEADER)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_after(path: str, valid_end: int) -> None:
    """Cut off whatever follows the last good record (a torn tail, zero-filled space),
    durably, before the journal is appended to."""
    fd = os.open(path, os.O_WRONLY)
    try:
        if os.fstat(fd).st_size != valid_end:
            os.ftruncate(fd, valid_end)
            os.fsync(fd)
    finally:
        os.close(fd)

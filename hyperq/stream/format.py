"""The bytes of a stream file: header and records (stream.md §3, with CRC framing).

Layout: the 8-byte magic `hqpystc1`, a u32 LE length, UTF-8 JSON
`{"server_uid": ..., "worker_id": ...}`; then records, each a 36-byte head followed by
`size` data bytes. The head is `<2sBBqIIIIII`: sync mark `hR`, kind (1 DATA, 2 END),
channel (0 stdout, 1 stderr), time (ms since the epoch), job, task, instance, size,
CRC32 of the data, CRC32 of the 32 head bytes before it.

Why two CRCs: a damaged data byte leaves the head (and so the size) trustworthy, and only
that record is lost; a damaged head is found by its own CRC, and the reader searches for
the next sync mark whose head checks out. A torn tail (a record cut by a crash) is an
incomplete head or data shorter than `size` at the end of the file. Pure bytes: no I/O.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

MAGIC = b"hqpystc1"
SYNC = b"hR"
HEAD = struct.Struct("<2sBBqIIIII")  # everything but the head's own CRC
HEAD_CRC = struct.Struct("<I")
HEAD_SIZE = HEAD.size + HEAD_CRC.size
KIND_DATA = 1
KIND_END = 2
STDOUT = 0
STDERR = 1
# A pipe read of at most this many bytes becomes one record (stream.md §2).
MAX_DATA = 16 * 1024
# A header longer than this is not ours (a foreign file that happens to share the magic).
MAX_HEADER_JSON = 64 * 1024


@dataclass(frozen=True)
class FileHeader:
    server_uid: str
    worker_id: int


@dataclass(frozen=True)
class Record:
    kind: int
    time_ms: int
    job: int
    task: int
    instance: int
    channel: int
    data: bytes = b""


def encode_header(header: FileHeader) -> bytes:
    body = json.dumps({"server_uid": header.server_uid, "worker_id": header.worker_id}).encode()
    return MAGIC + struct.pack("<I", len(body)) + body


def decode_header(data: bytes) -> tuple[FileHeader, int] | None:
    """(header, its length in bytes) from the start of a file, or None if not ours."""
    if len(data) < len(MAGIC) + 4 or data[: len(MAGIC)] != MAGIC:
        return None
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    if length > MAX_HEADER_JSON or len(data) < start + length:
        return None
    try:
        body = json.loads(data[start : start + length])
        header = FileHeader(str(body["server_uid"]), int(body["worker_id"]))
    except (ValueError, KeyError, TypeError):
        return None
    return header, start + length


def encode_record(record: Record) -> bytes:
    """One record, head and data, ready for a single write."""
    if record.kind == KIND_END:
        return encode_end(record.time_ms, record.job, record.task, record.instance)
    return encode_data(
        record.time_ms, record.job, record.task, record.instance, record.channel, record.data
    )


def encode_data(
    time_ms: int, job: int, task: int, instance: int, channel: int, data: bytes
) -> bytes:
    head = HEAD.pack(
        SYNC, KIND_DATA, channel, time_ms, job, task, instance, len(data), zlib.crc32(data)
    )
    return head + HEAD_CRC.pack(zlib.crc32(head)) + data


def encode_end(time_ms: int, job: int, task: int, instance: int) -> bytes:
    head = HEAD.pack(SYNC, KIND_END, 0, time_ms, job, task, instance, 0, 0)
    return head + HEAD_CRC.pack(zlib.crc32(head))


class Head(NamedTuple):
    """A record's head whose CRC checked out; `offset` is where its data starts.

    A tuple, not a dataclass: the reader makes one per record, millions at a time."""

    kind: int
    channel: int
    time_ms: int
    job: int
    task: int
    instance: int
    size: int
    data_crc: int
    offset: int


FULL_HEAD = struct.Struct(HEAD.format + "I")


def decode_head(buffer: bytes | memoryview, at: int, base: int = 0) -> Head | None:
    """The head at `at` if its sync mark and CRC are right and its fields make sense;
    `base` is the buffer's position in the file (the head's `offset` is absolute)."""
    try:
        sync, kind, channel, time_ms, job, task, instance, size, data_crc, crc = (
            FULL_HEAD.unpack_from(buffer, at)
        )
    except struct.error:
        return None
    if sync != SYNC or kind not in (KIND_DATA, KIND_END) or channel > STDERR or size > MAX_DATA:
        return None
    if kind == KIND_END and size != 0:
        return None
    if zlib.crc32(buffer[at : at + HEAD.size]) != crc:
        return None
    return Head(kind, channel, time_ms, job, task, instance, size, data_crc, base + at + HEAD_SIZE)

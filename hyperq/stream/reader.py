"""Reading a stream directory: scan files record by record, index tasks' instances.

Files are read in chunks of CHUNK bytes and the index keeps only each record's place
(channel, offset, size, time), never its data, so indexing a directory of many gigabytes
holds one chunk at a time, and `cat` of one task reads that task's records (`pread`,
neighbours merged into one read), not the whole directory. A torn tail ends a file
silently; a damaged record is reported (`Index.damages`) and skipped, and reading
resumes at the next record whose head checks out.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from hyperq.common.errors import HqError
from hyperq.stream.format import (
    FULL_HEAD,
    HEAD,
    HEAD_SIZE,
    KIND_DATA,
    KIND_END,
    MAGIC,
    MAX_DATA,
    MAX_HEADER_JSON,
    STDERR,
    SYNC,
    FileHeader,
    Head,
    Record,
    decode_head,
    decode_header,
)

log = logging.getLogger(__name__)

SUFFIX = ".hqs"
HEADER_LIMIT = len(MAGIC) + 4 + MAX_HEADER_JSON
CHUNK = 1 << 20
HEAD_CRC_AT = HEAD.size  # the head's bytes its CRC covers
_KINDS = (KIND_DATA, KIND_END)

Read = Callable[[int, int], bytes]
"""read(offset, n): up to n bytes of the file from offset (fewer at its end)."""


@dataclass(frozen=True)
class Damage:
    """A stretch of a file that could not be read as records."""

    path: str
    offset: int
    reason: str

    def message(self) -> str:
        return f"Damaged record in {self.path} at byte {self.offset} skipped: {self.reason}"


def scan(read: Read, start: int, end: int, path: str = "") -> Iterator[Head | Damage]:
    """Every good record head in [start, end), and a Damage for each stretch skipped."""
    # decode_head's checks, inlined: this loop runs once per record of a directory that
    # may hold millions, and a call per record was a third of indexing.
    unpack = FULL_HEAD.unpack_from
    crc32 = zlib.crc32
    new_head = tuple.__new__  # a Head without NamedTuple's keyword handling
    buffer = b""
    view = memoryview(buffer)
    base = start  # file offset of buffer[0]
    pos = start
    while end - pos >= HEAD_SIZE:
        at = pos - base
        if at < 0 or at + HEAD_SIZE > len(buffer):
            buffer = read(pos, CHUNK)
            view = memoryview(buffer)
            base = pos
            at = 0
            if len(buffer) < HEAD_SIZE:
                return  # the file shrank since it was measured
        sync, kind, channel, time_ms, job, task, instance, size, data_crc, crc = unpack(buffer, at)
        if (
            sync != SYNC
            or kind not in _KINDS
            or channel > STDERR
            or size > MAX_DATA
            or (kind == KIND_END and size != 0)
            or crc32(view[at : at + HEAD_CRC_AT]) != crc
        ):
            resume = _resync(read, pos + 1, end)
            if resume is None:
                yield Damage(path, pos, "no valid record after it")
                return
            yield Damage(path, pos, f"{resume - pos} bytes not a valid record")
            pos = resume
            continue
        offset = pos + HEAD_SIZE
        stop = offset + size
        if stop > end:
            return  # torn tail: the record was being written when the file ended
        if size:
            if stop <= base + len(buffer):
                data: bytes | memoryview = view[offset - base : stop - base]
            else:
                data = read(offset, size)
            if crc32(data) != data_crc:
                yield Damage(path, pos, "data checksum mismatch")
                pos = stop
                continue
        yield new_head(Head, (kind, channel, time_ms, job, task, instance, size, data_crc, offset))
        pos = stop


def _resync(read: Read, pos: int, end: int) -> int | None:
    """The offset of the next valid head at or after `pos`, or None."""
    while end - pos >= HEAD_SIZE:
        chunk = read(pos, CHUNK + HEAD_SIZE)
        at = chunk.find(SYNC)
        while 0 <= at and at + HEAD_SIZE <= len(chunk):
            if decode_head(chunk, at) is not None:
                return pos + at
            at = chunk.find(SYNC, at + 1)
        pos += CHUNK
    return None


def read_records(data: bytes) -> tuple[FileHeader | None, list[Record], list[Damage]]:
    """A whole file's bytes as records (for tests and small files)."""
    decoded = decode_header(data)
    if decoded is None:
        return None, [], []
    header, start = decoded
    records: list[Record] = []
    damages: list[Damage] = []

    def read(offset: int, n: int) -> bytes:
        return data[offset : offset + n]

    for item in scan(read, start, len(data)):
        if isinstance(item, Damage):
            damages.append(item)
            continue
        payload = data[item.offset : item.offset + item.size]
        records.append(
            Record(
                item.kind,
                item.time_ms,
                item.job,
                item.task,
                item.instance,
                item.channel,
                bytes(payload),
            )
        )
    return header, records, damages


# (channel, offset, size, time_ms) of one DATA record
RecordRef = tuple[int, int, int, int]
# Reads of records closer than this in one file are merged into one read.
SPAN = 1 << 20


class Instance:
    """One run of a task: its file and its DATA records in file order."""

    __slots__ = ("file", "finished", "instance_id", "records")

    def __init__(self, instance_id: int, file: int) -> None:
        self.instance_id = instance_id
        self.file = file  # index into Index.files
        self.records: list[RecordRef] = []
        self.finished = False

    def total(self, channel: int) -> int:
        return sum(size for chan, _offset, size, _time in self.records if chan == channel)


@dataclass
class StreamFile:
    path: str
    header: FileHeader
    fd: int
    size: int  # when indexed; records appended later are not seen

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)


@dataclass
class Index:
    files: list[StreamFile] = field(default_factory=list)
    # job -> task -> instance id -> Instance
    jobs: dict[int, dict[int, dict[int, Instance]]] = field(default_factory=dict)
    damages: list[Damage] = field(default_factory=list)

    def current(self, job: int, task: int) -> Instance:
        instances = self.jobs[job][task]
        return instances[max(instances)]

    def data(self, instance: Instance, channel: int) -> Iterator[bytes]:
        """The channel's bytes of `instance`, record by record, in file order."""
        file = instance.file
        return self.read_many(
            (file, offset, size)
            for chan, offset, size, _time in instance.records
            if chan == channel
        )

    def read_many(self, refs: Iterable[tuple[int, int, int]]) -> Iterator[bytes]:
        """The data of (file, offset, size) records in the order given; records close
        together are read with one call (tasks that ran in turn sit side by side)."""
        span_file = -1
        span_start = span_end = 0
        pending: list[tuple[int, int]] = []
        for file, offset, size in refs:
            if (
                pending
                and file == span_file
                and span_start <= offset
                and offset + size - span_start <= SPAN
            ):
                pending.append((offset, size))
                span_end = max(span_end, offset + size)
                continue
            if pending:
                yield from _cut(self.files[span_file], span_start, span_end, pending)
            span_file, span_start, span_end = file, offset, offset + size
            pending = [(offset, size)]
        if pending:
            yield from _cut(self.files[span_file], span_start, span_end, pending)

    def close(self) -> None:
        for stream_file in self.files:
            os.close(stream_file.fd)
        self.files.clear()


def _cut(
    stream_file: StreamFile, start: int, end: int, pieces: list[tuple[int, int]]
) -> Iterator[bytes]:
    data = stream_file.read(start, end - start)
    for offset, size in pieces:
        yield data[offset - start : offset - start + size]


def _os_error_text(error: OSError) -> str:
    code = error.errno or 0
    return f"{os.strerror(code)} (os error {code})"


def _open(path: str) -> tuple[int, FileHeader, int, int] | None:
    """(fd, header, where records start, size) of one of our files, or None (skipped)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        log.debug("Cannot read stream file %s: %s", path, error)
        return None
    try:
        size = os.fstat(fd).st_size
        decoded = decode_header(os.pread(fd, HEADER_LIMIT, 0))
    except OSError as error:
        log.debug("Cannot read stream file %s: %s", path, error)
        decoded = None
    if decoded is None:
        log.debug("Skipping %s: not a hyperq stream file", path)
        os.close(fd)
        return None
    header, start = decoded
    return fd, header, start, size


def load(directory: str, server_uid: str | None = None) -> Index:
    """The index of every `*.hqs` file in `directory` (stream.md §4.1); HqError on failure."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise HqError(_os_error_text(error)) from None
    candidates = [name for name in names if name.endswith(SUFFIX)]
    if not candidates:
        raise HqError("No log files found")
    index = Index()
    for name in candidates:
        path = os.path.join(directory, name)
        opened = _open(path)
        if opened is None:
            continue
        fd, header, start, size = opened
        if server_uid is not None and header.server_uid != server_uid:
            os.close(fd)
            continue
        index.files.append(StreamFile(path, header, fd, size))
        _index_file(index, len(index.files) - 1, start)
    uids = sorted({f.header.server_uid for f in index.files})
    if len(uids) > 1:
        index.close()
        raise HqError(
            "Found streams from multiple server instances:\n"
            + "\n".join(uids)
            + "\nUse --server-uid=... to specify server uid"
        )
    return index


def _index_file(index: Index, number: int, start: int) -> None:
    stream_file = index.files[number]
    jobs = index.jobs
    # A run's records tend to follow each other (a task's DATA, then its END): the last
    # instance found is tried first.
    last_key: tuple[int, int, int] | None = None
    last: Instance | None = None
    for item in scan(stream_file.read, start, stream_file.size, stream_file.path):
        if isinstance(item, Damage):
            index.damages.append(item)
            continue
        kind, channel, time_ms, job, task, instance_id, size, _crc, offset = item
        key = (job, task, instance_id)
        if key == last_key:
            instance = last
        else:
            tasks = jobs.get(job)
            if tasks is None:
                tasks = jobs[job] = {}
            instances = tasks.get(task)
            if instances is None:
                instances = tasks[task] = {}
            instance = instances.get(instance_id)
            if instance is None:
                instance = instances[instance_id] = Instance(instance_id, number)
            elif instance.file != number:
                # One run lives on one worker, so in one file; a copy of the same file
                # (e.g. gathered twice) must not double its output.
                instance = None
            last_key, last = key, instance
        if instance is None:
            continue
        if kind == KIND_DATA:
            instance.records.append((channel, offset, size, time_ms))
        else:
            instance.finished = True

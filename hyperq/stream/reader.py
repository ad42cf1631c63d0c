"""Reading a stream directory: scan files record by record, index tasks' instances.

Files are memory-mapped, and the index keeps only each record's offset, size and time
(in arrays, 8 bytes a field), so `cat` of one task in a directory of many gigabytes
touches that task's bytes, not the whole directory, and holds no data in the heap.
A torn tail ends a file silently; a damaged record is reported (`Index.damages`) and
skipped, and reading resumes at the next record whose head checks out.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from hyperq.common.errors import HqError
from hyperq.stream.format import (
    HEAD_SIZE,
    KIND_DATA,
    MAGIC,
    MAX_HEADER_JSON,
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


@dataclass(frozen=True)
class Damage:
    """A stretch of a file that could not be read as records."""

    path: str
    offset: int
    reason: str

    def message(self) -> str:
        return f"Damaged record in {self.path} at byte {self.offset} skipped: {self.reason}"


def scan(buffer: bytes | mmap.mmap, start: int, path: str = "") -> Iterator[Head | Damage]:
    """Every good record head from `start`, and a Damage for each stretch skipped."""
    end = len(buffer)
    view = memoryview(buffer)
    try:
        pos = start
        while end - pos >= HEAD_SIZE:
            head = decode_head(view, pos)
            if head is None:
                resume = _resync(buffer, view, pos + 1, end)
                if resume is None:
                    yield Damage(path, pos, "no valid record after it")
                    return
                yield Damage(path, pos, f"{resume - pos} bytes not a valid record")
                pos = resume
                continue
            stop = head.offset + head.size
            if stop > end:
                return  # torn tail: the record was being written when the file ended
            if head.size and zlib.crc32(view[head.offset : stop]) != head.data_crc:
                yield Damage(path, pos, "data checksum mismatch")
            else:
                yield head
            pos = stop
    finally:
        view.release()


def _resync(buffer: bytes | mmap.mmap, view: memoryview, pos: int, end: int) -> int | None:
    while True:
        pos = buffer.find(SYNC, pos)
        if pos < 0 or end - pos < HEAD_SIZE:
            return None
        if decode_head(view, pos) is not None:
            return pos
        pos += 1


def read_records(data: bytes) -> tuple[FileHeader | None, list[Record], list[Damage]]:
    """A whole file's bytes as records (for tests and small files)."""
    decoded = decode_header(data)
    if decoded is None:
        return None, [], []
    header, start = decoded
    records: list[Record] = []
    damages: list[Damage] = []
    for item in scan(data, start):
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


@dataclass
class Channel:
    """One channel of one instance: where its records are (file order)."""

    offsets: array = field(default_factory=lambda: array("q"))
    sizes: array = field(default_factory=lambda: array("q"))
    times: array = field(default_factory=lambda: array("q"))

    @property
    def total(self) -> int:
        return sum(self.sizes)


@dataclass
class Instance:
    instance_id: int
    file: int  # index into Index.files
    channels: tuple[Channel, Channel] = field(default_factory=lambda: (Channel(), Channel()))
    finished: bool = False


@dataclass
class StreamFile:
    path: str
    header: FileHeader
    buffer: bytes | mmap.mmap


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
        buffer = self.files[instance.file].buffer
        chan = instance.channels[channel]
        for offset, size in zip(chan.offsets, chan.sizes, strict=True):
            yield buffer[offset : offset + size]

    def close(self) -> None:
        for stream_file in self.files:
            if isinstance(stream_file.buffer, mmap.mmap):
                with contextlib.suppress(BufferError):
                    stream_file.buffer.close()


def _os_error_text(error: OSError) -> str:
    code = error.errno or 0
    return f"{os.strerror(code)} (os error {code})"


def _map(path: str) -> bytes | mmap.mmap | None:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as error:
        log.debug("Cannot read stream file %s: %s", path, error)
        return None


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
        buffer = _map(path)
        if buffer is None:
            continue
        decoded = decode_header(buffer[:HEADER_LIMIT])
        if decoded is None:
            log.debug("Skipping %s: not a hyperq stream file", path)
            continue
        header, start = decoded
        if server_uid is not None and header.server_uid != server_uid:
            continue
        index.files.append(StreamFile(path, header, buffer))
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
    for item in scan(stream_file.buffer, start, stream_file.path):
        if isinstance(item, Damage):
            index.damages.append(item)
            continue
        instances = jobs.setdefault(item.job, {}).setdefault(item.task, {})
        instance = instances.get(item.instance)
        if instance is None:
            instance = instances[item.instance] = Instance(item.instance, number)
        elif instance.file != number:
            # One run lives on one worker, so in one file; a copy of the same file
            # (e.g. gathered twice) must not double its output.
            continue
        if item.kind == KIND_DATA:
            chan = instance.channels[item.channel]
            chan.offsets.append(item.offset)
            chan.sizes.append(item.size)
            chan.times.append(item.time_ms)
        else:
            instance.finished = True

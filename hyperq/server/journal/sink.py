"""The journal's disk writer: a tiny child process that encodes, appends and fsyncs.

Run as a plain script (`python -I -S sink.py <dir of cbor2>`, stdlib and cbor2
only, so it starts in a few milliseconds) by the server's journal writer service. An
fsync blocks whoever calls it for 0.3-2 ms here; in the server's event loop that
stalled every other request, and handing it to a thread cost ~0.25 ms of GIL and futex
traffic per batch on these machines. A process costs the loop one pipe round trip.

The server's CPU is what limits how many requests it answers, so the sink also does
the encoding: the server sends a batch as one `marshal` dump of (seq, record) pairs,
one C call per batch (CBOR-encoding a submit's record cost the busy server 25-50 µs of
CPU), and the sink frames each as a CBOR record (`encode_record`). A record the
server could not marshal arrives already encoded, as bytes.

The sink keeps zero-filled space allocated past the journal's end and writes records
over it: an fdatasync then flushes data only, with no file-size change for the
filesystem to journal, which halves its CPU cost and cuts its latency by a quarter
here. Readers take a zero-filled tail for the end of the journal; a clean close cuts
it off, so after a graceful stop the file ends at its last record.

Protocol over stdin/stdout, one request at a time:
    request  = op (1 byte) + length (u32 BE) + payload
      b"O"   payload = offset (u64 BE) + path (UTF-8): open the journal for writing
             at offset (the server has already cut off any torn tail)
      b"W"   payload = marshal dump of a list of (seq, record): each record (a list)
             is CBOR-encoded, or is the encoded payload already (bytes); all are
             framed, written, then fdatasync-ed
      b"C"   (empty) clean close: cut off the zero-filled space, reply, exit
    reply    = b"k" + seconds the request took (f64 BE) + bytes it wrote (u64 BE)
             | b"e" + length (u32 BE) + 12 zero bytes + message (UTF-8), after which
               the sink exits
End of stdin without b"C" (the server died): close the file untouched and exit 0. The
sink holds an exclusive flock on the journal while it has it open.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import select
import struct
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

HEAD = struct.Struct(">cI")
OFFSET = struct.Struct(">Q")
DONE = struct.Struct(">dQ")  # seconds taken, bytes written
ERROR = struct.Struct(">I12x")  # message length, padded to the size of DONE
REPLY_HEAD = 1 + DONE.size  # b"k" + DONE, or b"e" + ERROR
RECORD_HEAD = struct.Struct(">IIQ")  # length, crc, seq (format.py: the format)


def encode_record(seq: int, payload: bytes) -> bytes:
    """One journal record: length, CRC32 of seq + payload, seq, payload."""
    seq_bytes = seq.to_bytes(8, "big")
    crc = zlib.crc32(payload, zlib.crc32(seq_bytes))
    return RECORD_HEAD.pack(len(payload), crc, seq) + payload


def encode_batch(data: bytes, encode: Callable[[Any], bytes]) -> bytes:
    """The framed records of a b"W" request's payload."""
    out = []
    for seq, record in marshal.loads(data):
        out.append(encode_record(seq, record if type(record) is bytes else encode(record)))
    return b"".join(out)


class _Input:
    """Requests off stdin, read in large chunks (one syscall per burst, not two per
    request)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def read_exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            chunk = os.read(self.fd, max(1 << 16, size - len(self.buffer)))
            if not chunk:
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Zero-filled space is added this much at a time (one write and fsync), ahead of need
# when the sink is idle and less than LOW_WATER is left.
CHUNK = 1 << 20
LOW_WATER = CHUNK // 4


class Sink:
    def __init__(self) -> None:
        self.fd = -1
        self.end = 0  # where the next record goes
        self.allocated = 0  # file size, zero-filled past `end`

    def open(self, path: str, offset: int) -> None:
        self.close(clean=False)
        self.fd = os.open(path, os.O_RDWR)
        # Held while this sink writes: a restarted server waits for a sink its crashed
        # predecessor left behind, and a second server on the same journal is refused.
        with contextlib.suppress(OSError):  # filesystems without locks
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.end = offset
        self.allocated = max(os.fstat(self.fd).st_size, offset)

    def write(self, data: bytes) -> None:
        """Append `data` and fdatasync."""
        if self.fd < 0:
            raise OSError("no journal is open")
        if self.end + len(data) > self.allocated:
            self.extend(self.end + len(data) + CHUNK)
        view = memoryview(data)
        offset = self.end
        while view:
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written
        os.fdatasync(self.fd)
        self.end = offset

    def extend(self, size: int) -> None:
        zeros = bytes(min(size - self.allocated, CHUNK))
        while self.allocated < size:
            piece = zeros[: size - self.allocated]
            self.allocated += os.pwrite(self.fd, piece, self.allocated)
        # A full fsync: the file's size changed, and later fdatasyncs rely on it.
        os.fsync(self.fd)

    def room_is_low(self) -> bool:
        return self.fd >= 0 and self.allocated - self.end < LOW_WATER

    def maybe_extend(self) -> None:
        if self.room_is_low():
            self.extend(self.allocated + CHUNK)

    def close(self, *, clean: bool) -> None:
        """`clean`: the server asked (graceful stop), so cut off the zero-filled space.
        On a bare end of input the server may have crashed and a new one may already be
        appending to this file: then touch nothing."""
        if self.fd >= 0:
            if clean:
                os.ftruncate(self.fd, self.end)
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def serve(inp: int, out: int, encode: Callable[[Any], bytes]) -> int:
    sink = Sink()
    requests = _Input(inp)
    try:
        while True:
            head = requests.read_exactly(HEAD.size)
            if head is None:
                sink.close(clean=False)
                return 0
            op, length = HEAD.unpack(head)
            payload = requests.read_exactly(length) if length else b""
            if payload is None:
                sink.close(clean=False)
                return 0
            started = time.perf_counter()
            wrote = 0
            if op == b"O":
                (offset,) = OFFSET.unpack_from(payload)
                sink.open(payload[OFFSET.size :].decode(), offset)
            elif op == b"W":
                try:
                    records = encode_batch(payload, encode)
                except Exception as error:  # a malformed batch or an unencodable record
                    raise ValueError(f"cannot encode a record: {error!r}") from error
                sink.write(records)
                wrote = len(records)
            elif op == b"C":
                sink.close(clean=True)
                _write_all(out, b"k" + DONE.pack(time.perf_counter() - started, 0))
                return 0
            else:
                raise ValueError(f"unknown request {op!r}")
            _write_all(out, b"k" + DONE.pack(time.perf_counter() - started, wrote))
            if wrote and sink.room_is_low() and not requests.buffer:
                if not select.select([inp], [], [], 0)[0]:
                    sink.maybe_extend()  # idle: make room now rather than in a request
    except (OSError, ValueError, struct.error) as error:
        message = str(error).encode()
        try:
            _write_all(out, b"e" + ERROR.pack(len(message)) + message)
        except OSError:
            pass
        return 1


def _no_wakeup_preemption() -> None:
    """SCHED_BATCH: a woken sink does not preempt whatever runs on the CPU it is put
    on. Left at the default, the kernel may put it on the CPU of the server that just
    woke it, pushing the server, busy answering the requests the sink makes durable,
    off its CPU. An idle CPU still runs the sink at once."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no matter
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def main(argv: list[str]) -> int:
    # Started with -S (no site: a fast start), so cbor2 is found where the server says.
    sys.path.extend(argv[1:])
    import cbor2

    _no_wakeup_preemption()
    return serve(0, 1, cbor2.dumps)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

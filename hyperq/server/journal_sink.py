"""The journal's disk writer: a tiny child process that appends and fsyncs.

Run as a plain script (`python -I -S journal_sink.py`, stdlib only, so it starts in a
few milliseconds) by the server's journal writer service. An fsync blocks whoever
calls it for 0.3-2 ms here; in the server's event loop that stalled every other
request, and handing it to a thread cost ~0.25 ms of GIL and futex traffic per batch
on these machines. A process costs the loop one pipe round trip.

Protocol over stdin/stdout, one request at a time:
    request  = op (1 byte) + length (u32 BE) + payload
      b"O"   payload = offset (u64 BE) + path (UTF-8): open the journal for writing
             at offset (the server has already cut off any torn tail)
      b"W"   payload = bytes to append; written, then fsynced
    reply    = b"k" + seconds the write and fsync took (f64 BE)
             | b"e" + length (u32 BE) + message (UTF-8), after which the sink exits
End of stdin: close the file and exit 0.
"""

from __future__ import annotations

import os
import struct
import sys
import time

HEAD = struct.Struct(">cI")
OFFSET = struct.Struct(">Q")
TOOK = struct.Struct(">d")


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(inp: int, out: int) -> int:
    journal = -1
    try:
        while True:
            head = _read_exactly(inp, HEAD.size)
            if head is None:
                return 0
            op, length = HEAD.unpack(head)
            payload = _read_exactly(inp, length) if length else b""
            if payload is None:
                return 0
            started = time.perf_counter()
            if op == b"O":
                if journal >= 0:
                    os.close(journal)
                (offset,) = OFFSET.unpack_from(payload)
                journal = os.open(payload[OFFSET.size :].decode(), os.O_WRONLY)
                os.lseek(journal, offset, os.SEEK_SET)
            elif op == b"W":
                if journal < 0:
                    raise OSError("no journal is open")
                _write_all(journal, payload)
                os.fdatasync(journal)
            else:
                raise ValueError(f"unknown request {op!r}")
            _write_all(out, b"k" + TOOK.pack(time.perf_counter() - started))
    except (OSError, ValueError, struct.error) as error:
        message = str(error).encode()
        try:
            _write_all(out, b"e" + struct.pack(">I", len(message)) + message)
        except OSError:
            pass
        return 1
    finally:
        if journal >= 0:
            os.close(journal)


if __name__ == "__main__":
    sys.exit(serve(0, 1))

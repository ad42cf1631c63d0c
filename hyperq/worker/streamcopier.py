"""The stream copier: a small process that appends a worker's stream records to a file.

Why a process and not `trio.to_thread.run_sync` per write: a task's records must be in
the file before its result is reported, so every streamed task ends with a write. A
thread hop for it cost the worker ~65 µs of CPU and three context switches per task
(waking the thread, then the GIL going back and forth between it and the event loop),
more than the rest of streaming. Writing to a pipe never waits for the disk, and the
copier has a GIL of its own: the same write costs the worker ~8 µs and the copier
~10-20 µs, and the worker's whole streaming cost per one-line task fell from ~260 to
~130 µs (a machine loaded 20-30, CPU time). The event loop still never blocks on the disk.

Protocol: the worker writes frames `<u32 LE size><bytes>` to the copier's stdin; the
copier appends their bytes to the file (whole frames, several with one write when they
queue up) and then answers each frame on its stdout with a u32 LE status, 0 or the
errno of the failed write (it exits after a failure). On EOF it exits. It lives in a
process group of its own, so that Ctrl-C or a batch system's signal to the worker's
process group does not end it before the worker has written its tasks' last output; if
the worker dies, its stdin reaches EOF and it exits too. Not a session of its own (as the
guardian has): with the kernel's autogroup scheduling a new session is a new scheduling
group, and on a busy machine the copier then waited longer for a CPU at every write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import subprocess
import sys

import trio

# The copier's program: standard library only, no imports of hyperq (fast start).
# It reads 64 KiB at a time: a 1 MiB read buffer per frame doubled its CPU time.
COPIER_SOURCE = r"""
import os, struct, sys
target = int(sys.argv[1])
buffer = bytearray()
while True:
    data = os.read(0, 1 << 16)
    if not data:
        break
    buffer += data
    pieces = []
    at = 0
    while len(buffer) - at >= 4:
        (size,) = struct.unpack_from("<I", buffer, at)
        if len(buffer) - at - 4 < size:
            break
        pieces.append(bytes(buffer[at + 4 : at + 4 + size]))
        at += 4 + size
    if not pieces:
        continue
    del buffer[:at]
    status = 0
    view = memoryview(b"".join(pieces))
    try:
        while view:
            view = view[os.write(target, view):]
    except OSError as error:
        status = error.errno or 5
    os.write(1, struct.pack("<I", status) * len(pieces))
    if status:
        break
"""
_SIZE = struct.Struct("<I")
# How long the worker's exit waits for a copier to end after its last frame.
EXIT_SECONDS = 5.0


class Copier:
    """The copier of one open file. Made in a worker thread (it spawns a process); the
    file's descriptor stays the caller's."""

    def __init__(self, file_fd: int) -> None:
        frames_read, frames_write = os.pipe()
        acks_read, acks_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", COPIER_SOURCE, str(file_fd)],
                stdin=frames_read,
                stdout=acks_write,
                pass_fds=(file_fd,),
                process_group=0,
                close_fds=True,
            )
        except BaseException:
            for fd in (frames_write, acks_read):
                os.close(fd)
            raise
        finally:
            os.close(frames_read)
            os.close(acks_write)
        os.set_blocking(frames_write, False)
        os.set_blocking(acks_read, False)
        self._frames = frames_write
        self._acks = acks_read

    async def write(self, data: bytes) -> None:
        """`data` is in the file when this returns; OSError if the copier could not.
        Call shielded and one at a time: a frame abandoned halfway would leave the next
        caller reading this one's answer."""
        view = memoryview(_SIZE.pack(len(data)) + data)
        while view:
            try:
                view = view[os.write(self._frames, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._frames)
        answer = b""
        while len(answer) < _SIZE.size:
            try:
                chunk = os.read(self._acks, _SIZE.size - len(answer))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._acks)
                continue
            if not chunk:
                raise OSError(errno.EPIPE, "the stream copier process exited")
            answer += chunk
        (status,) = _SIZE.unpack(answer)
        if status:
            raise OSError(status, os.strerror(status))

    def close(self) -> None:
        """Let the copier end (EOF); `wait` reaps it."""
        for fd in (self._frames, self._acks):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._frames = self._acks = -1

    def wait(self) -> None:
        """Reap the copier (closed before); a copier stuck on a hung disk is killed."""
        try:
            self.process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

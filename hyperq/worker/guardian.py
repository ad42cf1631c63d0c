"""The guardian: kills task process groups when the worker itself is killed.

A worker that gets SIGKILL cannot clean up, and its tasks live in their own sessions.
At start the worker spawns this small process in a session of its own and keeps a pipe
to it, writing `+<pgid>` when a task starts and `-<pgid>` when it ends. When the pipe
closes without a `bye` line (the worker died), the guardian sends SIGTERM and then
SIGKILL to every group still listed, grandchildren included. A `d<path>` line names a
private directory of the worker (the notification socket's) that the guardian removes
once the pipe closes, however the worker ended. Cheaper than a
parent-death signal per task, which needs the slow fork path for every spawn. The
guardian reads its pipe every POLL_SECONDS instead of waiting on it, so the worker's
lines never wake it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys

# The guardian's own program: standard library only, no imports of hyperq (fast start).
GUARDIAN_SOURCE = r"""
import os, shutil, signal, time
os.set_blocking(0, False)
groups = set()
directories = []
buffer = b""
clean = False
ended = False
while not ended:
    # Poll rather than block on the pipe: a reader blocked there is woken (a context
    # switch, ~10% of a busy worker's time here) by every line the worker writes.
    time.sleep(POLL)
    while True:
        try:
            data = os.read(0, 1 << 20)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            ended = True
            break
        buffer += data
    *lines, buffer = buffer.split(b"\n")
    for line in lines:
        if line == b"bye":
            clean = True
        elif line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
        elif line[:1] == b"d":
            directories.append(os.fsdecode(line[1:]))
for directory in directories:
    # Only what the worker made for itself (notify.py), whatever the line says.
    if os.path.basename(directory).startswith("hq-lc-"):
        shutil.rmtree(directory, ignore_errors=True)
if not clean and groups:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except OSError:
                pass
        if sig == signal.SIGTERM:
            time.sleep(1.0)
"""
# How often the guardian looks at its pipe, so also how late it notices a dead worker.
POLL_SECONDS = 0.2
# Room for the lines written between two looks (a pipe holds 64 KiB by default).
PIPE_SIZE = 1 << 20


class Guardian:
    def __init__(self) -> None:
        read_end, write_end = os.pipe()
        try:
            # A session of its own: signals aimed at the worker's group (Ctrl-C, a batch
            # system's kill) must not take the guardian along; it exits by itself on EOF.
            self.process = subprocess.Popen(
                [sys.executable, "-S", "-c", f"POLL = {POLL_SECONDS}\n" + GUARDIAN_SOURCE],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(read_end)
        os.set_inheritable(write_end, False)
        with contextlib.suppress(OSError):  # a smaller pipe still works, a bit slower
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.fd = write_end
        self._ended: list[int] = []

    def _write(self, line: str) -> None:
        self._write_bytes(line.encode())

    def _write_bytes(self, line: bytes) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, line + b"\n")
        except OSError:
            pass

    def track(self, pgid: int, alive: bool) -> None:
        # A new group is announced at once: if the worker dies the next moment, the
        # guardian must know it. Ended groups are batched: forgetting one a little late
        # costs nothing (killing a group that no longer exists is a no-op).
        if alive:
            ended = self._ended
            if ended:
                self._write_bytes(b"".join([b"-%d\n" % g for g in ended]) + b"+%d" % pgid)
                ended.clear()
            else:
                self._write_bytes(b"+%d" % pgid)
        else:
            self._ended.append(pgid)
            if len(self._ended) >= 64:
                self._write("\n".join("-" + str(g) for g in self._ended))
                self._ended.clear()

    def remove_at_exit(self, directory: str) -> None:
        """Have `directory` removed when the worker ends, also when it is killed."""
        if "\n" not in directory:
            self._write_bytes(b"d" + os.fsencode(directory))

    def close(self) -> None:
        """The worker ends in order: its tasks are already gone, nothing to kill."""
        self._write("bye")
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


class NoGuardian:
    """A worker that spawns nothing (zero-worker mode) has nothing to guard: no extra
    process, no pipe, nothing that wakes up."""

    def track(self, pgid: int, alive: bool) -> None:
        pass

    def remove_at_exit(self, directory: str) -> None:
        pass

    def close(self) -> None:
        pass

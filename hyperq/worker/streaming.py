"""The trio side of output streaming: pipes from tasks into this worker's stream files.

One `StreamFiles` per worker process holds one open file per stream directory, shared by
every task that streams there (stream.md §2). A task's `TaskStream` makes the pipes the
task writes into, pumps them into records, and on the task's end (any end) reads them to
EOF, appends the END record and writes everything pending before the launcher may
report the result. Disk work runs in a thread (`trio.to_thread.run_sync`), one writer
per file at a time under a lock, so the event loop never waits for the disk; whoever
takes the lock writes everything pending, so tasks ending together share one write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio

from hyperq.stream.format import MAX_DATA, FileHeader, encode_data, encode_end
from hyperq.stream.writer import Pending, create_file, write_all

if TYPE_CHECKING:
    from hyperq.worker.launcher import TaskLaunchSpec

log = logging.getLogger(__name__)

PIPE_MARK = "<pipe>"
# After a kill, how long to wait for the pipes' EOF (a grandchild that left the task's
# process group may hold them open).
DRAIN_SECONDS = 2.0


def _os_error_text(error: OSError) -> str:
    code = error.errno or 0
    return f"{os.strerror(code)} (os error {code})"


class StreamError(Exception):
    """Writing a stream file failed; the message says why."""


class StreamWriter:
    """One open stream file; appends are synchronous, writes happen in a thread."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.pending = Pending()
        self.failed: str | None = None
        self._lock = trio.Lock()

    def append(self, record: bytes) -> None:
        if self.failed is None:
            self.pending.append(record)

    async def write_pending(self) -> None:
        """Everything appended before this call is written (or StreamError)."""
        async with self._lock:
            if self.failed is not None:
                raise StreamError(self.failed)
            data = self.pending.take()
            if not data:
                return
            try:
                # Not abandoned on cancel: once taken from the buffer, the data must land.
                await trio.to_thread.run_sync(write_all, self.fd, data)
            except OSError as error:
                self.failed = _os_error_text(error)
                log.error("Stream failed: %s", self.failed)
                raise StreamError(self.failed) from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class StreamFiles:
    """This worker process's stream files, one per directory, opened on first use."""

    def __init__(self, server_uid: str, worker_id: int) -> None:
        self.server_uid = server_uid
        self.worker_id = worker_id
        # Keyed by server UID too: a `reconnect` worker may come back to another server
        # instance, whose runs must not be filed under the old one.
        self._writers: dict[tuple[str, str], StreamWriter] = {}
        self._lock = trio.Lock()

    async def writer(self, directory: str, server_uid: str | None = None) -> StreamWriter:
        """The open file for `directory`, created (with the directory) if needed; OSError."""
        key = (directory, server_uid or self.server_uid)
        writer = self._writers.get(key)
        if writer is not None and writer.failed is None:
            return writer
        async with self._lock:
            writer = self._writers.get(key)
            if writer is not None and writer.failed is None:
                return writer
            if writer is not None:
                writer.close()  # a failed file is left as it is; a new one takes over
            header = FileHeader(key[1], self.worker_id)
            fd, path = await trio.to_thread.run_sync(create_file, directory, header)
            log.debug("Stream file %s opened", path)
            writer = self._writers[key] = StreamWriter(fd, path)
            return writer

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class TaskStream:
    """The streamed channels of one task instance."""

    def __init__(
        self,
        files: StreamFiles,
        directory: str,
        ids: tuple[int, int, int],
        channels: tuple[bool, bool],
        server_uid: str | None = None,
    ) -> None:
        self.files = files
        self.server_uid = server_uid
        self.directory = directory
        self.job, self.task, self.instance = ids
        self.channels = channels
        self.error: str | None = None
        self._writer: StreamWriter | None = None
        self._readers: dict[int, trio.lowlevel.FdStream] = {}
        self._write_ends: dict[int, int] = {}  # until child_fds hands them out
        self._at_eof: set[int] = set()

    async def open(self) -> str | None:
        """Open (or reuse) the directory's file before the task is spawned; error text."""
        try:
            self._writer = await self.files.writer(self.directory, self.server_uid)
        except OSError as error:
            log.error("Stream failed: %s", _os_error_text(error))
            return f"Cannot create stream directory {self.directory}: {_os_error_text(error)}"
        # The pipes exist before `running` starts their pumps.
        try:
            for channel, streamed in enumerate(self.channels):
                if streamed:
                    read_end, write_end = os.pipe2(os.O_CLOEXEC)
                    self._readers[channel] = trio.lowlevel.FdStream(read_end)
                    self._write_ends[channel] = write_end
        except OSError as error:  # e.g. out of file descriptors: this task fails, not us
            for reader in self._readers.values():
                reader.close()
            for write_end in self._write_ends.values():
                os.close(write_end)
            self._readers.clear()
            self._write_ends.clear()
            return f"Streaming: {_os_error_text(error)}"
        return None

    def child_fds(self, stdout_fd: int, stderr_fd: int) -> tuple[int, int]:
        """The task's fds 1 and 2: a pipe's write end for each streamed channel; the
        caller closes them once the task is spawned."""
        fds = [stdout_fd, stderr_fd]
        for channel, write_end in self._write_ends.items():
            fds[channel] = write_end
        self._write_ends.clear()
        return fds[0], fds[1]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Pump the pipes while the body runs the task; then drain, END and write."""
        try:
            async with trio.open_nursery() as nursery:
                for channel in self._readers:
                    nursery.start_soon(self._pump, channel)
                yield
        finally:
            # Not handed to a task (it failed before its spawn): nobody else will write.
            for write_end in self._write_ends.values():
                os.close(write_end)
            self._write_ends.clear()
            with trio.CancelScope(shield=True):
                await self._finish()

    async def _pump(self, channel: int) -> None:
        reader = self._readers[channel]
        writer = self._writer
        assert writer is not None
        job, task, instance = self.job, self.task, self.instance
        while True:
            data = await reader.receive_some(MAX_DATA)
            if not data:
                self._at_eof.add(channel)
                return
            writer.append(encode_data(int(time.time() * 1000), job, task, instance, channel, data))
            # The size bound: over the threshold, this pump reads nothing more until the
            # file has it, so a file's buffer holds at most the threshold plus one record
            # per pump; a faster task fills its pipe and waits.
            if writer.pending.over_threshold:
                try:
                    await writer.write_pending()
                except StreamError as error:
                    self.error = f"Streaming: {error}"  # keep reading: the task must not block

    async def _finish(self) -> None:
        writer = self._writer
        assert writer is not None
        with trio.move_on_after(DRAIN_SECONDS):
            async with trio.open_nursery() as nursery:
                for channel in self._readers:
                    if channel not in self._at_eof:
                        nursery.start_soon(self._pump, channel)
        for reader in self._readers.values():
            reader.close()
        if len(self._at_eof) == len(self._readers):
            writer.append(encode_end(int(time.time() * 1000), self.job, self.task, self.instance))
        try:
            await writer.write_pending()
        except StreamError as error:
            self.error = f"Streaming: {error}"


def attach_stream(
    spec: TaskLaunchSpec, directory: str | None, files: StreamFiles
) -> TaskLaunchSpec:
    """`spec` with its streamed channels (path `<pipe>`) routed into `files`."""
    channels = (spec.stdout == PIPE_MARK, spec.stderr == PIPE_MARK)
    if directory is None or not any(channels):
        return spec
    if channels[0]:
        spec.stdout = None
    if channels[1]:
        spec.stderr = None
    ids = (spec.job_id, spec.task_id, spec.instance)
    spec.stream = TaskStream(files, directory, ids, channels, spec.server_uid)
    return spec

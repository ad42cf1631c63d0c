"""The trio side of output streaming: pipes from tasks into this worker's stream files.

One `StreamFiles` per worker process holds one open file per stream directory, shared by
every task that streams there (stream.md §2), and reads every streamed pipe of every task
in one trio task (`run`): the pipes sit in an epoll set of their own, whose fd the event
loop watches, so a wakeup reads whatever all tasks printed meanwhile, without a trio task,
a nursery or an `FdStream` per pipe (`tools/bench_stream`: those cost more than the
pipes themselves). A task's `TaskStream` makes its pipes, and on the task's end (any end)
waits for their EOF, appends the END record and writes everything pending before the
launcher may report the result: in `run_task`'s trio task (`running`), or, for the tasks
the launcher's `Reaper` waits for, without a task of its own (`finish`: the reader ends
the wait, and each file's flusher tells the reaper once the copier has the records).
Disk work is done by a copier process per file (`streamcopier`), fed through a pipe, so
the event loop never waits for the disk; one write per file at a time under a lock, and
whoever takes the lock writes everything pending, so tasks ending together share one write.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import select
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import trio

from hyperq.stream.format import MAX_DATA, FileHeader, encode_data, encode_end
from hyperq.stream.writer import Pending, create_file
from hyperq.worker.streamcopier import Copier

if TYPE_CHECKING:
    from hyperq.worker.launcher import TaskLaunchSpec

log = logging.getLogger(__name__)

PIPE_MARK = "<pipe>"
# After a task's process is gone, how long to wait for its pipes' EOF (a grandchild that
# left the task's process group may hold them open).
DRAIN_SECONDS = 2.0
# Told, once a task's stream is finished (EOF or drained, END appended, written), the
# stream's error text or None.
OnFlushed = Callable[[str | None], None]
_EOF_EVENTS = select.EPOLLHUP | select.EPOLLERR


def _ignore(_error: str | None) -> None:
    pass


def _os_error_text(error: OSError) -> str:
    code = error.errno or 0
    return f"{os.strerror(code)} (os error {code})"


class StreamError(Exception):
    """Writing a stream file failed; the message says why."""


class StreamWriter:
    """One open stream file; appends are synchronous, its copier process writes."""

    def __init__(self, fd: int, path: str, copier: Copier) -> None:
        self.fd = fd
        self.path = path
        self.copier = copier
        self.pending = Pending()
        self.failed: str | None = None
        self._lock = trio.Lock()
        # Records appended and records on disk (or given up): a task whose records went
        # out with another task's write needs no write of its own.
        self._appended = 0
        self._written = 0
        # `flush_soon` callers, told by the flusher once their records are on disk: the
        # tasks on the launcher's fast path wait without a trio task each.
        self._waiters: list[OnFlushed] = []
        self._wake = trio.Event()
        self._flusher = False

    def append(self, record: bytes) -> None:
        if self.failed is None:
            self.pending.append(record)
            self._appended += 1

    async def write_pending(self) -> None:
        """Everything appended before this call is written (or StreamError)."""
        wanted = self._appended
        async with self._lock:
            if self.failed is not None:
                raise StreamError(self.failed)
            if self._written >= wanted:
                return
            upto = self._appended
            data = self.pending.take()
            try:
                # Not abandoned on cancel: once taken from the buffer, the data must land
                # (and an exchange cut halfway would confuse the next one).
                with trio.CancelScope(shield=True):
                    await self.copier.write(data)
            except OSError as error:
                self.failed = _os_error_text(error)
                log.error("Stream failed: %s", self.failed)
                raise StreamError(self.failed) from None
            self._written = upto

    def flush_soon(self, files: StreamFiles, on_flushed: OnFlushed) -> None:
        """Write everything appended so far, then call `on_flushed` (error text or None)."""
        self._waiters.append(on_flushed)
        self._wake.set()
        if not self._flusher:
            self._flusher = files.start_flusher(self)

    async def flush_loop(self) -> None:
        """The writer's flusher: whatever waiters gathered meanwhile share one write."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            waiters, self._waiters = self._waiters, []
            error: str | None = None
            try:
                await self.write_pending()
            except StreamError as failure:
                error = f"Streaming: {failure}"
            for on_flushed in waiters:
                try:
                    on_flushed(error)
                except Exception:
                    log.exception("Reporting a flushed stream failed")

    def close(self) -> None:
        self.copier.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _open_file(directory: str, header: FileHeader) -> tuple[int, str, Copier]:
    """A new stream file with its header, and its copier (blocking: run in a thread)."""
    fd, path = create_file(directory, header)
    try:
        return fd, path, Copier(fd)
    except BaseException:
        os.close(fd)
        raise


class StreamFiles:
    """This worker process's stream files, one per directory, opened on first use, and
    the reader of every streamed pipe (`run`, which must be running while tasks stream)."""

    def __init__(self, server_uid: str, worker_id: int) -> None:
        self.server_uid = server_uid
        self.worker_id = worker_id
        # Keyed by server UID too: a `reconnect` worker may come back to another server
        # instance, whose runs must not be filed under the old one.
        self._writers: dict[tuple[str, str], StreamWriter] = {}
        self._retired: list[StreamWriter] = []  # failed and replaced; reaped at close
        self._lock = trio.Lock()
        self._epoll: select.epoll | None = None
        # read end -> (its task's stream, channel)
        self._watched: dict[int, tuple[TaskStream, int]] = {}
        # Finishing streams whose process is gone but a pipe is not at EOF yet, by the
        # time their wait ends (DRAIN_SECONDS).
        self._draining: list[tuple[float, int, TaskStream]] = []
        self._order = 0
        self._wait_scope: trio.CancelScope | None = None
        self._flushers: trio.Nursery | None = None

    def writer_now(self, directory: str, server_uid: str | None = None) -> StreamWriter | None:
        """The open, healthy file for `directory` if there is one (no waiting)."""
        writer = self._writers.get((directory, server_uid or self.server_uid))
        if writer is None or writer.failed is not None:
            return None
        return writer

    def start_flusher(self, writer: StreamWriter) -> bool:
        if self._flushers is None:
            return False  # the worker's end: nobody waits for these reports any more
        self._flushers.start_soon(writer.flush_loop)
        return True

    def drain_until(self, stream: TaskStream, deadline: float) -> None:
        """`stream` gives up on its pipes' EOF at `deadline` (trio time)."""
        self._order += 1
        heapq.heappush(self._draining, (deadline, self._order, stream))
        scope = self._wait_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

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
                self._retired.append(writer)
            header = FileHeader(key[1], self.worker_id)
            fd, path, copier = await trio.to_thread.run_sync(_open_file, directory, header)
            log.debug("Stream file %s opened", path)
            writer = self._writers[key] = StreamWriter(fd, path, copier)
            return writer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the watched pipes until cancelled."""
        epoll = select.epoll()
        self._epoll = epoll
        try:
            async with trio.open_nursery() as flushers:
                self._flushers = flushers
                task_status.started()
                while True:
                    deadline = self._draining[0][0] if self._draining else math.inf
                    with trio.CancelScope(deadline=deadline) as scope:
                        self._wait_scope = scope
                        await trio.lowlevel.wait_readable(epoll)
                    self._wait_scope = None
                    # Level-triggered: a pipe that still holds data is reported again.
                    await self._read(epoll.poll(0))
                    self._drain_expired()
        finally:
            self._flushers = None
            self._epoll = None
            for stream, _channel in list(self._watched.values()):
                stream.unwatch()  # its task stops waiting for an EOF nobody will see
            epoll.close()

    async def _read(self, events: list[tuple[int, int]]) -> None:
        full = self._take(events)
        # The size bound: over the threshold, no pipe is read until the file has it, so
        # a file's buffer holds at most the threshold plus one read per pipe; a faster
        # task fills its pipe and waits.
        for writer in full:
            with contextlib.suppress(StreamError):  # logged; its tasks fail at their end
                await writer.write_pending()

    def read_now(self, stream: TaskStream, fds: list[int]) -> None:
        """Read `stream`'s pipes `fds` now, for a task whose process is gone: their EOF is
        usually there already, and the task's end need not wait for the reader's turn."""
        poller = select.poll()  # POLLIN/POLLHUP/POLLERR are the EPOLL* values
        for fd in fds:
            poller.register(fd, select.POLLIN)
        for writer in self._take(poller.poll(0)):
            writer.flush_soon(self, _ignore)  # the size bound, as `_read` keeps it

    def _take(self, events: list[tuple[int, int]]) -> list[StreamWriter]:
        """Read the pipes of `events` into their files' buffers: the files over their
        threshold."""
        now = int(time.time() * 1000)
        full: list[StreamWriter] = []
        for fd, mask in events:
            watched = self._watched.get(fd)
            if watched is None:
                continue
            stream, channel = watched
            data = b""
            if mask & select.EPOLLIN:
                try:
                    # A blocking fd, but readable: the read returns what is there.
                    data = os.read(fd, MAX_DATA)
                except OSError as error:
                    stream.error = f"Streaming: {_os_error_text(error)}"
            if data:
                writer = stream.writer
                writer.append(
                    encode_data(now, stream.job, stream.task, stream.instance, channel, data)
                )
                if writer.pending.over_threshold and writer not in full:
                    full.append(writer)
                # With the writers gone and less than a full read there, the pipe is
                # empty for good: no second read to learn of the EOF.
                if not (mask & _EOF_EVENTS and len(data) < MAX_DATA):
                    continue
            stream.channel_ended(channel)
        return full

    def _drain_expired(self) -> None:
        now = trio.current_time()
        while self._draining and self._draining[0][0] <= now:
            _deadline, _order, stream = heapq.heappop(self._draining)
            stream.drained()

    @property
    def reading(self) -> bool:
        return self._epoll is not None

    def watch(self, stream: TaskStream, fd: int, channel: int) -> None:
        if self._epoll is None:
            raise RuntimeError("StreamFiles.run is not running")
        self._epoll.register(fd, select.EPOLLIN)
        self._watched[fd] = (stream, channel)

    def unwatch(self, fd: int) -> None:
        self._watched.pop(fd, None)
        if self._epoll is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def close(self) -> None:
        """At the worker's end, its tasks gone (their writes done): end the copiers."""
        writers = [*self._writers.values(), *self._retired]
        for writer in writers:
            writer.close()
        for writer in writers:
            writer.copier.wait()
        self._writers.clear()
        self._retired.clear()


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
        self.writer: StreamWriter
        self._read_ends: dict[int, int] = {}  # channel -> fd, until its EOF
        self._write_ends: dict[int, int] = {}  # until child_fds hands them out
        self._ended = 0  # channels that reached EOF
        self._all_ended: trio.Event | None = None
        self.opened = False
        # Set by `finish` (the fast path): told once everything is written.
        self._on_flushed: OnFlushed | None = None

    async def open(self) -> str | None:
        """Open (or reuse) the directory's file before the task is spawned; error text."""
        try:
            self.writer = await self.files.writer(self.directory, self.server_uid)
        except OSError as error:
            log.error("Stream failed: %s", _os_error_text(error))
            return f"Cannot create stream directory {self.directory}: {_os_error_text(error)}"
        return self._open_pipes()

    def can_open_now(self) -> bool:
        """Whether `open_now` can do it: the directory's file is open already (opening
        one is disk work for a thread, done by `open` on the `run_task` path)."""
        files = self.files
        return files.reading and files.writer_now(self.directory, self.server_uid) is not None

    def open_now(self) -> str | None:
        """`open` without waiting, when `can_open_now`; error text."""
        writer = self.files.writer_now(self.directory, self.server_uid)
        if writer is None:  # failed since `can_open_now`
            return f"Streaming: {self.directory}: the stream file failed"
        self.writer = writer
        return self._open_pipes()

    def _open_pipes(self) -> str | None:
        if not self.files.reading:
            raise RuntimeError("StreamFiles.run is not running")
        try:
            for channel, streamed in enumerate(self.channels):
                if streamed:
                    read_end, write_end = os.pipe2(os.O_CLOEXEC)
                    self._read_ends[channel] = read_end
                    self._write_ends[channel] = write_end
                    self.files.watch(self, read_end, channel)
        except OSError as error:  # e.g. out of file descriptors: this task fails, not us
            self.unwatch()
            for write_end in self._write_ends.values():
                os.close(write_end)
            self._write_ends.clear()
            return f"Streaming: {_os_error_text(error)}"
        self.opened = True  # from now on the task's end goes through `running`/`finish`
        return None

    def child_fds(self, stdout_fd: int, stderr_fd: int) -> tuple[int, int]:
        """The task's fds 1 and 2: a pipe's write end for each streamed channel; the
        caller closes them once the task is spawned."""
        fds = [stdout_fd, stderr_fd]
        for channel, write_end in self._write_ends.items():
            fds[channel] = write_end
        self._write_ends.clear()
        return fds[0], fds[1]

    def channel_ended(self, channel: int) -> None:
        """The channel's pipe reached EOF (called by the reader)."""
        fd = self._read_ends.pop(channel)
        self.files.unwatch(fd)
        os.close(fd)
        self._ended += 1
        if not self._read_ends:
            if self._all_ended is not None:
                self._all_ended.set()
            self._flush_soon()

    def unwatch(self) -> None:
        """Stop reading the pipes not at EOF (their data is dropped)."""
        for fd in self._read_ends.values():
            self.files.unwatch(fd)
            os.close(fd)
        self._read_ends.clear()
        if self._all_ended is not None:
            self._all_ended.set()
        self._flush_soon()

    def finish(self, on_flushed: OnFlushed) -> None:
        """`running`'s end without a trio task, for a task whose process is gone (or was
        never spawned): once the pipes reach EOF (or DRAIN_SECONDS pass), END is appended
        and written, and then `on_flushed` is told the stream's error (or None)."""
        for write_end in self._write_ends.values():
            os.close(write_end)
        self._write_ends.clear()
        self._on_flushed = on_flushed
        if self._read_ends:
            self.files.read_now(self, list(self._read_ends.values()))
        if self._read_ends:
            # Rounded up to a quarter second, so that the reader wakes for a few of
            # these a second however many tasks end.
            deadline = math.ceil((trio.current_time() + DRAIN_SECONDS) * 4) / 4
            self.files.drain_until(self, deadline)
        else:
            self._flush_soon()  # (done already if the reads above saw the last EOF)

    def drained(self) -> None:
        """The wait for EOF is over (called by the reader)."""
        if self._read_ends:
            self.unwatch()

    def _flush_soon(self) -> None:
        on_flushed = self._on_flushed
        if on_flushed is None:
            return
        self._on_flushed = None
        if self._ended == sum(self.channels):
            self.writer.append(
                encode_end(int(time.time() * 1000), self.job, self.task, self.instance)
            )

        def flushed(error: str | None) -> None:
            on_flushed(self.error or error)

        self.writer.flush_soon(self.files, flushed)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The body runs the task; then wait for the pipes' EOF, END and write."""
        try:
            yield
        finally:
            # Not handed to a task (it failed before its spawn): nobody else will write.
            for write_end in self._write_ends.values():
                os.close(write_end)
            self._write_ends.clear()
            with trio.CancelScope(shield=True):
                await self._finish()

    async def _finish(self) -> None:
        if self._read_ends:
            self._all_ended = trio.Event()
            with trio.move_on_after(DRAIN_SECONDS):
                await self._all_ended.wait()
            self.unwatch()
        if self._ended == sum(self.channels):
            self.writer.append(
                encode_end(int(time.time() * 1000), self.job, self.task, self.instance)
            )
        try:
            await self.writer.write_pending()
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

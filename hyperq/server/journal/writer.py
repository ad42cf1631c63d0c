"""The journal writer service: persisted events → records → one fsync per batch.

`append` (synchronous, called by `ServerCore.commit`) only queues. The writer task
drains everything queued and hands it to the journal sink, a small child process that
encodes it, writes it and fsyncs once (`sink.py` says why not the loop or a
thread, and why the sink encodes), then wakes the requests it covered: a client
request that changed state awaits `sync()` before it is answered, so nothing
acknowledged is ever lost, and concurrent requests share one fsync (group commit).
While one batch is being fsynced the loop goes on serving and the next batch gathers.
Task progress rides the next batch; with nothing asking for a sync, the writer still
flushes at least every flush period.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import marshal
import math
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cbor2
import trio

from hyperq.common.errors import HqError
from hyperq.server.journal.sink import DONE, ERROR, HEAD, OFFSET, REPLY_HEAD
from hyperq.server.journal.snapshot import SNAPSHOT_EVERY
from hyperq.server.model.events import Event, plain_record, to_record
from hyperq.transport.codec import encode_unbounded

log = logging.getLogger(__name__)

# At shutdown, how long the last batch may take to reach the disk (a hung network
# filesystem must not keep the server from exiting).
FINAL_FLUSH_SECONDS = 10.0
SINK_SCRIPT = str(Path(__file__).with_name("sink.py"))
# Where the sink, a bare script, finds cbor2.
CBOR2_HOME = str(Path(cbor2.__file__).parent.parent)


class JournalSink:
    """The server's end of the journal sink process; one request at a time."""

    def __init__(self, path: str, process: trio.Process) -> None:
        self.path = path
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        # Requests are shielded from cancellation; at shutdown this bounds them instead.
        self.deadline = math.inf

    @classmethod
    async def open(cls, path: str, offset: int) -> JournalSink:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-I", "-S", SINK_SCRIPT, CBOR2_HOME],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Not in the terminal's process group: a Ctrl-C meant for the server must
            # not kill the sink before the server's final flush.
            start_new_session=True,
        )
        sink = cls(path, process)
        try:
            await sink.request(b"O", OFFSET.pack(offset) + path.encode())
        except BaseException:
            with trio.CancelScope(shield=True):
                process.kill()
                await process.wait()
            raise
        return sink

    async def request(
        self, op: bytes, payload: bytes, *, shield: trio.CancelScope | None = None
    ) -> tuple[float, int]:
        """Send one request and wait for its reply: the sink's time for it (encode, write
        and fsync, for a b"W") and the bytes it wrote.

        Shielded: a reply left unread would be taken for the next request's, and a
        batch handed over must be known to be on disk before anyone is released. The
        writer passes `shield`, a scope it is in, to be shielded for the request:
        entering a fresh scope per batch costs ~10 µs here, switching one on 0.3 µs.
        """
        if shield is not None:
            shield.shield = True
            try:
                return await self._exchange(op, payload)
            finally:
                shield.shield = False
        with trio.CancelScope(shield=True, deadline=self.deadline) as scope:
            done = await self._exchange(op, payload)
        if scope.cancelled_caught:
            raise HqError(f"Cannot write journal {self.path}: the disk did not answer in time")
        return done

    async def _exchange(self, op: bytes, payload: bytes) -> tuple[float, int]:
        try:
            await self._write(HEAD.pack(op, len(payload)) + payload)
            reply = await self._read(REPLY_HEAD)
            if reply[:1] == b"k":
                took, wrote = DONE.unpack_from(reply, 1)
                return float(took), int(wrote)
            if reply[:1] == b"e":
                (length,) = ERROR.unpack_from(reply, 1)
                reason = (await self._read(length)).decode(errors="replace")
                raise HqError(f"Cannot write journal {self.path}: {reason}")
        except (OSError, EOFError):
            pass
        raise HqError(f"Cannot write journal {self.path}: its writer process exited")

    # The pipes are used through their (non-blocking) fds rather than trio's streams:
    # the streams yield to the scheduler before every write and read, and on a busy
    # server each such round trip delays every acknowledgement.
    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        fd = self._stdin.fileno()
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)

    async def _read(self, size: int) -> bytes:
        data = b""
        fd = self._stdout.fileno()
        while len(data) < size:
            # Wait first: a reply is never there the moment its request has been sent.
            await trio.lowlevel.wait_readable(fd)
            try:
                chunk = os.read(fd, size - len(data))
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError
            data += chunk
        return data

    async def close(self) -> None:
        """Ask for a clean close (the zero-filled space is cut off), then end the sink."""
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                with contextlib.suppress(HqError):
                    await self.request(b"C", b"")
            with trio.move_on_after(5):
                await self._stdin.aclose()
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


class Journal:
    def __init__(
        self,
        path: str,
        end: int,
        next_seq: int,
        flush_period: float,
        *,
        unsnapshotted: int = 0,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> None:
        self.path = os.path.abspath(path)
        # The sink writes the file; the server only tracks where its records end.
        self.durable_end = end
        self._sink: JournalSink | None = None
        self.next_seq = next_seq
        self.flush_period = flush_period
        # Events to be written, with their sequence numbers (see `append`).
        self._pending: list[tuple[int, Event]] = []
        self.appended = next_seq - 1  # seq of the last record queued
        self.synced = next_seq - 1  # seq of the last record on disk
        self._wanted = trio.Event()
        # Requests waiting for the disk, oldest first: (seq they need on disk, event).
        # Each is woken once, by the batch that covers it; waking every waiter on every
        # batch cost the ones still behind a full park and wake per batch for nothing.
        self._waiters: collections.deque[tuple[int, trio.Event]] = collections.deque()
        self._closed = False
        # Held while the file is written or replaced (flush, prune).
        self.lock = trio.Lock()
        # Sizes (records) of recent fsync batches, for `tools/bench`'s report.
        self.batch_sizes: list[int] = []
        self.fsyncs = 0
        self.fsync_times: list[float] = []  # seconds per write+fsync, recent ones
        # Snapshots: events on disk that the last snapshot (started) does not cover, and
        # the end of what is on disk, which is where the next snapshot may reach.
        self.snapshot_every = snapshot_every
        self.unsnapshotted = unsnapshotted
        self.snapshots = 0
        self._snapshot_due = trio.Event()
        if unsnapshotted >= snapshot_every:
            self._snapshot_due.set()

    def append(self, events: Iterable[Event]) -> list[tuple[int, Event]]:
        """Queue the persisted events; returns them with their sequence numbers.

        Events are queued, not encoded: the sink encodes them, off the server's CPU
        (see `_marshal_batch`). Events are values, never changed once made."""
        numbered = []
        for event in events:
            if not event.persisted:
                continue
            item = (self.next_seq, event)
            self._pending.append(item)
            numbered.append(item)
            self.appended = self.next_seq
            self.next_seq += 1
        return numbered

    async def sync(self) -> None:
        """Return once everything appended so far is on disk."""
        target = self.appended
        if self.synced >= target:
            return
        if self._closed:
            raise trio.ClosedResourceError("the journal is closed")
        waiters = self._waiters
        if waiters and waiters[-1][0] == target:
            done = waiters[-1][1]  # the same records as the last waiter: share its wake
        else:
            done = trio.Event()
            waiters.append((target, done))
        self._wanted.set()
        await done.wait()
        if self.synced < target:
            raise trio.ClosedResourceError("the journal is closed")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._sink = sink = await JournalSink.open(self.path, self.durable_end)
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._tick)
                with trio.CancelScope() as shield:  # switched on while a batch is out
                    while True:
                        # Under steady load every yield below is shielded: let a
                        # shutdown in here.
                        await trio.lowlevel.checkpoint_if_cancelled()
                        # If set, requests came in while the last batch was being
                        # written: send them on at once (the sink request itself yields).
                        if not self._wanted.is_set():
                            await self._wanted.wait()
                        self._wanted = trio.Event()
                        # One scheduling round before the batch leaves: requests made
                        # runnable in the same round as this wake (under load the sink's
                        # reply and clients' data arrive together) join it rather than
                        # wait out the next fsync. Measured: ~2.3 -> ~3 records per batch,
                        # ~20 µs less server CPU per journaled submit, +3% submits/s.
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        await self._flush(shield)
        finally:
            with trio.CancelScope(shield=True):
                # Whatever is queued when the tree is cancelled still reaches the disk.
                sink.deadline = trio.current_time() + FINAL_FLUSH_SECONDS
                try:
                    await self._flush()
                finally:
                    self._closed = True
                    await sink.close()
                    self._release()

    async def _tick(self) -> None:
        """Progress events reach the disk at least every flush period with no request
        asking: a timer wakes the writer, rather than a timeout around each of its
        waits (a cancel scope per batch costs ~15 µs here)."""
        while True:
            await trio.sleep(self.flush_period)
            self._wanted.set()

    async def _flush(self, shield: trio.CancelScope | None = None) -> None:
        # Uncontended (the usual case), take the lock without yielding to the scheduler:
        # every yield here is a full scheduling round before the batch leaves.
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            await self.lock.acquire()
        try:
            await self.flush_locked(shield)
        finally:
            self.lock.release()

    async def flush_locked(self, shield: trio.CancelScope | None = None) -> None:
        """Write and fsync what is queued; the caller holds `lock` (and, for `shield`,
        see `JournalSink.request`)."""
        if not self._pending:
            return  # waiters are released as `synced` advances: none is left behind
        batch, self._pending = self._pending, []
        target = self.appended
        assert self._sink is not None, "the writer service is not running"
        took, wrote = await self._sink.request(b"W", _marshal_batch(batch), shield=shield)
        self.fsyncs += 1
        self.durable_end += wrote
        self.unsnapshotted += len(batch)
        if self.unsnapshotted >= self.snapshot_every:
            self._snapshot_due.set()
        self.batch_sizes.append(len(batch))
        self.fsync_times.append(took)
        if len(self.fsync_times) > 10_000:
            del self.fsync_times[:5_000]
        if len(self.batch_sizes) > 10_000:
            del self.batch_sizes[:5_000]
        self.synced = target
        self._release()

    async def replace_file(self, end: int) -> None:
        """After a prune renamed a new file (whose records end at `end`) over the
        journal; the caller holds `lock`."""
        self.durable_end = end
        assert self._sink is not None, "the writer service is not running"
        await self._sink.request(b"O", OFFSET.pack(self.durable_end) + self.path.encode())
        # The old snapshot describes the old file; make one of the new file soon.
        self._snapshot_due.set()

    async def run_snapshots(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a snapshot of the journal within `snapshot_every` events of its end, so
        that a restore replays only a short tail. The snapshot is built by a separate
        process from the fsynced part of the file: the server's loop never stalls on it."""
        task_status.started()
        while True:
            await self._snapshot_due.wait()
            self._snapshot_due = trio.Event()
            self.unsnapshotted = 0
            # -P: not the server's working directory first on the module path.
            command = [sys.executable, "-P", "-m", "hyperq.server.journal.snapshot", self.path]
            command += ["--upto", str(self.durable_end)]
            try:
                result = await trio.run_process(
                    command, stdin=subprocess.DEVNULL, capture_stderr=True, check=False
                )
            except OSError as error:
                # Only a cache: the server goes on (restores just replay more).
                log.warning("Journal snapshot could not start: %s", error)
                continue
            if result.returncode == 0:
                self.snapshots += 1
            else:
                message = result.stderr.decode(errors="replace").strip().splitlines()
                log.warning("Journal snapshot failed: %s", message[-1] if message else "?")

    def _release(self) -> None:
        """Wake the waiters whose records are on disk; once closed, all of them (those
        whose records did not make it find out, and fail)."""
        waiters = self._waiters
        while waiters and (waiters[0][0] <= self.synced or self._closed):
            waiters.popleft()[1].set()


def _marshal_batch(batch: list[tuple[int, Event]]) -> bytes:
    """A b"W" request's payload: (seq, record) pairs, for the sink to encode as CBOR.
    `marshal` dumps the whole batch in one C call. A record holding anything marshal
    cannot dump (a value of some other type than the builtin ones) is CBOR-encoded here
    instead, or in plain form (`plain_record`) if CBOR cannot take it either."""
    records = [(seq, to_record(event)) for seq, event in batch]
    try:
        return marshal.dumps(records)
    except ValueError:
        pairs = zip(records, batch, strict=True)
        return marshal.dumps([(seq, _dumpable(rec, event)) for (seq, rec), (_, event) in pairs])


def _dumpable(record: list[Any], event: Event) -> Any:
    """`record` (the event's) if marshal takes it, else its CBOR payload."""
    try:
        marshal.dumps(record)
        return record
    except ValueError:
        pass
    try:
        return encode_unbounded(record)
    except (TypeError, ValueError, cbor2.CBOREncodeError):
        return encode_unbounded(plain_record(event))

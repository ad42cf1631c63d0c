"""The journal writer service: persisted events → records → one fsync per batch.

`append` (synchronous, called by `ServerCore.commit`) only encodes and queues. The
writer task drains everything queued, writes it and fsyncs once in a worker thread,
then releases every waiter: a client request that changed state awaits `sync()` before
it is answered, so nothing acknowledged is ever lost, and concurrent requests share one
fsync (group commit). Task progress rides the next batch; with nothing asking for a
sync, the writer still flushes at least every flush period.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import BinaryIO

import trio

from hyperq.server.events import Event, to_record
from hyperq.server.journalfile import encode_record
from hyperq.server.snapshot import SNAPSHOT_EVERY
from hyperq.transport.codec import encode_unbounded

log = logging.getLogger(__name__)

# Write+fsync batches that recently took less than this run in the event loop itself;
# slower ones go to a worker thread so that a slow filesystem never stalls the server.
INLINE_FSYNC_LIMIT = 0.002


def _write_batch(file: BinaryIO, records: list[bytes]) -> float:
    """Write and fsync; returns how long that took (without any thread hand-off)."""
    started = time.perf_counter()
    file.write(b"".join(records))
    file.flush()
    os.fsync(file.fileno())
    return time.perf_counter() - started


class Journal:
    def __init__(
        self,
        path: str,
        file: BinaryIO,
        next_seq: int,
        flush_period: float,
        *,
        unsnapshotted: int = 0,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> None:
        self.path = os.path.abspath(path)
        self.file = file
        self.next_seq = next_seq
        self.flush_period = flush_period
        self._pending: list[bytes] = []
        self.appended = next_seq - 1  # seq of the last record queued
        self.synced = next_seq - 1  # seq of the last record on disk
        self._wanted = trio.Event()
        self._synced_pulse = trio.Event()
        self._closed = False
        # Held while the file is written or replaced (flush, prune).
        self.lock = trio.Lock()
        # Sizes (records) of recent fsync batches, for `tools/bench`'s report.
        self.batch_sizes: list[int] = []
        # Recent write+fsync duration: decides between the loop and a thread.
        self._fsync_estimate = 0.0
        self.fsyncs = 0
        self.inline_fsyncs = 0
        # Snapshots: events on disk that the last snapshot (started) does not cover, and
        # the end of what is on disk, which is where the next snapshot may reach.
        self.snapshot_every = snapshot_every
        self.unsnapshotted = unsnapshotted
        self.durable_end = file.tell()
        self.snapshots = 0
        self._snapshot_due = trio.Event()
        if unsnapshotted >= snapshot_every:
            self._snapshot_due.set()

    def append(self, events: Iterable[Event]) -> list[tuple[int, Event]]:
        """Queue the persisted events; returns them with their sequence numbers."""
        numbered = []
        for event in events:
            if not event.persisted:
                continue
            payload = encode_unbounded(to_record(event))
            self._pending.append(encode_record(self.next_seq, payload))
            numbered.append((self.next_seq, event))
            self.appended = self.next_seq
            self.next_seq += 1
        return numbered

    async def sync(self) -> None:
        """Return once everything appended so far is on disk."""
        target = self.appended
        while self.synced < target:
            if self._closed:
                raise trio.ClosedResourceError("the journal is closed")
            self._wanted.set()
            await self._synced_pulse.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self.flush_period):
                    await self._wanted.wait()
                self._wanted = trio.Event()
                await self._flush()
        finally:
            with trio.CancelScope(shield=True):
                # Whatever is queued when the tree is cancelled still reaches the disk.
                with trio.move_on_after(10):
                    await self._flush()
                self._closed = True
                self.file.close()
                self._release()

    async def _flush(self) -> None:
        async with self.lock:
            await self.flush_locked()

    async def flush_locked(self) -> None:
        """Write and fsync what is queued; the caller holds `lock`."""
        if not self._pending:
            self._release()
            return
        batch, self._pending = self._pending, []
        target = self.appended
        if self._fsync_estimate < INLINE_FSYNC_LIMIT:
            # On a fast disk the thread hand-off costs more than the fsync itself (it cut
            # acknowledged submits/s by a third here), so write in the loop and release
            # the waiters in the same step (the writer loop yields right after).
            took = _write_batch(self.file, batch)
            self.inline_fsyncs += 1
        else:
            took = await trio.to_thread.run_sync(_write_batch, self.file, batch)
        # A slow fsync (network filesystem, busy disk) sends the next ones to a thread at
        # once; fast ones bring the estimate back down gradually.
        self._fsync_estimate = max(took, 0.8 * self._fsync_estimate + 0.2 * took)
        self.fsyncs += 1
        self.durable_end = self.file.tell()
        self.unsnapshotted += len(batch)
        if self.unsnapshotted >= self.snapshot_every:
            self._snapshot_due.set()
        self.batch_sizes.append(len(batch))
        if len(self.batch_sizes) > 10_000:
            del self.batch_sizes[:5_000]
        self.synced = target
        self._release()

    def replace_file(self, file: BinaryIO) -> None:
        """After a prune renamed a new file over the journal; the caller holds `lock`."""
        self.file.close()
        self.file = file
        self.durable_end = file.tell()
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
            command = [sys.executable, "-m", "hyperq.server.snapshot", self.path]
            command += ["--upto", str(self.durable_end)]
            result = await trio.run_process(
                command, stdin=subprocess.DEVNULL, capture_stderr=True, check=False
            )
            if result.returncode == 0:
                self.snapshots += 1
            else:
                message = result.stderr.decode(errors="replace").strip().splitlines()
                log.warning("Journal snapshot failed: %s", message[-1] if message else "?")

    def _release(self) -> None:
        self._synced_pulse.set()
        self._synced_pulse = trio.Event()

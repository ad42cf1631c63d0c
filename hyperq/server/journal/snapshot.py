"""Snapshots of the replayed model, so that a restore replays only the journal's tail.

A snapshot is the model exactly as replaying the journal's first records produced it
(before the restore rules), plus where those records end and a CRC32 of the journal's
bytes up to there. A restore uses it only when that CRC still matches the journal, so
a pruned, truncated or replaced journal silently falls back to a full replay: the
snapshot is a cache, never a source of truth. The journal keeps every event, so
`journal export/replay/stream` are unaffected.

The server never serialises its own live model (that would stall its loop, and the
live model holds allocations a replay does not). Instead it runs `python -m
hyperq.server.journal.snapshot <journal> --upto <offset>` in the background: that process
loads the previous snapshot if it still matches, replays the records after it up to
`offset` (a point the server has fsynced) and writes the new snapshot beside the
journal (tmp file, fsync, rename, fsync of the directory).

File: b"HYPERQ-SNAPSHOT\\0" + format version (u16 BE) + CRC32 of the body (u32 BE) +
body (zlib-compressed CBOR). Task records are stored column by column in packed
arrays, which load several times faster than one CBOR item per field.
"""

from __future__ import annotations

import gc
import logging
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hyperq import __version__
from hyperq.server.journal.format import HEADER, ReadReport, check_header, fsync_dir, iter_records
from hyperq.server.model.autoalloc import AutoallocRecords
from hyperq.server.model.events import from_record
from hyperq.server.model.jobs import ACTIVE, DoneFacts, Job, TaskRecord, TaskState
from hyperq.server.model.state import Model
from hyperq.server.model.workers import Worker
from hyperq.transport.codec import ProtocolError, decode_unbounded, encode_unbounded

log = logging.getLogger(__name__)

MAGIC = b"HYPERQ-SNAPSHOT\0"
FORMAT_VERSION = 2  # 2: submit times, and when dropped tasks were canceled/aborted
HEAD = struct.Struct(">HI")  # version, crc32 of the body
# The server starts a new snapshot once this many events were journaled since the
# last one started; a restore then replays at most about this many events.
SNAPSHOT_EVERY = 50_000

_STATES = list(TaskState)
_STATE_CODE = {state: code for code, state in enumerate(_STATES)}
_NONE_FLOAT = float("nan")


def snapshot_path(journal_path: str) -> str:
    return journal_path + ".snapshot"


@dataclass
class Snapshot:
    model: Model
    journal_end: int  # offset just after the last record replayed into `model`
    last_seq: int
    events: int  # events replayed into `model` (for the restore's log line)
    # What replaying the covered part found wrong, so that a restore from the snapshot
    # still reports it as a full replay would: damaged spots (offset, bytes skipped,
    # records lost) and records that could not be read (seq, why).
    damaged: list[tuple[int, int, int]] = field(default_factory=list)
    unreadable: list[tuple[int, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# model <-> plain data


def encode_model(model: Model) -> dict[str, Any]:
    """Plain (CBOR-ready) data of a *replayed* model; ValueError for a live one."""
    return {
        "server_uid": model.server_uid,
        "server_started_at": model.server_started_at,
        "max_job_id": model.max_job_id,
        "max_worker_id": model.max_worker_id,
        "next_worker_id": model.next_worker_id,
        "warnings": list(model.warnings),
        "byteorder": sys.byteorder,  # of the packed task columns
        "workers": [_encode_worker(worker) for worker in model.workers.values()],
        "jobs": [_encode_job(job) for job in model.jobs.values()],
        "autoalloc": model.autoalloc.to_plain(),
    }


def _encode_worker(worker: Worker) -> list[Any]:
    if worker.held:
        raise ValueError("only a replayed model can be snapshotted (worker is held)")
    return [
        worker.id,
        dict(worker.configuration),
        worker.started_at,
        worker.lost_reason,
        worker.ended_at,
        worker.stop_requested,
        [list(key) for key in sorted(worker.tasks)],
        worker.n_running,
        list(worker.last_task_started) if worker.last_task_started is not None else None,
    ]


def _ints(values: list[int]) -> bytes:
    return array("q", values).tobytes()


def _floats(values: list[float | None]) -> bytes:
    return array("d", [_NONE_FLOAT if v is None else v for v in values]).tobytes()


def _encode_job(job: Job) -> list[Any]:
    records = list(job.records.values())
    for record in records:
        if record.allocation is not None:
            # A replay never allocates (task-assigned is not journaled); a live model does.
            raise ValueError("only a replayed model can be snapshotted (task holds resources)")
    return [
        job.id,
        job.name,
        job.max_fails,
        job.is_open,
        job.submitted_at,
        job.completed_at,
        job.cancel_reason,
        [job.counts[state] for state in _STATES],
        sorted(job.workers_used),
        [
            [
                dict(s.desc),
                s.submitted_at,
                s.cursor,
                list(s.ahead),
                [[first, end, _STATE_CODE[state], when] for first, end, state, when in s.dropped],
                s.pristine_left,
                list(s.requeued),
                [
                    [first, end, list(facts[:3]), list(facts.workers), *facts[4:]]
                    for first, end, facts in s.done
                ],
            ]
            for s in job.submits
        ],
        {
            "id": _ints([r.task_id for r in records]),
            "submit": _ints([r.submit.index for r in records]),
            "state": bytes([_STATE_CODE[r.state] for r in records]),
            "instance": _ints([r.instance for r in records]),
            "crashes": _ints([r.crash_count for r in records]),
            "worker": _ints([-1 if r.worker is None else r.worker for r in records]),
            "n_workers": _ints([len(r.workers) for r in records]),
            "workers": _ints([w for r in records for w in r.workers]),
            "placed": bytes([r.placed for r in records]),
            "queued": bytes([r.queued for r in records]),
            "started": _floats([r.started_at for r in records]),
            "finished": _floats([r.finished_at for r in records]),
            "variant": _ints([r.variant for r in records]),
            "errors": [[r.task_id, r.error] for r in records if r.error is not None],
        },
    ]


def decode_model(data: dict[str, Any]) -> Model:
    """Inverse of `encode_model`; raises KeyError/TypeError/ValueError if malformed."""
    model = Model()
    model.server_uid = data["server_uid"]
    model.server_started_at = data["server_started_at"]
    model.max_job_id = int(data["max_job_id"])
    model.max_worker_id = int(data["max_worker_id"])
    model.next_worker_id = int(data["next_worker_id"])
    model.warnings = [str(w) for w in data["warnings"]]
    model.autoalloc = AutoallocRecords.from_plain(data.get("autoalloc"))
    for raw in data["workers"]:
        worker = _decode_worker(raw)
        model.workers[worker.id] = worker
    swap = data["byteorder"] != sys.byteorder
    for raw in data["jobs"]:
        job = _decode_job(raw, swap)
        model.jobs[job.id] = job
    model.rebuild_ready()
    return model


def _decode_worker(raw: list[Any]) -> Worker:
    (worker_id, configuration, started_at, lost_reason, ended_at, stop_requested, tasks,
     n_running, last_started) = raw  # fmt: skip
    worker = Worker(int(worker_id), configuration, started_at)
    worker.lost_reason = lost_reason
    worker.ended_at = ended_at
    worker.stop_requested = bool(stop_requested)
    if lost_reason is not None:
        worker.allocator = None
    worker.tasks = {(int(job), int(task)) for job, task in tasks}
    worker.n_running = int(n_running)
    worker.last_task_started = tuple(last_started) if last_started is not None else None  # type: ignore[assignment]
    return worker


def _decode_ints(raw: bytes, swap: bool) -> list[int]:
    values = array("q")
    values.frombytes(raw)
    if swap:
        values.byteswap()
    return values.tolist()


def _decode_floats(raw: bytes, swap: bool) -> list[float | None]:
    values = array("d")
    values.frombytes(raw)
    if swap:
        values.byteswap()
    return [None if v != v else v for v in values.tolist()]  # NaN stands for None


def _decode_job(raw: list[Any], swap: bool) -> Job:
    (job_id, name, max_fails, is_open, submitted_at, completed_at, cancel_reason, counts,
     workers_used, submits, columns) = raw  # fmt: skip
    job = Job(int(job_id), name, max_fails, bool(is_open), submitted_at)
    job.completed_at = completed_at
    job.cancel_reason = cancel_reason
    for desc, submitted_at, cursor, ahead, dropped, pristine_left, requeued, *rest in submits:
        submit = job.add_submit(desc, float(submitted_at))
        submit.restore_progress(
            int(cursor),
            list(ahead),
            [(first, end, _STATES[code], float(when)) for first, end, code, when in dropped],
            int(pristine_left),
            list(requeued),
        )
        if rest:  # done runs (snapshots written before them have none)
            submit.restore_done(
                [
                    (
                        int(first),
                        int(end),
                        DoneFacts(
                            int(head[0]),
                            int(head[1]),
                            None if head[2] is None else int(head[2]),
                            tuple(int(w) for w in workers),
                            started,
                            finished,
                            int(variant),
                        ),
                    )
                    for first, end, head, workers, started, finished, variant in rest[0]
                ]
            )
    if len(counts) != len(_STATES):
        raise ValueError("snapshot has a wrong number of task counts")
    job.counts = dict(zip(_STATES, counts, strict=True))
    job.workers_used = set(workers_used)
    ids = _decode_ints(columns["id"], swap)
    n_workers = _decode_ints(columns["n_workers"], swap)
    flat_workers = _decode_ints(columns["workers"], swap)
    if sum(n_workers) != len(flat_workers):
        raise ValueError("snapshot has a wrong number of task workers")
    rows = zip(
        ids,
        _decode_ints(columns["submit"], swap),
        columns["state"],
        _decode_ints(columns["instance"], swap),
        _decode_ints(columns["crashes"], swap),
        _decode_ints(columns["worker"], swap),
        n_workers,
        columns["placed"],
        columns["queued"],
        _decode_floats(columns["started"], swap),
        _decode_floats(columns["finished"], swap),
        _decode_ints(columns["variant"], swap),
        strict=True,
    )
    submits_by_index = job.submits
    states = _STATES
    active_states = ACTIVE
    records = job.records
    active = job.active
    new = TaskRecord.__new__
    at = 0
    # A restore builds every record of every live job here: set the slots directly
    # rather than through __init__ and then again.
    for task_id, index, code, instance, crashes, worker, count, placed, queued, started, \
            finished, variant in rows:  # fmt: skip
        record = new(TaskRecord)
        record.task_id = task_id
        record.submit = submits_by_index[index]
        record.state = state = states[code]
        record.instance = instance
        record.crash_count = crashes
        record.worker = None if worker < 0 else worker
        record.workers = tuple(flat_workers[at : at + count]) if count else ()
        at += count
        record.placed = placed == 1
        record.allocation = None
        record.started_at = started
        record.finished_at = finished
        record.error = None
        record.variant = variant
        record.queued = queued == 1
        # A replayed model has no queue links (assignments are not journaled), so there
        # are none to keep; a reconnecting worker drops its queued tasks, and a restore
        # sends every task that had not started back to waiting (test_queue_behind).
        record.behind = record.successor = None
        records[task_id] = record
        if state in active_states:
            active[task_id] = record
    for task_id, error in columns["errors"]:
        records[task_id].error = str(error)
    return job


# ---------------------------------------------------------------------------------------
# files


def encode_snapshot(snapshot: Snapshot, journal_crc: int) -> bytes:
    body = encode_unbounded(
        {
            "journal_end": snapshot.journal_end,
            "journal_crc": journal_crc,
            "last_seq": snapshot.last_seq,
            "events": snapshot.events,
            "hyperq": __version__,
            "damaged": [list(d) for d in snapshot.damaged],
            "unreadable": [list(u) for u in snapshot.unreadable],
            "model": encode_model(snapshot.model),
        }
    )
    # The task columns are mostly small numbers in 8-byte slots: zlib shrinks them
    # several times over and inflates faster than the disk would read them.
    body = zlib.compress(body, 1)
    return MAGIC + HEAD.pack(FORMAT_VERSION, zlib.crc32(body)) + body


def load_matching(path: str, journal: bytes) -> Snapshot | None:
    """The snapshot at `path` if it is intact and `journal` still starts with the bytes it
    covers; None otherwise (logging why, unless there is simply no snapshot)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("Ignoring journal snapshot %s: %s", path, error.strerror)
        return None
    try:
        return _parse(data, journal)
    except (ProtocolError, KeyError, TypeError, ValueError, IndexError) as error:
        log.warning("Ignoring journal snapshot %s: %s; replaying the whole journal", path, error)
        return None


def _parse(data: bytes, journal: bytes) -> Snapshot | None:
    start = len(MAGIC) + HEAD.size
    if len(data) < start or data[: len(MAGIC)] != MAGIC:
        raise ValueError("not a hyperq snapshot")
    version, crc = HEAD.unpack_from(data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise ValueError(f"format version {version}, this hyperq reads {FORMAT_VERSION}")
    body = memoryview(data)[start:]
    if zlib.crc32(body) != crc:
        raise ValueError("checksum mismatch")
    value = decode_unbounded(zlib.decompress(body))
    if value.get("hyperq") != __version__:
        # Replay rules may differ between versions; the journal is the truth.
        raise ValueError(f"made by hyperq {value.get('hyperq')}, this is {__version__}")
    end = int(value["journal_end"])
    if end > len(journal) or zlib.crc32(memoryview(journal)[:end]) != value["journal_crc"]:
        # The journal was pruned or replaced since: the snapshot describes another file.
        log.info("Journal snapshot does not match the journal; replaying the whole journal")
        return None
    return Snapshot(
        decode_model(value["model"]),
        end,
        int(value["last_seq"]),
        int(value["events"]),
        [(int(o), int(b), int(r)) for o, b, r in value["damaged"]],
        [(int(seq), str(why)) for seq, why in value["unreadable"]],
    )


def write_snapshot(path: str, snapshot: Snapshot, journal: bytes) -> None:
    """Durably replace the snapshot at `path` (tmp file, fsync, rename, directory fsync)."""
    data = encode_snapshot(snapshot, zlib.crc32(memoryview(journal)[: snapshot.journal_end]))
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def remove_snapshot(journal_path: str) -> None:
    """Best effort: a snapshot left behind is ignored anyway once it no longer matches."""
    for path in (snapshot_path(journal_path), snapshot_path(journal_path) + ".tmp"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("Could not remove journal snapshot %s: %s", path, error.strerror)


def apply_records(
    model: Model, records: Iterable[tuple[int, Any]], unreadable: list[tuple[int, str]]
) -> int:
    """Apply journal records (seq, decoded payload) to `model`; returns how many were
    events. A record we cannot understand is skipped and added to `unreadable`."""
    count = 0
    apply = model.apply
    for seq, value in records:
        try:
            event = from_record(value)
        except (KeyError, TypeError, ValueError) as error:
            unreadable.append((seq, str(error)))
            continue
        apply(event)
        count += 1
    return count


def catch_up(journal: bytes, journal_path: str) -> tuple[Snapshot, ReadReport, int | None]:
    """Replay `journal` (the file's bytes): the snapshot beside it while it matches, then
    the records after it. Returns the result as a snapshot of all of `journal`, the
    report of reading those later records (torn tail, damage met now), and how many
    events came from the old snapshot (None: there was none to use)."""
    check_header(journal, journal_path)
    found = load_matching(snapshot_path(journal_path), journal)
    base = found if found is not None else Snapshot(Model(), len(HEADER), 0, 0)
    report = ReadReport(last_seq=base.last_seq, valid_end=base.journal_end)
    unreadable = list(base.unreadable)
    records = iter_records(journal, journal_path, report, start=report.valid_end)
    tail = apply_records(base.model, records, unreadable)
    caught_up = Snapshot(
        base.model,
        report.valid_end,
        report.last_seq,
        base.events + tail,
        base.damaged + report.damaged,
        unreadable,
    )
    return caught_up, report, (base.events if found is not None else None)


def build(journal_path: str, upto: int | None = None) -> Snapshot:
    """Bring the snapshot of `journal_path` up to `upto` (default: the whole file)."""
    with open(journal_path, "rb") as f:
        data = f.read() if upto is None else f.read(upto)
    snapshot, _report, _from_old = catch_up(data, journal_path)
    write_snapshot(snapshot_path(journal_path), snapshot, data)
    return snapshot


def main(argv: list[str]) -> int:
    """`python -m hyperq.server.journal.snapshot <journal> [--upto OFFSET]`, run by the server."""
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--upto"):
        print(
            "usage: python -m hyperq.server.journal.snapshot <journal> [--upto OFFSET]",
            file=sys.stderr,
        )
        return 2
    try:
        # Background work: let the server and the tasks have the CPU first. A short-lived
        # process building a million objects gains nothing from cyclic GC passes.
        os.nice(10)
        gc.disable()
        build(argv[0], int(argv[2]) if len(argv) == 3 else None)
    except Exception as error:  # one line for the server's log, never a traceback
        print(f"snapshot of {argv[0]} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

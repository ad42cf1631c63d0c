"""Journal snapshots: a restore from snapshot + tail equals a restore from every event."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperq.server.journal import snapshot as snap
from hyperq.server.journal.format import HEADER, encode_record
from hyperq.server.journal.recovery import recover
from hyperq.server.journal.restore import restore
from hyperq.server.model.events import Event, LostReason, persisted, to_record
from hyperq.server.model.state import Model
from hyperq.transport.codec import decode_unbounded, encode_unbounded
from tests.harness import ClusterEnv, wait_until
from tests.test_model import STEPS, Driver, _check_invariants, _drive, replayed, submit_desc


def through_bytes(model: Model) -> Model:
    """Encode to CBOR bytes and back, as the file does."""
    return snap.decode_model(decode_unbounded(encode_unbounded(snap.encode_model(model))))


def write_journal(path: Path, events: list[Event]) -> list[int]:
    """The journal file; returns the offset after each record."""
    ends = []
    with open(path, "wb") as f:
        f.write(HEADER)
        for seq, event in enumerate(events, 1):
            f.write(encode_record(seq, encode_unbounded(to_record(event))))
            ends.append(f.tell())
    return ends


def a_busy_history() -> list[Event]:
    d = Driver()
    worker = d.connect(cpus=2)
    job = d.submit(submit_desc([[0, 9, 1]]), max_fails=3)
    d.run()
    d.finish(job, 0)
    d.fail(job, 1, "Program terminated with exit code 1.")
    d.lose(worker, LostReason.CONNECTION_LOST)
    d.connect(cpus=1)
    d.run()
    opened = d.open_job(name="open")
    d.submit(submit_desc(entries=["a", "b"]), job_id=opened)
    d.do(d.model.cancel_job(job, now=d.now, reason="enough").events)
    d.submit(submit_desc([[0, 2_000, 1]]), name="big")
    d.run()
    return list(persisted(d.events))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS, st.integers(0, 1000))
def test_snapshot_then_tail_restores_like_a_full_replay(
    steps: list[tuple[str, int]], cut_at: int
) -> None:
    d = Driver()
    _drive(d, steps)
    journal = persisted(d.events)
    cut = cut_at % (len(journal) + 1)
    loaded = through_bytes(replayed(journal[:cut]))
    assert loaded.snapshot() == replayed(journal[:cut]).snapshot()
    from_snapshot = restore(journal[cut:], model=loaded)
    full = restore(journal)
    assert from_snapshot.snapshot() == full.snapshot()
    assert from_snapshot.next_worker_id == full.next_worker_id
    assert from_snapshot.next_job_id == full.next_job_id
    assert from_snapshot.warnings == full.warnings
    _check_invariants(from_snapshot)


def test_a_live_model_is_refused() -> None:
    d = Driver()
    d.connect(cpus=2)
    d.submit()
    d.schedule()  # the task now holds cpus on the worker: a replay never has that
    with pytest.raises(ValueError, match="replayed model"):
        snap.encode_model(d.model)


def test_recover_uses_the_snapshot_and_replays_only_the_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = a_busy_history()
    path = tmp_path / "journal.bin"
    ends = write_journal(path, events)
    middle = ends[len(ends) // 2]
    built = snap.build(str(path), upto=middle)
    assert (built.journal_end, built.events) == (middle, len(ends) // 2 + 1)

    expected = restore(events).snapshot()
    caplog.set_level(logging.INFO)
    recovery = recover(str(path))
    assert recovery.model is not None and recovery.model.snapshot() == expected
    assert recovery.events == len(events)
    assert recovery.unsnapshotted == len(events) - built.events
    assert recovery.next_seq == len(events) + 1
    assert f"({built.events} from its snapshot)" in caplog.text


def test_snapshot_is_brought_forward_incrementally(tmp_path: Path) -> None:
    events = a_busy_history()
    path = tmp_path / "journal.bin"
    ends = write_journal(path, events)
    snap.build(str(path), upto=ends[2])
    second = snap.build(str(path))
    assert (second.journal_end, second.events, second.last_seq) == (
        ends[-1],
        len(events),
        len(events),
    )
    assert (
        snap.decode_model(snap.encode_model(second.model)).snapshot() == replayed(events).snapshot()
    )


def test_a_snapshot_of_another_journal_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = a_busy_history()
    path = tmp_path / "journal.bin"
    write_journal(path, events)
    snap.build(str(path))
    # The journal is replaced (as a prune does) by one with different early records.
    write_journal(path, events[:3] + events[5:])
    caplog.set_level(logging.INFO)
    recovery = recover(str(path))
    assert "does not match the journal" in caplog.text
    assert recovery.model is not None
    assert recovery.model.snapshot() == restore(events[:3] + events[5:]).snapshot()
    assert recovery.unsnapshotted == len(events) - 2


@pytest.mark.parametrize(
    "damage", ["garbled", "truncated", "wrong-magic", "newer-version"], ids=str
)
def test_a_damaged_snapshot_falls_back_to_a_full_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    events = a_busy_history()
    path = tmp_path / "journal.bin"
    write_journal(path, events)
    snap.build(str(path))
    snapshot_file = Path(snap.snapshot_path(str(path)))
    data = bytearray(snapshot_file.read_bytes())
    if damage == "garbled":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncated":
        del data[len(data) // 2 :]
    elif damage == "wrong-magic":
        data[0:4] = b"XXXX"
    else:
        data[len(snap.MAGIC) : len(snap.MAGIC) + 2] = (snap.FORMAT_VERSION + 1).to_bytes(2, "big")
    snapshot_file.write_bytes(bytes(data))
    recovery = recover(str(path))
    assert "Ignoring journal snapshot" in caplog.text
    assert recovery.model is not None
    assert recovery.model.snapshot() == restore(events).snapshot()


def test_damage_under_the_snapshot_is_still_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot covering a damaged spot or an unreadable record keeps the report, so a
    restore from it warns exactly as a full replay would (and snapshots go on)."""
    events = a_busy_history()
    path = tmp_path / "journal.bin"
    ends = write_journal(path, events)
    data = bytearray(path.read_bytes())
    data[ends[3] + 20 : ends[4]] = bytes(ends[4] - ends[3] - 20)  # zero part of record 5
    unreadable = encode_record(len(events) + 1, encode_unbounded(["no-such-event", 1.0]))
    path.write_bytes(bytes(data) + unreadable)

    caplog.set_level(logging.INFO)
    full = recover(str(path))
    full_warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("is damaged at offset" in w for w in full_warnings)
    assert any("Skipping unreadable journal record" in w for w in full_warnings)

    built = snap.build(str(path))
    assert built.damaged and built.unreadable
    caplog.clear()
    recovery = recover(str(path))
    assert "from its snapshot" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == full_warnings
    assert recovery.model is not None and full.model is not None
    assert recovery.model.snapshot() == full.model.snapshot()


def test_a_snapshot_of_another_hyperq_version_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = a_busy_history()
    path = tmp_path / "journal.bin"
    write_journal(path, events)
    monkeypatch.setattr(snap, "__version__", "0.0.1")
    snap.build(str(path))
    monkeypatch.undo()
    recovery = recover(str(path))
    assert "made by hyperq 0.0.1" in caplog.text
    assert recovery.model is not None
    assert recovery.model.snapshot() == restore(events).snapshot()


def test_a_new_journal_removes_a_stale_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"
    write_journal(path, a_busy_history())
    snap.build(str(path))
    os.unlink(path)
    recovery = recover(str(path))
    assert recovery.model is None
    assert not os.path.exists(snap.snapshot_path(str(path)))


def test_server_snapshots_after_prune_and_restores_from_it(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "journal.bin")
    cluster.start_worker(cpus=2)
    cluster.command(["submit", "--array", "1-20", "--", "true"])
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.command(["submit", "--array", "1-5", "--", "sleep", "100"])
    cluster.wait_for_task_state(2, 1, "RUNNING")
    # A prune replaces the journal, so the server makes a snapshot of the new file.
    cluster.command(["journal", "prune"])
    snapshot_file = cluster.work_dir / "journal.bin.snapshot"
    wait_until(snapshot_file.exists)
    cluster.command(["submit", "--", "true"])
    cluster.stop_server(server)
    cluster.kill_all()

    cluster.start_server("--journal", "journal.bin", name="server2")
    assert "from its snapshot" in cluster.log_of("server2")
    jobs = {job["id"]: job for job in cluster.json(["job", "list", "--all"])}
    assert sorted(jobs) == [2, 3]  # job 1 completed before the prune: dropped
    assert jobs[2]["task_stats"]["waiting"] == 5
    assert jobs[3]["task_stats"]["waiting"] == 1

"""A small run of the scale benchmark (tools/bench_scale) as a correctness check.

Four zero-workers (HQ_ZERO_WORKER=1: every task is reported finished at once, nothing
is spawned) and one array of 20,000 tasks: every task must end exactly once, as
finished, and what the server says (`hq job list`, `hq job info`, the journal) must
agree. Not timed: the speed goals live in tools/bench_scale.
"""

from __future__ import annotations

import collections
import json
from typing import Any

from tests.harness import ClusterEnv, wait_until

WORKERS = 4
TASKS = 20_000


def zero_worker(cluster: ClusterEnv, cpus: int) -> None:
    env = {**cluster.env, "HQ_ZERO_WORKER": "1"}
    saved = cluster.env
    cluster.env = env
    try:
        cluster.start_worker(cpus=cpus)
    finally:
        cluster.env = saved


def export(cluster: ClusterEnv) -> list[dict[str, Any]]:
    out = cluster.run(["journal", "export", "journal.bin"], timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_zero_workers_finish_every_task_exactly_once(cluster: ClusterEnv) -> None:
    server = cluster.start_server("--journal", "journal.bin")
    for _ in range(WORKERS):
        zero_worker(cluster, cpus=128)
    cluster.command(
        ["submit", "--array", f"1-{TASKS}", "--stdout", "none", "--stderr", "none",
         "--wait", "--", "/nonexistent/program"],
        timeout=300,
    )
    # The program does not exist: only a worker that never spawns can finish it.
    info = cluster.json(["job", "info", "1"])[0]["info"]
    listed = cluster.json(["job", "list", "--all"])
    assert info["task_stats"] == {
        "waiting": 0, "running": 0, "finished": TASKS, "failed": 0, "canceled": 0,
        "aborted": 0,
    }
    assert [job["task_stats"] for job in listed if job["id"] == 1] == [info["task_stats"]]
    states = cluster.task_states(1)
    assert sorted(states) == list(range(1, TASKS + 1))
    assert collections.Counter(states.values()) == {"finished": TASKS}

    cluster.stop_server(server)
    events = [line["event"] for line in export(cluster)]
    finished = collections.Counter(
        event["task"] for event in events if event["type"] == "task-finished"
    )
    assert sorted(finished) == list(range(1, TASKS + 1))
    assert set(finished.values()) == {1}
    assert not [e for e in events if e["type"] in ("task-failed", "task-canceled")]
    for index in range(1, WORKERS + 1):
        assert "Zero-worker mode" in cluster.log_of(f"worker{index}")


def test_restore_from_a_journal_written_in_batches(cluster: ClusterEnv) -> None:
    """Zero-workers report their tasks in batches (`tasks-finished` range events); a
    server restored from that journal shows the same tasks (an open job survives the
    restore), and the export still lists one `task-finished` per task."""
    tasks = 3_000
    server = cluster.start_server("--journal", "journal.bin")
    for _ in range(2):
        zero_worker(cluster, cpus=64)
    cluster.command(["job", "open"])
    cluster.command(
        ["submit", "--job", "1", "--array", f"1-{tasks}", "--stdout", "none",
         "--stderr", "none", "--", "/nonexistent/program"],
    )  # fmt: skip

    def finished() -> bool:
        stats = cluster.json(["job", "info", "1"])[0]["info"]["task_stats"]
        return stats["finished"] == tasks

    wait_until(finished, timeout=120, what="every task finished")
    before_info = cluster.json(["job", "info", "1"])[0]["info"]
    before_tasks = cluster.json(["task", "list", "1"])
    cluster.stop_server(server)

    restored = cluster.start_server("--journal", "journal.bin", name="restored")
    after_info = cluster.json(["job", "info", "1"])[0]["info"]
    assert after_info["task_stats"] == before_info["task_stats"]
    assert cluster.json(["task", "list", "1"]) == before_tasks
    cluster.stop_server(restored)
    events = [line["event"] for line in export(cluster)]
    ended = collections.Counter(e["task"] for e in events if e["type"] == "task-finished")
    assert sorted(ended) == list(range(1, tasks + 1))
    assert set(ended.values()) == {1}
    started = [e for e in events if e["type"] == "task-started"]
    assert sorted(e["task"] for e in started) == list(range(1, tasks + 1))

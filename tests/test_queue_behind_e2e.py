"""Tasks queued behind running ones, through a real server and workers: they run on
their holder's CPUs only after it ended, each exactly once, and one queued behind a
task that runs long is given back and runs elsewhere."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

from tests.harness import ClusterEnv, wait_until


def test_short_tasks_queued_behind_others_never_share_a_cpu(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker("--debug", cpus=2)
    out = cluster.work_dir / "out"
    out.mkdir()
    # Each task writes its CPU and when it began and ended (from inside its process).
    script = f'b=$(date +%s%N); e=$(date +%s%N); echo "$HQ_CPUS $b $e" >> {out}/$HQ_TASK_ID'
    count = 300
    cluster.command(["submit", "--array", f"1-{count}", "--", "sh", "-c", script])
    cluster.wait_for_job_state(1, "FINISHED")
    log = cluster.log_of("worker1")
    # The server did queue tasks behind running ones (else this test proves nothing).
    assert "queued behind" in log
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for task in range(1, count + 1):
        lines = (out / str(task)).read_text().splitlines()
        assert len(lines) == 1, f"task {task} ran {len(lines)} times"
        cpus, begin, end = lines[0].split()
        spans[cpus].append((int(begin), int(end)))
    assert set(spans) == {"0", "1"}
    for cpu, runs in spans.items():
        runs.sort()
        for (_, end), (begin, _) in pairwise(runs):
            assert begin >= end, f"two tasks overlapped on CPU {cpu}"


def test_a_task_queued_behind_a_long_one_is_given_back_and_runs_elsewhere(
    cluster: ClusterEnv,
) -> None:
    cluster.start_server()
    cluster.start_worker("--debug", cpus=1)
    out = cluster.work_dir / "out"
    out.mkdir()
    gate = cluster.work_dir / "gate"
    # Task 1 ends at once (the job runs short), task 2 waits for the gate, so task 3
    # queued behind it waits too, until the worker gives it back.
    script = (
        f'if [ "$HQ_TASK_ID" = 2 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; fi; '
        f"echo $HQ_TASK_ID >> {out}/$HQ_TASK_ID"
    )
    cluster.command(["submit", "--array", "1-4", "--", "sh", "-c", script])
    wait_until(lambda: "giving it back" in cluster.log_of("worker1"), what="a task given back")
    assert "queued behind" in cluster.log_of("worker1")
    assert not (out / "3").exists()
    cluster.start_worker(cpus=1)
    # Given back, task 3 (and then 4) run on the second worker while task 2 still waits.
    wait_until(lambda: (out / "3").exists() and (out / "4").exists(), what="tasks 3 and 4")
    assert cluster.task_states(1)[2] == "running"
    gate.write_text("")
    cluster.wait_for_job_state(1, "FINISHED")
    assert {path.name: path.read_text() for path in out.iterdir()} == {
        str(task): f"{task}\n" for task in range(1, 5)
    }

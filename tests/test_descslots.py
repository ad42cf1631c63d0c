"""Launch descriptions in the worker's slots (hyperq.server.descslots): what a worker ends
up running must be exactly what the form with every description inline says, however
many distinct descriptions come and go; and end to end, with a real server and worker."""

from __future__ import annotations

import os
import signal
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperq.common.resources import (
    AllocatedResource,
    Allocation,
    AllocationPolicy,
    ResourceRequestEntry,
)
from hyperq.server.descslots import DescSlots
from hyperq.server.model.state import LaunchTask
from hyperq.server.workerconn import launch_message
from hyperq.transport import schemas
from tests.harness import ClusterEnv, wait_until

# (job, submit index, variant) of a task: what its description depends on.
Key = tuple[int, int, int]


class _Model:
    """What `launch_message` reads of the model: each task's submit and variant, and a
    description per submit that names them (two variants each, so that the variant
    shows in HQ_RESOURCE_VARIANT)."""

    def __init__(self) -> None:
        self.facts: dict[tuple[int, int], tuple[int, int, Any]] = {}

    def launch_facts(self, job_id: int, task_id: int) -> tuple[int, int, Any] | None:
        return self.facts.get((job_id, task_id))

    def submit_desc(self, job_id: int, index: int) -> dict[str, Any]:
        return {
            "program": {"args": [f"prog-{job_id}-{index}"], "cwd": "/", "env": {"A": "1"}},
            "submit_dir": f"/s{index}",
            "variants": [{}, {}],
            "time_limit": float(job_id),
        }


def _allocation(cpu: int, fraction: bool) -> Allocation:
    units = ((str(cpu), 10000),) if not fraction else ((str(cpu), 10000), ("9", 5000))
    amount = sum(share for _, share in units)
    request = ResourceRequestEntry("cpus", amount, AllocationPolicy("compact"))
    return Allocation((AllocatedResource("cpus", request, amount, units),))


class _Worker:
    """The worker's side as main.WorkerRuntime keeps it: a table of slots, filled by a
    message before its tasks are looked at."""

    def __init__(self) -> None:
        self.slots: dict[int, schemas.LaunchDesc] = {}

    def resolve(self, typed: Any) -> list[tuple[int, int, int, Any, Any]]:
        for defined in typed.slots:
            self.slots[defined.slot] = defined.desc
        out = []
        for row in typed.tasks:
            ref = row.desc
            desc = self.slots[ref] if type(ref) is int else typed.descs[ref]
            out.append((row.job, row.task, row.instance, desc, row.allocation))
        return out


def _typed(message: dict[str, Any]) -> Any:
    """`message` through CBOR and typed, as the worker receives it."""
    return schemas.convert_message(cbor2.loads(cbor2.dumps(message)), schemas.SERVER_MESSAGES)


keys = st.tuples(st.integers(1, 4), st.integers(0, 3), st.integers(0, 1))
batches = st.lists(
    st.lists(st.tuples(keys, st.booleans(), st.booleans()), min_size=1, max_size=8),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 5), batches=batches)
def test_slots_give_the_worker_the_descriptions_of_the_inline_form(
    capacity: int, batches: list[list[tuple[Key, bool, bool]]]
) -> None:
    """Up to 32 distinct descriptions through 1-5 slots: a message may need more than
    there are slots (the rest go inline), and later ones evict what earlier ones filled."""
    model = _Model()
    slots = DescSlots(capacity)
    worker = _Worker()
    next_task = 0
    for batch in batches:
        launch = []
        for (job, submit, variant), dropped, fraction in batch:
            task = next_task
            next_task += 1
            if not dropped:  # a task the model dropped since: not launched
                model.facts[(job, task)] = (submit, variant, None)
            launch.append(LaunchTask(1, job, task, 0, _allocation(task % 4, fraction)))
        inline = launch_message(model, launch)  # type: ignore[arg-type]
        slotted = launch_message(model, launch, slots)  # type: ignore[arg-type]
        if inline is None:
            assert slotted is None
            continue
        assert slotted is not None and slotted["op"] == inline["op"]
        assert len(slots) <= capacity
        typed = _typed(slotted)
        assert all(0 <= defined.slot < capacity for defined in typed.slots)
        # Each slot is filled at most once per message: a task never names a slot that
        # the same message fills again for another description.
        assert len({defined.slot for defined in typed.slots}) == len(typed.slots)
        assert worker.resolve(typed) == _Worker().resolve(_typed(inline))


def test_a_description_is_sent_once_per_connection() -> None:
    model = _Model()
    model.facts = {(1, task): (0, 0, None) for task in range(4)}
    slots = DescSlots()
    first = launch_message(model, [LaunchTask(1, 1, 0, 0, _allocation(0, False))], slots)  # type: ignore[arg-type]
    second = launch_message(model, [LaunchTask(1, 1, 1, 0, _allocation(1, False))], slots)  # type: ignore[arg-type]
    assert first is not None and second is not None
    assert [slot for slot, _desc in first["slots"]] == [0]
    assert "descs" not in first and "slots" not in second and "descs" not in second
    assert second["runs"][0][3] == 0
    # A new connection (a new DescSlots) sends it again.
    again = launch_message(model, [LaunchTask(1, 1, 2, 0, _allocation(0, False))], DescSlots())  # type: ignore[arg-type]
    assert again is not None and again["slots"] == first["slots"]


def test_the_least_recently_used_slot_is_overwritten() -> None:
    slots = DescSlots(2)
    assert slots.take((1, 0, 0), set()) == 0
    assert slots.take((2, 0, 0), set()) == 1
    assert slots.find((1, 0, 0)) == 0  # now (2, 0, 0) is the least recently used
    assert slots.take((3, 0, 0), set()) == 1
    assert slots.find((2, 0, 0)) is None
    # Not a slot that the message being built names already.
    assert slots.take((4, 0, 0), {0}) == 1
    assert slots.take((5, 0, 0), {0, 1}) is None
    with pytest.raises(ValueError):
        DescSlots(schemas.DESC_SLOTS + 1)


# --- end to end ---------------------------------------------------------------------------


def _alternating_job_file(count: int, out: str) -> str:
    """A job file of `count` tasks whose programs alternate between sh and bash and whose
    variables differ: `count` distinct descriptions, one submit each."""
    blocks = []
    for task in range(count):
        shell = "sh" if task % 2 else "bash"
        blocks.append(
            f"[[task]]\nid = {task}\n"
            f'command = ["{shell}", "-c", "echo {shell} $WORD > {out}/{task}"]\n'
            f'env = {{ WORD = "w{task}" }}\n'
        )
    return "\n".join(blocks)


def test_more_descriptions_than_slots_run_the_right_programs(cluster: ClusterEnv) -> None:
    """A job file's tasks are a submit each: more than a worker has slots, alternating
    programs, and two array jobs with programs of their own alongside."""
    cluster.start_server()
    out = cluster.work_dir / "out"
    out.mkdir()
    count = schemas.DESC_SLOTS + 16
    (cluster.work_dir / "job.toml").write_text(_alternating_job_file(count, str(out)))
    cluster.command(["job", "submit-file", "job.toml"])
    for name in ("one", "two"):
        script = f"echo {name} > {out}/{name}-$HQ_TASK_ID"
        cluster.command(["submit", "--array", "0-19", "--", "sh", "-c", script])
    cluster.start_worker(cpus=2)
    for job in (1, 2, 3):
        cluster.wait_for_job_state(job, "FINISHED")
    got = {path.name: path.read_text() for path in out.iterdir()}
    expected = {str(t): f"{'sh' if t % 2 else 'bash'} w{t}\n" for t in range(count)}
    expected.update({f"{name}-{t}": f"{name}\n" for name in ("one", "two") for t in range(20)})
    assert got == expected


def test_slots_start_empty_after_a_reconnect(cluster: ClusterEnv) -> None:
    """The worker's slots go with its connection: after a server crash, the tasks of a
    job that started before it run the job's program again (sent anew), and so do a new
    job's."""
    server = cluster.start_server("--journal", "journal.bin")
    cluster.start_worker("--on-server-lost", "reconnect", cpus=2)
    gate = cluster.work_dir / "gate"
    out = cluster.work_dir / "out"
    out.mkdir()
    wait_for_gate = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    cluster.command(
        [
            "submit",
            "--array",
            "0-5",
            "--",
            "bash",
            "-c",
            f"{wait_for_gate}; echo first > {out}/a$HQ_TASK_ID",
        ]
    )
    wait_until(
        lambda: list(cluster.task_states(1).values()).count("running") == 2,
        what="two tasks running",
    )
    cluster.command(["journal", "flush"])
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    cluster.start_server("--journal", "journal.bin", "--reconnect-grace", "30s", name="server2")
    wait_until(lambda: cluster.worker_states() == {1: "RUNNING"}, what="worker 1 to reconnect")
    second = f"echo second > {out}/b$HQ_TASK_ID"
    cluster.command(["submit", "--array", "0-3", "--", "sh", "-c", second])
    gate.write_text("")
    cluster.wait_for_job_state(1, "FINISHED")
    cluster.wait_for_job_state(2, "FINISHED")
    got = {path.name: path.read_text() for path in out.iterdir()}
    expected = {f"a{t}": "first\n" for t in range(6)}
    expected.update({f"b{t}": "second\n" for t in range(4)})
    assert got == expected
    assert "description slot" not in cluster.log_of("worker1")

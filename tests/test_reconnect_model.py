"""Restore with `reconnect` workers: held, then resumed or given up on (pure model)."""

from __future__ import annotations

from typing import Any

from hyperq.server.journal.restore import restore
from hyperq.server.model.events import persisted
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.scheduler import schedule
from tests.test_model import Driver, submit_desc, worker_config


def connect(driver: Driver, policy: str, cpus: int = 2) -> int:
    config: dict[str, Any] = {**worker_config(cpus), "on_server_lost": policy}
    (event,) = driver.do(driver.model.worker_connected(config, now=driver.now))
    return event.id  # type: ignore[attr-defined]


def crashed_with_running_tasks() -> tuple[Driver, int, int]:
    driver = Driver()
    keeper = connect(driver, "reconnect")
    stopper = connect(driver, "stop")
    driver.submit(submit_desc([[0, 3, 1]]))
    driver.schedule()
    for task in range(4):
        driver.start(1, task)
    return driver, keeper, stopper


def test_restore_holds_reconnect_workers_only() -> None:
    driver, keeper, stopper = crashed_with_running_tasks()
    on_keeper = sorted(t for j, t in driver.model.workers[keeper].tasks)
    model = restore(persisted(driver.events))
    assert model.held_workers() == [keeper]
    assert stopper not in model.workers
    states = {v.task_id: (v.state, v.instance) for v in model.iter_tasks(1)}
    for task, (state, instance) in states.items():
        if task in on_keeper:
            assert (state, instance) == (TaskState.RUNNING, 0)
        else:
            assert (state, instance) == (TaskState.WAITING, 1)
    # A held worker takes nothing new, and the next worker ID follows the journal rule.
    assert all(a.worker_id != keeper for a in schedule(model, driver.now))
    assert model.next_worker_id == max(keeper, stopper) + 2


def test_resumed_worker_keeps_known_tasks_and_requeues_the_rest() -> None:
    driver, keeper, _stopper = crashed_with_running_tasks()
    on_keeper = sorted(t for j, t in driver.model.workers[keeper].tasks)
    assert len(on_keeper) == 2
    model = restore(persisted(driver.events))
    known, forgotten = on_keeper
    for event in model.worker_resumed(keeper, [(1, known)], now=driver.now):
        model.apply(event)
    assert model.held_workers() == []
    assert model.task(1, known).state == TaskState.RUNNING
    assert model.task(1, known).instance == 0
    assert model.task(1, forgotten).state == TaskState.WAITING
    assert model.task(1, forgotten).instance == 1
    # The resumed worker reports its task as usual, and takes new work again.
    for event in model.task_finished(1, known, worker_id=keeper, instance=0, now=driver.now):
        model.apply(event)
    assert model.task(1, known).state == TaskState.FINISHED
    assert any(a.worker_id == keeper for a in schedule(model, driver.now))


def test_given_up_worker_returns_its_tasks() -> None:
    driver, keeper, _stopper = crashed_with_running_tasks()
    model = restore(persisted(driver.events))
    for event in model.worker_lost(keeper, now=driver.now, reason="ConnectionLost"):
        model.apply(event)
    assert model.held_workers() == []
    assert all(v.state == TaskState.WAITING for v in model.iter_tasks(1))


def test_a_stopped_reconnect_worker_is_not_held() -> None:
    """`hq worker stop` was acknowledged (so journaled) before the crash: the worker is
    leaving, and its tasks return to waiting at once instead of after the grace period."""
    driver, keeper, _stopper = crashed_with_running_tasks()
    driver.do(driver.model.stop_worker(keeper, now=driver.now))
    model = restore(persisted(driver.events))
    assert model.held_workers() == []
    assert keeper not in model.workers
    assert all(v.state == TaskState.WAITING for v in model.iter_tasks(1))


def test_a_result_queued_during_an_outage_keeps_its_time_but_not_its_effects() -> None:
    """The end is recorded when it happened; what it causes (here the job's completion)
    happens when the server learns of it, and an end is never put before the start."""
    driver = Driver()
    worker = connect(driver, "reconnect")
    driver.submit(submit_desc([[0, 1, 1]]))
    driver.schedule()
    driver.start(1, 0)
    driver.start(1, 1)
    started = driver.now
    driver.tick(100)
    events = driver.do(
        driver.model.task_finished(
            1, 0, worker_id=worker, instance=0, now=driver.now, ended_at=started + 40
        )
    )
    assert [(e.kind, e.time) for e in events] == [("task-finished", started + 40)]
    events = driver.do(
        driver.model.task_finished(
            1, 1, worker_id=worker, instance=0, now=driver.now, ended_at=started - 5
        )
    )
    assert [(e.kind, e.time) for e in events] == [
        ("task-finished", started),
        ("job-completed", driver.now),
    ]

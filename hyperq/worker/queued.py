"""Tasks a worker holds but has not started: each was launched with `after`
(schemas.After) and waits for a task this worker was given before to end, because it
takes over that task's allocation. The server sends them ahead so that the CPUs do not
idle for a round trip between one task's end and the next one's start.

Invariant: a queued task waits for a task the worker still holds (running, or queued
itself). The runtime keeps it by telling `ended` about every end, and `drop` hands a
dropped task's followers on to what it waited for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from hyperq.worker.launcher import TaskLaunchSpec

# A task queued this long while the one it waits for still runs is given back
# (schemas.Returned): the server may find it a worker that is free now.
QUEUED_RETURN_AFTER = 1.0

Key = tuple[int, int]


class Queued:
    __slots__ = ("deadline", "spec", "waits_for")

    def __init__(self, spec: TaskLaunchSpec, waits_for: Key, deadline: float) -> None:
        self.spec = spec
        self.waits_for = waits_for
        self.deadline = deadline

    @property
    def key(self) -> Key:
        return (self.spec.job_id, self.spec.task_id)


class TaskQueue:
    def __init__(self) -> None:
        # Queued tasks by their own (job, task), in the order they were queued.
        self.tasks: dict[Key, Queued] = {}
        # (job, task) waited for -> the queued tasks waiting for it, in order.
        self.behind: dict[Key, list[Key]] = {}
        # Where `give_back` sleeps; moving its deadline earlier wakes it sooner.
        self._sleep: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, spec: TaskLaunchSpec, waits_for: Key) -> None:
        """Queue `spec` behind `waits_for`, which the caller knows it holds."""
        key = (spec.job_id, spec.task_id)
        deadline = trio.current_time() + QUEUED_RETURN_AFTER
        self.tasks[key] = Queued(spec, waits_for, deadline)
        waiting = self.behind.get(waits_for)
        if waiting is None:
            self.behind[waits_for] = [key]
        else:
            waiting.append(key)
        sleep = self._sleep
        # Deadlines mostly come in order: only a queue that was empty wakes the service.
        if sleep is not None and deadline < sleep.deadline:
            sleep.deadline = deadline

    def ended(self, key: Key) -> list[Queued]:
        """`key` ended: the tasks that waited for it, out of the queue, to start now."""
        keys = self.behind.pop(key, None)
        if keys is None:
            return []
        tasks = self.tasks
        return [tasks.pop(waiting) for waiting in keys]

    def drop(self, key: Key) -> Queued | None:
        """Take a task out unstarted (cancelled, given back); the tasks queued behind it
        then wait for what it waited for, which the worker still holds."""
        queued = self.tasks.pop(key, None)
        if queued is None:
            return None
        target = queued.waits_for
        waiting = self.behind[target]
        waiting.remove(key)
        followers = self.behind.pop(key, None)
        if followers:
            for follower in followers:
                self.tasks[follower].waits_for = target
            waiting.extend(followers)
        if not waiting:
            del self.behind[target]
        return queued

    def clear(self) -> list[Queued]:
        """Every queued task, out of the queue (the worker ends or lost its server)."""
        dropped = list(self.tasks.values())
        self.tasks.clear()
        self.behind.clear()
        return dropped

    async def give_back(self, on_return: Callable[[Queued], None]) -> None:
        """Give back (`on_return`) each task still queued at its deadline. Sleeps until the
        earliest deadline, or until something is queued when nothing is."""
        while True:
            earliest = min((q.deadline for q in self.tasks.values()), default=math.inf)
            with trio.CancelScope(deadline=earliest) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            self._sleep = None
            now = trio.current_time()
            for queued in [q for q in self.tasks.values() if q.deadline <= now]:
                if self.drop(queued.key) is not None:
                    on_return(queued)

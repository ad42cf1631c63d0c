"""Task graphs in the model: ready lanes and dependency walks.

A graph task is a Submit of its own (`Submit.node` = its task ID), so every per-task
path of the model (records, views, launch descriptions) works for it unchanged, and only
graph tasks pay per-task memory. What the scheduler needs differs: thousands of ready
graph tasks must not cost a scheduling pass one entry each. So ready graph tasks of one
job that share a priority and resource variants sit in one *lane*, which the scheduler
walks like an array submit: in ascending task ID order.

Bookkeeping is O(1) per edge: a task holds a counter of unfinished dependencies, the job
holds the reverse edges (`Job.dependants`), and finishing a task touches only its
dependants. Pure data: no I/O, no clock, no trio.
"""

from __future__ import annotations

import itertools
from bisect import insort
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hyperq.common.resources import ResourceRequest
from hyperq.server.model.jobs import ACTIVE, Job

LaneKey = tuple[int, int, tuple[ResourceRequest, ...]]
"""(job ID, priority, resource variants)."""

# Stale entries skipped at the head of a lane before the list is compacted; compaction
# costs a copy of the rest, so it is done only when the skipped part dominates.
_COMPACT_AT = 512


class Lane:
    """Ready graph tasks of one job with one priority and one request, by ID.

    `ids[head:]` is sorted; an entry counts only while it is in `members` (removal is
    lazy: tasks leave the lane from its head far more often than from its middle).
    """

    __slots__ = ("head", "ids", "index", "job_id", "members", "priority", "variants")

    def __init__(self, key: LaneKey, index: int) -> None:
        self.job_id, self.priority, self.variants = key
        self.index = index  # unique among lanes: breaks ties in the scheduler's heap
        self.ids: list[int] = []
        self.head = 0
        self.members: set[int] = set()

    def __len__(self) -> int:
        return len(self.members)

    def add(self, task_id: int) -> None:
        if task_id in self.members:
            return
        self.members.add(task_id)
        ids = self.ids
        if len(ids) == self.head or ids[-1] < task_id:
            ids.append(task_id)
        else:
            insort(ids, task_id, lo=self.head)

    def extend(self, task_ids: list[int]) -> None:
        """Add many tasks, `task_ids` ascending: one bulk step when they all come after
        the lane's last ID (a new graph), else one by one."""
        ids = self.ids
        if (
            task_ids
            and (len(ids) == self.head or ids[-1] < task_ids[0])
            and self.members.isdisjoint(task_ids)
        ):
            self.members.update(task_ids)
            ids.extend(task_ids)
            return
        for task_id in task_ids:
            self.add(task_id)

    def discard(self, task_id: int) -> None:
        if task_id not in self.members:
            return
        self.members.remove(task_id)
        ids = self.ids
        head = self.head
        while head < len(ids) and ids[head] not in self.members:
            head += 1
        if head == len(ids):
            ids.clear()
            head = 0
        elif head >= _COMPACT_AT and head * 2 >= len(ids):
            del ids[:head]
            head = 0
        self.head = head

    def walk(self) -> Iterator[int]:
        """Member task IDs in ascending order (each once)."""
        members = self.members
        previous = -1
        ids = self.ids
        for index in range(self.head, len(ids)):
            task_id = ids[index]
            if task_id != previous and task_id in members:
                previous = task_id
                yield task_id


def transitive_dependants(job: Job, task_id: int, skip: set[int]) -> list[int]:
    """Waiting graph tasks that depend on `task_id`, directly or not, in ascending ID
    order; tasks in `skip` (and what only they lead to) are left out, and every task
    returned is added to `skip`."""
    found: list[int] = []
    stack = [task_id]
    while stack:
        for submit in job.dependants.get(stack.pop(), ()):
            node = submit.node
            if node is None or node in skip or job.state_of(node) not in ACTIVE:
                continue
            skip.add(node)
            found.append(node)
            stack.append(node)
    found.sort()
    return found


def expand_table(desc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The task descriptions of a graph submit kept in table form (`job-created` with
    `table`; hyperq.server.graphapi checked it), as `Model.submit_graph` makes them from
    task maps. The journal keeps the table: a 100,000-task submit is then a record of
    ~0.5 MB that encodes in milliseconds, where its descriptions took 12 MB and 0.25 s.

    `desc` = {"submit_dir", "stream_path", "group", "table": {"ids", "argvs",
    "templates", "argv_of", "shape_of", "dep_counts", "deps", "stdins"}}: task k has ID
    `ids[k]`, args `argvs[argv_of[k]]` and the rest of `templates[shape_of[k]]` (a
    description without `id`, `deps`, `stdin` and `program.args`); a missing column
    means index 0 for every task. Raises KeyError/TypeError/ValueError/IndexError if
    damaged."""
    table = desc["table"]
    ids: list[int] = table["ids"]
    count = len(ids)
    argvs = table["argvs"]
    shapes = table["templates"]
    base = {"submit_dir": desc["submit_dir"]}
    if desc.get("stream_path") is not None:
        base["stream_path"] = desc["stream_path"]
    base["graph"] = desc["group"]
    # Equal descriptions but for the ID share one program map (so they cost the memory
    # of one).
    made: dict[Any, dict[str, Any]] = {}

    def template(shape_index: int, argv_index: int) -> dict[str, Any]:
        shape = shapes[shape_index]
        program = {"args": argvs[argv_index], **shape["program"]}
        return {**shape, "program": program, **base}

    descs: list[dict[str, Any]] = []
    append = descs.append
    argv_of = table.get("argv_of")
    shape_of = table.get("shape_of")
    if argv_of is None:
        argv_of = itertools.repeat(0, count)
    if shape_of is None:
        for task_id, argv_index in zip(ids, argv_of, strict=False):
            found = made.get(argv_index)
            if found is None:
                found = made[argv_index] = template(0, argv_index)
            append({"id": task_id, **found})
    else:
        for task_id, argv_index, shape_index in zip(ids, argv_of, shape_of, strict=False):
            key = (shape_index, argv_index)
            found = made.get(key)
            if found is None:
                found = made[key] = template(shape_index, argv_index)
            append({"id": task_id, **found})
    if len(descs) != count:
        raise ValueError("graph table columns are shorter than its IDs")
    dep_counts = table.get("dep_counts")
    deps = table.get("deps")
    if dep_counts is not None and deps:
        if not isinstance(deps, list):
            deps = list(deps)
        offset = 0
        for task_desc, n_deps in zip(descs, dep_counts, strict=True):
            if n_deps:
                task_desc["deps"] = deps[offset : offset + n_deps]
                offset += n_deps
    for index, stdin in table.get("stdins") or ():
        descs[index]["stdin"] = stdin
    return descs


def table_deps(table: Mapping[str, Any]) -> list[Sequence[int]]:
    """Each task's deps of a graph table, in task order."""
    dep_counts = table.get("dep_counts")
    deps = table.get("deps") or []
    if dep_counts is None:
        return [()] * len(table["ids"])
    out: list[Sequence[int]] = []
    offset = 0
    for n_deps in dep_counts:
        out.append(deps[offset : offset + n_deps] if n_deps else ())
        offset += n_deps
    return out

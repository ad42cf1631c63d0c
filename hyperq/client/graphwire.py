"""The table form of a `submit-graph` request (`hyperq.transport.schemas.GraphTableWire`).

A graph of 100,000 tasks that differ only in their IDs, deps and a few arguments is sent
as columns of small integers plus one copy of each distinct value: the argument lists,
the *shapes* (everything else a task has but its stdin) and the resource requests. The
server then decodes a few hundred kilobytes instead of 100,000 maps and checks each
distinct value once. Both the Python API and `hq job submit-file` build it here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Bytes the columns cost per task at most (ID, two indexes, a dep count), for the
# estimate that splits a job too large for one frame.
TASK_BYTES = 24
DEP_BYTES = 9


def _text_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple((k, _freeze(v)) for k, v in value.items())
    return value


class GraphTable:
    """One submit's tasks in table form; `wire()` is its `submit_desc`.

    Add tasks in the order to send (deps only on earlier tasks or on tasks already in
    the job). `size` is an upper estimate of the encoded request in bytes.
    """

    def __init__(self, submit_dir: str, stream_path: str | None = None) -> None:
        self.submit_dir = submit_dir
        self.stream_path = stream_path
        self.ids: list[int] = []
        self.argv_of: list[int] = []
        self.shape_of: list[int] = []
        self.dep_counts: list[int] = []
        self.deps: list[int] = []
        self.stdins: list[tuple[int, bytes]] = []
        self.argvs: list[list[str]] = []
        self.shapes: list[dict[str, Any]] = []
        self.requests: list[Any] = []
        self._argv_index: dict[tuple[str, ...], int] = {}
        self._shape_index: dict[Any, int] = {}
        self._request_index: dict[Any, int] = {}
        self.size = 256 + _text_size(submit_dir) + _text_size(stream_path or "")

    def __len__(self) -> int:
        return len(self.ids)

    def request(self, wire: Any) -> int:
        """The index of a resource request (`ResourceRequest.to_wire()`) in the table."""
        key = _freeze(wire)
        index = self._request_index.get(key)
        if index is None:
            index = self._request_index[key] = len(self.requests)
            self.requests.append(wire)
            self.size += 64 + 48 * len(wire[0])
        return index

    def argv(self, args: Sequence[str]) -> int:
        key = tuple(args)
        index = self._argv_index.get(key)
        if index is None:
            index = self._argv_index[key] = len(self.argvs)
            self.argvs.append(list(args))
            self.size += 9 + sum(_text_size(arg) + 9 for arg in args)
        return index

    def shape(self, shape: dict[str, Any]) -> int:
        """The index of a shape (a `GraphShapeWire` as a map, defaults left out)."""
        key = _freeze(shape)
        index = self._shape_index.get(key)
        if index is None:
            index = self._shape_index[key] = len(self.shapes)
            self.shapes.append(shape)
            env = shape.get("env") or {}
            self.size += 256 + _text_size(shape.get("cwd") or "")
            self.size += sum(_text_size(k) + _text_size(v) + 18 for k, v in env.items())
            for stream in ("stdout", "stderr"):
                self.size += _text_size((shape.get(stream) or {}).get("path", ""))
        return index

    def add(
        self,
        task_id: int,
        argv: int,
        shape: int,
        deps: Sequence[int] = (),
        stdin: bytes | None = None,
    ) -> None:
        """One task by the indexes `argv()` and `shape()` gave."""
        position = len(self.ids)
        self.ids.append(task_id)
        self.argv_of.append(argv)
        self.shape_of.append(shape)
        self.dep_counts.append(len(deps))
        size = TASK_BYTES
        if deps:
            self.deps.extend(deps)
            size += DEP_BYTES * len(deps)
        if stdin:
            self.stdins.append((position, stdin))
            size += 16 + len(stdin)
        self.size += size

    def remove_last(self) -> None:
        """Take the last task out again (the values it brought stay; `size` is kept as an
        upper estimate)."""
        position = len(self.ids) - 1
        self.ids.pop()
        self.argv_of.pop()
        self.shape_of.pop()
        n_deps = self.dep_counts.pop()
        if n_deps:
            del self.deps[-n_deps:]
        if self.stdins and self.stdins[-1][0] == position:
            self.stdins.pop()

    def wire(self) -> dict[str, Any]:
        """The `submit_desc`; columns whose every entry is 0 are left out."""
        desc: dict[str, Any] = {
            "submit_dir": self.submit_dir,
            "stream_path": self.stream_path,
            "ids": self.ids,
            "argvs": self.argvs,
            "shapes": self.shapes,
            "requests": self.requests,
        }
        if len(self.argvs) > 1:
            desc["argv_of"] = self.argv_of
        if len(self.shapes) > 1:
            desc["shape_of"] = self.shape_of
        if self.deps:
            desc["dep_counts"] = self.dep_counts
            desc["deps"] = self.deps
        if self.stdins:
            desc["stdins"] = self.stdins
        return desc


# Keys of a task map that are the task's own, not its shape's.
_OWN = frozenset({"id", "deps", "stdin", "program"})
_PROGRAM_OWN = frozenset({"args"})
_PER_TASK = frozenset({"id", "deps", "stdin"})


def table_from_tasks(submit_desc: Mapping[str, Any]) -> dict[str, Any]:
    """A `submit_desc` with a list of task maps (`tasks`, as hyperq.server.graphapi
    describes them; requests inline or as indexes into `requests`) in table form."""
    table = GraphTable(submit_desc["submit_dir"], submit_desc.get("stream_path"))
    given = list(submit_desc.get("requests") or [])

    def request(value: Any) -> int:
        return table.request(given[value] if isinstance(value, int) else value)

    def indexes(task: Mapping[str, Any]) -> tuple[int, int]:
        program = task["program"]
        body: dict[str, Any] = {}
        for key, value in task.items():
            if key in _OWN:
                continue
            if key == "resources":
                body["resources"] = request(value)
            elif key == "variants":
                if value is not None:
                    body["variants"] = [request(v) for v in value]
            else:
                body[key] = value
        for key, value in program.items():
            if key not in _PROGRAM_OWN:
                body[key] = value
        return table.argv(program["args"]), table.shape(body)

    # Equal task bodies are usually the same objects (the job file parser shares them):
    # their indexes are worked out once per identity of the values.
    known: dict[tuple[Any, ...], tuple[int, int]] = {}
    keep: list[Any] = []  # keeps those values alive, so their identities stay unique
    ids, argv_of, shape_of = table.ids, table.argv_of, table.shape_of
    dep_counts, all_deps = table.dep_counts, table.deps
    for task in submit_desc["tasks"]:
        identity = tuple([(key, id(value)) for key, value in task.items() if key not in _PER_TASK])
        found = known.get(identity)
        if found is None:
            found = known[identity] = indexes(task)
            keep.append(list(task.values()))
        deps = task.get("deps")
        stdin = task.get("stdin")
        if stdin:
            table.add(task["id"], found[0], found[1], deps or (), stdin)
            continue
        ids.append(task["id"])
        argv_of.append(found[0])
        shape_of.append(found[1])
        if deps:
            dep_counts.append(len(deps))
            all_deps.extend(deps)
            table.size += TASK_BYTES + DEP_BYTES * len(deps)
        else:
            dep_counts.append(0)
            table.size += TASK_BYTES
    return table.wire()

"""`hq output-log <DIR> …`: read a stream directory offline (stream.md §4).

Needs no server: it reads `*.hqs` files through `hyperq.stream.reader`, which indexes
them chunk by chunk and reads back only the records printed, and prints task output
byte for byte. Damaged records are
reported on stderr and skipped; they never stop the command.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from hyperq.common import log
from hyperq.common.context import Context
from hyperq.common.errors import HqError, UsageError
from hyperq.common.idrange import IdRanges

USAGE = """Access output streamed into a directory with `--stream`

Usage:
  hq output-log [--server-uid <UID>] <DIR> summary
  hq output-log [--server-uid <UID>] <DIR> jobs
  hq output-log [--server-uid <UID>] <DIR> show [--job <ID>] [--channel <CHANNEL>]
  hq output-log [--server-uid <UID>] <DIR> cat <JOB> <CHANNEL> [--task <IDS>] [--allow-unfinished]
  hq output-log [--server-uid <UID>] <DIR> export <JOB> [--task <IDS>]

Arguments:
  <DIR>      Path of the stream directory
  <JOB>      Job ID
  <CHANNEL>  stdout or stderr

Options:
  --server-uid <UID>     Use only streams of this server instance
  --job <ID>             Show only the output of this job
  --channel <CHANNEL>    Show only this channel (stdout or stderr)
  --task <IDS>           Select tasks (e.g. `3-4,2`), in the order given
  --allow-unfinished     Print the output of tasks whose stream is not finished yet
"""

CHANNELS = ("stdout", "stderr")
# Background colours of `show` headers by task ID mod 6: red, green, yellow, blue,
# magenta, cyan.
_BACKGROUNDS = (41, 42, 43, 44, 45, 46)


def _channel(text: str, option: str) -> int:
    if text not in CHANNELS:
        raise UsageError(
            f"error: invalid value '{text}' for '{option}'\n  [possible values: stdout, stderr]"
        )
    return CHANNELS.index(text)


def _number(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(
            f"error: invalid value '{text}' for '{name}': invalid digit found in string"
        )
    return value


def _task_order(text: str) -> list[int]:
    """`3-4,2` → [3, 4, 2]: the IDs in the order written (stream.md §4.4)."""
    ids: list[int] = []
    for part in text.split(","):
        ids.extend(IdRanges.parse(part))
    return ids


def format_size(n: int) -> str:
    if n < 2048:
        return f"{n} B"
    for unit, scale in (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3)):
        if n < 2048 * scale or unit == "GiB":
            return f"{n / scale:.2f} {unit}"
    raise AssertionError("unreachable")


def _report_damage(index: Any) -> None:
    for damage in index.damages:
        log.warn(damage.message())


def _selected(index: Any, job: int, tasks: str | None) -> list[int]:
    """The task IDs of `job` to print; the not-found errors of stream.md §4.4."""
    if job not in index.jobs:
        raise HqError(f"Job {job} not found")
    known = index.jobs[job]
    if tasks is None:
        return sorted(known)
    selected = _task_order(tasks)
    for task in selected:
        if task not in known:
            raise HqError(f"Task {task} not found")
    return selected


def _write(data: bytes | memoryview) -> None:
    sys.stdout.buffer.write(data)


# --- subcommands --------------------------------------------------------------------------


def summary(ctx: Context, index: Any, directory: str) -> None:
    n_tasks = n_streams = n_opened = 0
    sizes = [0, 0]
    superseded = [0, 0]
    for tasks in index.jobs.values():
        for instances in tasks.values():
            n_tasks += 1
            n_streams += len(instances)
            current = max(instances)
            for instance_id, instance in instances.items():
                target = sizes if instance_id == current else superseded
                target[0] += instance.total(0)
                target[1] += instance.total(1)
            if not instances[current].finished:
                n_opened += 1
    if ctx.output_mode == "quiet":
        return
    if ctx.output_mode == "json":
        body = {
            "filename": directory,
            "summary": {
                "n_files": len(index.files),
                "n_jobs": len(index.jobs),
                "n_tasks": n_tasks,
                "n_streams": n_streams,
                "n_opened": n_opened,
                "stdout_size": sizes[0],
                "stderr_size": sizes[1],
                "n_superseded": n_streams - n_tasks,
                "superseded_stdout_size": superseded[0],
                "superseded_stderr_size": superseded[1],
            },
        }
        print(json.dumps(body, indent=2))
        return
    from hyperq.output.table import render_vertical

    rows = [
        ("Path", directory),
        ("Files", len(index.files)),
        ("Jobs", len(index.jobs)),
        ("Tasks", n_tasks),
        ("Opened streams", n_opened),
        ("Stdout/stderr size", f"{format_size(sizes[0])} / {format_size(sizes[1])}"),
        ("Superseded streams", n_streams - n_tasks),
        (
            "Superseded stdout/stderr size",
            f"{format_size(superseded[0])} / {format_size(superseded[1])}",
        ),
    ]
    print(render_vertical(rows, colors=ctx.colors))


def jobs(index: Any) -> None:
    for job in sorted(index.jobs):
        print(job)


def show(ctx: Context, index: Any, job: int | None, channel: int | None) -> None:
    if not index.jobs:
        return
    job_width = len(str(max(index.jobs)))
    task_width = max(len(str(max(tasks))) for tasks in index.jobs.values() if tasks)
    # (time, job, task, channel, file order) sorts as stream.md §4.3 asks.
    items = []
    for job_id, tasks in index.jobs.items():
        if job is not None and job_id != job:
            continue
        for task_id, instances in tasks.items():
            instance = instances[max(instances)]
            for order, (chan, offset, size, time_ms) in enumerate(instance.records):
                if channel is None or chan == channel:
                    items.append(
                        (time_ms, job_id, task_id, chan, order, instance.file, offset, size)
                    )
    items.sort()
    out = sys.stdout.buffer
    datas = index.read_many((file, offset, size) for *_key, file, offset, size in items)
    for (_time, job_id, task_id, chan, *_rest), data in zip(items, datas, strict=True):
        header = f"{job_id:0{job_width}}.{task_id:0{task_width}}:{chan}>"
        if ctx.colors:
            header = f"\x1b[{_BACKGROUNDS[task_id % 6]}m{header}\x1b[0m"
        text = data.decode("utf-8", errors="replace")
        if not text.endswith("\n"):
            text += "\n"
        out.write(f"{header} {text}".encode())


def cat(index: Any, job: int, channel: int, tasks: str | None, allow_unfinished: bool) -> None:
    selected = _selected(index, job, tasks)
    if not allow_unfinished:
        for task in selected:
            if not index.current(job, task).finished:
                raise HqError(f"Stream for task {task} is not finished")
    refs = []
    for task in selected:
        instance = index.current(job, task)
        file = instance.file
        refs.extend(
            (file, offset, size)
            for chan, offset, size, _time in instance.records
            if chan == channel
        )
    for chunk in index.read_many(refs):
        _write(chunk)


def export(index: Any, job: int, tasks: str | None) -> None:
    selected = _selected(index, job, tasks)
    items = []
    for task in selected:
        instance = index.current(job, task)
        stdout = b"".join(index.data(instance, 0))
        items.append(
            {
                "finished": instance.finished,
                "id": task,
                "stdout": stdout.decode("utf-8", errors="replace"),
            }
        )
    print(json.dumps(items, indent=2))


def output_log(ctx: Context, args: dict[str, Any]) -> int:
    from hyperq.stream.reader import load

    directory: str = args["<DIR>"]
    # Usage errors (exit 2) come before reading anything.
    job = _number(args["<JOB>"], "<JOB>") if args["<JOB>"] is not None else None
    channel: int | None = None
    if args["<CHANNEL>"] is not None:
        channel = _channel(args["<CHANNEL>"], "<CHANNEL>")
    elif args["--channel"] is not None:
        channel = _channel(args["--channel"], "--channel <CHANNEL>")
    show_job = _number(args["--job"], "--job <ID>") if args["--job"] is not None else None
    if args["--task"] is not None:
        _task_order(args["--task"])
    index = load(directory, args["--server-uid"])
    try:
        _report_damage(index)
        sys.stdout.flush()
        if args["summary"]:
            summary(ctx, index, directory)
        elif args["jobs"]:
            jobs(index)
        elif args["show"]:
            show(ctx, index, show_job, channel)
        elif args["cat"]:
            assert job is not None and channel is not None
            cat(index, job, channel, args["--task"], bool(args["--allow-unfinished"]))
        elif args["export"]:
            assert job is not None
            export(index, job, args["--task"])
        sys.stdout.flush()
    finally:
        index.close()
    return 0


COMMANDS = {"output-log": (USAGE, output_log, False)}

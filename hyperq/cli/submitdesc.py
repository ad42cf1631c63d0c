"""From `hq submit` arguments to the `job_desc` and `submit_desc` the server receives.

Everything `hq submit` decides on the client lives here, separate from the connection
and the printing, so that every option, default, error and warning (jobs.md §1-§3) can
be tested without a server. It reads only the local files the options name (the
`--each-line` / `--from-json` inputs and a script's head for `#HQ` directives), through
a `reader` the caller may replace; it never prints, logs or connects: warnings are
returned for the caller to log.

Placeholders: the client sends `cwd`, `stdout`, `stderr` and `stream_path` as the raw
templates the user wrote (or the defaults `%{SUBMIT_DIR}` and
`%{CWD}/job-%{JOB_ID}/%{TASK_ID}.std…`). Stage 1 of jobs.md §2 happens on the server
(`Model.submit`), because only the server knows `JOB_ID` and `SERVER_UID`:
`hyperq.common.placeholders.resolve_paths(cwd, stdout_path, stderr_path,
submit_values(job_id, submit_dir, server_uid), submit_dir)`, storing the results back
into `program` (and `stream_path` filled with the same values, then made absolute
against `submit_dir`). Stage 2 is the worker's, at task start. The client only checks
templates (unknown names, `%{CWD}` inside `--cwd`, arrays without `%{TASK_ID}`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from hyperq.cli.directives import (
    INVALID_DIRECTIVE,
    MAX_SCAN_BYTES,
    directive_arguments,
    parse_directive_options,
    scan_script,
)
from hyperq.common.errors import HqError, UsageError
from hyperq.common.idrange import IdRanges

DEFAULT_CWD = "%{SUBMIT_DIR}"
DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"
DEFAULT_CRASH_LIMIT = 5
DEFAULT_JOB_NAME = "job"
MANY_FILES_LIMIT = 999
"""More task output files than this without `--stream` earns a warning."""

STREAM_PIPE = "<pipe>"
"""The path of a streamed channel on the wire; shown as `<Stream>` (stream.md §1)."""

STDIN_PROMPT = "Reading data from stdin. In the interactive mode press Ctrl-D to submit."
DIRECTIVE_MODES = ("auto", "file", "stdin", "off")
PIN_MODES = ("taskset", "omp")
CRASH_LIMIT_WORDS = ("never-restart", "unlimited")
_I32 = 2**31
_U32 = 2**32

CLI = "cli"
DIRECTIVE = "directive"

Reader = Callable[[str, "int | None"], bytes]
"""reader(path, limit): the file's bytes (the first `limit` bytes if not None); OSError."""


def read_local_file(path: str, limit: int | None) -> bytes:
    with open(path, "rb") as f:
        return f.read() if limit is None else f.read(limit)


@dataclass(frozen=True)
class OutputSpec:
    """`--stdout` / `--stderr`: `none` (discard), a path, or the default path (`path` None)."""

    path: str | None
    rm_if_finished: bool = False
    discard: bool = False


@dataclass
class TaskOptions:
    """The options `#HQ` directives may set too. None (or empty, False) = not given."""

    name: str | None = None
    max_fails: int | None = None
    nodes: int | None = None
    cpus: str | None = None
    resources: list[str] = field(default_factory=list)
    time_request: float | None = None
    weight: int | None = None
    pin: str | None = None
    cwd: str | None = None
    stdout: OutputSpec | None = None
    stderr: OutputSpec | None = None
    env: list[tuple[str, str]] = field(default_factory=list)
    each_line: str | None = None
    from_json: str | None = None
    array: IdRanges | None = None
    priority: int | None = None
    time_limit: float | None = None
    stream: str | None = None
    task_dir: bool = False
    crash_limit: int | str | None = None


@dataclass
class SubmitRequest:
    """A parsed `hq submit` command line, before directives, stdin and files."""

    options: TaskOptions
    command: list[str]
    job: int | None = None
    wait: bool = False
    progress: bool = False
    stdin: bool = False
    directives: str = "auto"
    on_notify: str | None = None


@dataclass
class BuiltSubmit:
    """What goes to the server, plus the warnings to log before sending it."""

    job_desc: dict[str, Any]
    submit_desc: dict[str, Any]
    warnings: list[str]
    task_count: int


# ---------------------------------------------------------------------------------------
# Arguments → options


class _Source:
    """Where options come from; decides how a bad value is reported."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def error(self, message: str) -> HqError:
        if self.origin == CLI:
            return UsageError(message)
        return HqError(f"{INVALID_DIRECTIVE}\n{message}")

    def invalid(self, option: str, metavar: str, value: str, reason: str) -> HqError:
        return self.error(f"error: invalid value '{value}' for '{option} <{metavar}>': {reason}")

    def conflict(self, first: str, second: str) -> HqError:
        return self.error(f"error: the argument '{first}' cannot be used with '{second}'")


def _int(source: _Source, option: str, metavar: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise source.invalid(option, metavar, value, "invalid digit found in string") from None
    if not low <= number < high:
        raise source.invalid(option, metavar, value, f"number not in range {low}..{high - 1}")
    return number


def _duration(source: _Source, option: str, value: str) -> float:
    from hyperq.common.duration import parse_duration

    try:
        return parse_duration(value)
    except HqError as error:
        raise source.invalid(option, "DURATION", value, error.message) from None


def parse_output_spec(text: str) -> OutputSpec:
    """`none`, `<path>`, `<path>:rm-if-finished` or `:rm-if-finished`; ValueError if bad."""
    if text == "none":
        return OutputSpec(None, discard=True)
    path, colon, mode = text.partition(":")
    if colon and mode != "rm-if-finished":
        raise ValueError(
            "expected `none`, `<path>`, `<path>:rm-if-finished` or `:rm-if-finished` "
            "(the path may not contain `:`)"
        )
    path = path.strip()
    if not path and not colon:
        raise ValueError("the value cannot be empty")
    return OutputSpec(path or None, rm_if_finished=bool(colon))


def parse_env(text: str) -> tuple[str, str]:
    """`KEY=VALUE` (or `KEY`: empty value); ValueError if empty."""
    if not text:
        raise ValueError("Environment variable cannot be empty")
    key, _sep, value = text.partition("=")
    return key, value


def parse_crash_limit(text: str) -> int | str:
    """`never-restart`, `unlimited` or a number > 0; ValueError otherwise."""
    word = text.strip()
    if word in CRASH_LIMIT_WORDS:
        return word
    try:
        number = int(word)
    except ValueError:
        raise ValueError("expected a number, `never-restart` or `unlimited`") from None
    if number == 0:
        raise ValueError("Crash limit cannot be 0. Use `never-restart` or `unlimited` instead.")
    if not 0 < number < _U32:
        raise ValueError(f"number not in range 1..{_U32 - 1}")
    return number


def options_from_args(args: Mapping[str, Any], origin: str = CLI) -> TaskOptions:
    """Validate and convert one source of options (docopt's map or parsed directives)."""
    from hyperq.common.resources import parse_amount

    source = _Source(origin)
    opts = TaskOptions()

    def value(option: str) -> str | None:
        raw = args.get(option)
        return raw if isinstance(raw, str) else None

    if (name := value("--name")) is not None:
        opts.name = name
    if (text := value("--max-fails")) is not None:
        opts.max_fails = _int(source, "--max-fails", "MAX_FAILS", text, 0, _U32)
    if (text := value("--nodes")) is not None:
        opts.nodes = _int(source, "--nodes", "NODES", text, 0, _U32)
    opts.cpus = value("--cpus")
    opts.resources = list(args.get("--resource") or [])
    if (text := value("--time-request")) is not None:
        opts.time_request = _duration(source, "--time-request", text)
    if (text := value("--weight")) is not None:
        try:
            weight = parse_amount(text)
        except HqError as error:
            raise source.invalid("--weight", "WEIGHT", text, error.message) from None
        if weight <= 0:
            raise source.invalid("--weight", "WEIGHT", text, "the weight must be greater than 0")
        opts.weight = weight
    if (text := value("--pin")) is not None:
        if text not in PIN_MODES:
            raise source.error(
                f"error: invalid value '{text}' for '--pin <PIN>'\n"
                f"  [possible values: {', '.join(PIN_MODES)}]"
            )
        opts.pin = text
    opts.cwd = value("--cwd")
    for option, attr in (("--stdout", "stdout"), ("--stderr", "stderr")):
        if (text := value(option)) is not None:
            try:
                setattr(opts, attr, parse_output_spec(text))
            except ValueError as error:
                raise source.invalid(option, attr.upper(), text, str(error)) from None
    for text in args.get("--env") or []:
        try:
            opts.env.append(parse_env(text))
        except ValueError as error:
            raise source.invalid("--env", "ENV", text, str(error)) from None
    opts.each_line = value("--each-line")
    opts.from_json = value("--from-json")
    if opts.each_line is not None and opts.from_json is not None:
        raise source.conflict("--from-json <FROM_JSON>", "--each-line <EACH_LINE>")
    if (text := value("--array")) is not None:
        try:
            opts.array = IdRanges.parse(text)
        except HqError as error:
            raise source.invalid("--array", "ARRAY", text, error.message) from None
    if (text := value("--priority")) is not None:
        opts.priority = _int(source, "--priority", "PRIORITY", text, -_I32, _I32)
    if (text := value("--time-limit")) is not None:
        opts.time_limit = _duration(source, "--time-limit", text)
    opts.stream = value("--stream")
    opts.task_dir = bool(args.get("--task-dir"))
    if (text := value("--crash-limit")) is not None:
        try:
            opts.crash_limit = parse_crash_limit(text)
        except ValueError as error:
            raise source.invalid("--crash-limit", "CRASH_LIMIT", text, str(error)) from None
    if opts.nodes is not None:
        if opts.cpus is not None:
            raise source.conflict("--nodes <NODES>", "--cpus <CPUS>")
        if opts.pin is not None:
            raise source.conflict("--nodes <NODES>", "--pin <PIN>")
    return opts


def request_from_args(args: Mapping[str, Any]) -> SubmitRequest:
    """The command line of `hq submit` (docopt's map, `<command>` split off) → request."""
    options = options_from_args(args, CLI)
    command = list(args.get("<command>") or [])
    if not command:
        raise UsageError(
            "error: the following required arguments were not provided:\n  <COMMANDS>...\n\n"
            "Usage: hq submit [OPTIONS] <COMMANDS>..."
        )
    if args.get("--wait") and args.get("--progress"):
        raise UsageError("error: the argument '--wait' cannot be used with '--progress'")
    mode = args.get("--directives") or "auto"
    if mode not in DIRECTIVE_MODES:
        raise UsageError(
            f"error: invalid value '{mode}' for '--directives <DIRECTIVES>'\n"
            f"  [possible values: {', '.join(DIRECTIVE_MODES)}]"
        )
    job: int | None = None
    if (text := args.get("--job")) is not None:
        job = _int(_Source(CLI), "--job", "JOB", text, 0, _U32)
    return SubmitRequest(
        options=options,
        command=command,
        job=job,
        wait=bool(args.get("--wait")),
        progress=bool(args.get("--progress")),
        stdin=bool(args.get("--stdin")),
        directives=mode,
        on_notify=args.get("--on-notify"),
    )


def merge_options(cli: TaskOptions, directive: TaskOptions) -> TaskOptions:
    """Command line over directives over defaults (jobs.md §3).

    Lists are concatenated: resources command line first; environment variables
    directives first, so that for a key given in both the command line's value (the
    later one) wins. The task-ID group (--array, --each-line, --from-json) comes
    wholly from one source, so a script's `--array` never mixes with a CLI `--each-line`.
    """
    merged = TaskOptions()
    for name in TaskOptions.__dataclass_fields__:
        if name in ("resources", "env", "task_dir", "array", "each_line", "from_json"):
            continue
        mine = getattr(cli, name)
        setattr(merged, name, mine if mine is not None else getattr(directive, name))
    merged.resources = [*cli.resources, *directive.resources]
    merged.env = [*directive.env, *cli.env]
    merged.task_dir = cli.task_dir or directive.task_dir
    group = directive
    if cli.array is not None or cli.each_line is not None or cli.from_json is not None:
        group = cli
    merged.array, merged.each_line, merged.from_json = (
        group.array,
        group.each_line,
        group.from_json,
    )
    return merged


# ---------------------------------------------------------------------------------------
# Directives, entries, task IDs


def apply_directives(
    request: SubmitRequest, stdin: bytes | None, reader: Reader = read_local_file
) -> tuple[TaskOptions, list[str]]:
    """Merge the `#HQ` directives the mode asks for; returns (options, command)."""
    command = request.command
    mode = request.directives
    if mode == "stdin":
        if stdin is None:
            raise HqError("You have to use `--stdin` when you specify `--directives=stdin`.")
        data = stdin[:MAX_SCAN_BYTES]
    elif mode == "file" or (mode == "auto" and command[0].endswith(".sh")):
        try:
            data = reader(command[0], MAX_SCAN_BYTES)
        except OSError as error:
            reason = error.strerror or str(error)
            raise HqError(f"Could not parse directives from {command[0]}: {reason}") from None
    else:
        return request.options, command
    header = scan_script(data)
    found = parse_directive_options(directive_arguments(header))
    options = merge_options(request.options, options_from_args(found, DIRECTIVE))
    # The interpreter only matters when the script itself is the command; with --stdin
    # the data is fed to the command, whose own interpreter reads it.
    if header.shebang and not request.stdin:
        command = [*header.shebang, *command]
    return options, command


def _read_input(path: str, reader: Reader) -> bytes:
    try:
        return reader(path, None)
    except OSError as error:
        raise HqError(f"Cannot read file `{path}`: {error.strerror or error}") from None


def read_entries(options: TaskOptions, reader: Reader = read_local_file) -> list[str] | None:
    """`--each-line` lines or `--from-json` elements (compact JSON), or None."""
    if options.each_line is not None:
        data = _read_input(options.each_line, reader)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        # The wire carries text; undecodable bytes must not stop a submit.
        return [line.decode("utf-8", errors="replace") for line in lines]
    if options.from_json is not None:
        import json

        data = _read_input(options.from_json, reader)

        def reject_constant(name: str) -> Any:
            raise ValueError(f"{name} is not valid JSON")

        try:
            root = json.loads(data, parse_constant=reject_constant)
        except ValueError as error:
            raise HqError(f"{options.from_json}: Invalid JSON: {error}") from None
        if not isinstance(root, list):
            raise HqError(
                f"{options.from_json}: The top element of the provided JSON file has to be an array"
            )
        return [json.dumps(item, separators=(",", ":"), ensure_ascii=False) for item in root]
    return None


def task_ids(
    array: IdRanges | None, entries: list[str] | None
) -> tuple[list[list[int]] | None, list[str] | None, int]:
    """(wire ids or None for "server chooses", entries to send, task count).

    With both an array and entries, only entries whose index is in the array become
    tasks (task ID = index). The server finds task T's entry at `entries[T]` when IDs
    are given, so the list is sent unfiltered, cut after the last used index.
    """
    if array is None:
        return None, entries, 1 if entries is None else len(entries)
    if entries is None:
        return [list(item) for item in array.items], None, len(array)
    kept = [index for index in range(len(entries)) if index in array]
    ids = IdRanges.from_ids(kept)
    used = entries[: kept[-1] + 1] if kept else []
    return [list(item) for item in ids.items], used, len(kept)


# ---------------------------------------------------------------------------------------
# Checks and warnings


def check_suspicious(options: TaskOptions, task_count: int) -> list[str]:
    """The warnings of jobs.md §1 (the submit goes on); raises for a `%{CWD}` in --cwd."""
    from hyperq.common.placeholders import TASK_ID, placeholder_names, unknown_placeholders

    warnings: list[str] = []
    channels = (("stdout", options.stdout), ("stderr", options.stderr))

    file_backed = [name for name, spec in channels if spec is None or not spec.discard]
    files = task_count * len(file_backed)
    if task_count >= 2 and files > MANY_FILES_LIMIT and options.stream is None:
        warnings.append(
            f"The job will create {files} files for {' and '.join(file_backed)}. "
            "Consider using the `--stream` option to stream all outputs into a single file"
        )

    if task_count > 1:
        for name, spec in channels:
            if spec is None or spec.path is None:
                continue
            joined = spec.path
            if not joined.startswith("/") and options.cwd:
                joined = os.path.join(options.cwd, joined)
            if TASK_ID not in placeholder_names(joined):
                warnings.append(
                    f"You have submitted an array job, but the `{name}` path does not contain "
                    "the task ID placeholder.\nIndividual tasks might thus overwrite the file. "
                    f"Consider adding `%{{TASK_ID}}` to the `--{name}` value."
                )

    contexts = (
        (options.stdout.path if options.stdout else None, "stdout path"),
        (options.stderr.path if options.stderr else None, "stderr path"),
        (options.stream, "log path"),
        (options.cwd, "working directory path"),
    )
    for template, context in contexts:
        if not template:
            continue
        unknown = list(dict.fromkeys(unknown_placeholders(template)))
        if unknown:
            noun = "placeholder" if len(unknown) == 1 else "placeholders"
            warnings.append(f"Found unknown {noun} `{', '.join(unknown)}` in {context}")

    if options.cwd is not None and "CWD" in placeholder_names(options.cwd):
        raise HqError(
            "Working directory path cannot contain the working directory placeholder `%{CWD}`."
        )
    return warnings


def default_job_name(command: list[str]) -> str:
    """Basename of the first command word (`job` when it has none, e.g. `/` or `..`)."""
    name = PurePosixPath(command[0]).name if command and command[0] else ""
    return name if name and name != ".." else DEFAULT_JOB_NAME


def _output_wire(spec: OutputSpec | None, default: str) -> dict[str, Any] | None:
    if spec is None:
        return {"path": default, "rm_if_finished": False}
    if spec.discard:
        return None
    return {"path": spec.path or default, "rm_if_finished": spec.rm_if_finished}


def stream_output_wire(
    spec: OutputSpec | None, default: str, stream: str | None
) -> dict[str, Any] | None:
    """A channel on the wire; with a stream directory, a channel not given is streamed
    (stream.md §1), while `none` or an explicit path keeps its meaning."""
    if stream is not None and spec is None:
        return {"path": STREAM_PIPE, "rm_if_finished": False}
    return _output_wire(spec, default)


# ---------------------------------------------------------------------------------------
# The whole submit


def build_submit(
    request: SubmitRequest,
    *,
    submit_dir: str,
    stdin: bytes | None = None,
    reader: Reader = read_local_file,
) -> BuiltSubmit:
    """Directives, entries, IDs, resources, checks → the two maps for the `submit` op.

    `stdin` is the data read for `--stdin` (None without it); `submit_dir` the client's
    absolute working directory.
    """
    from hyperq.common.resources import DEFAULT_WEIGHT, parse_task_request

    options, command = apply_directives(request, stdin, reader)

    if options.name is not None and ("\n" in options.name or "\t" in options.name):
        raise HqError("name cannot have a newline or a tab")
    if request.job is not None:
        if options.name is not None:
            raise HqError("Parameter --name is not allowed when submitting to an open job.")
        if options.max_fails is not None:
            raise HqError("Parameter --max-fails is not allowed when submitting to an open job.")

    nodes = options.nodes or 0
    resources = parse_task_request(
        options.cpus,
        options.resources,
        n_nodes=nodes,
        min_time=options.time_request or 0.0,
        weight=options.weight if options.weight is not None else DEFAULT_WEIGHT,
    )
    entries = read_entries(options, reader)
    ids, entries, task_count = task_ids(options.array, entries)
    warnings = check_suspicious(options, task_count)

    env: dict[str, str] = {}
    for key, value in options.env:
        env[key] = value
    if len(env) != len(options.env):
        warnings.append(
            "Some environment variables were ignored. Check if you haven't used duplicate keys."
        )

    submit_desc: dict[str, Any] = {
        "submit_dir": submit_dir,
        "stream_path": options.stream,
        "tasks": {"ids": ids, "entries": entries, "entry_offset": 0},
        "program": {
            "args": command,
            "env": env,
            "cwd": options.cwd if options.cwd is not None else DEFAULT_CWD,
            "stdout": stream_output_wire(options.stdout, DEFAULT_STDOUT, options.stream),
            "stderr": stream_output_wire(options.stderr, DEFAULT_STDERR, options.stream),
        },
        "resources": resources.to_wire(),
        "pin": options.pin,
        "priority": options.priority or 0,
        "time_limit": options.time_limit,
        "crash_limit": (
            options.crash_limit if options.crash_limit is not None else DEFAULT_CRASH_LIMIT
        ),
        # A multi-node task needs a place for its node file.
        "task_dir": options.task_dir or nodes > 0,
        "stdin": stdin,
    }
    if request.on_notify is not None:
        submit_desc["on_notify"] = request.on_notify
    # Attaching to an open job: the server refuses any name, even a default one.
    default_name = default_job_name(command) if request.job is None else None
    job_desc = {
        "name": options.name if options.name is not None else default_name,
        "max_fails": options.max_fails,
    }
    return BuiltSubmit(job_desc, submit_desc, warnings, task_count)

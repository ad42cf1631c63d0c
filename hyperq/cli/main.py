"""The `hq` entry point: global options, command dispatch, and the one error exit.

Global options are accepted at any level (`hq --server-dir D job list`,
`hq job list --server-dir D`), except after the first word of a submitted task's
command. Command modules are imported only when their group is used, so a short
command pays only for what it runs.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

from hyperq import __version__
from hyperq.common.errors import HqError, UsageError, describe_exception

GLOBAL_VALUE_OPTIONS = ("--server-dir", "--output-mode", "--colors")
GLOBAL_FLAGS = ("--debug",)

# group -> module holding it; a module exposes COMMANDS: {name: (usage, function, options_first)}
GROUPS: dict[str, str] = {
    "server": "hyperq.cli.server",
    "worker": "hyperq.cli.worker",
    "job": "hyperq.cli.job",
    "task": "hyperq.cli.task",
    "journal": "hyperq.cli.journalcmd",
    "alloc": "hyperq.cli.alloc",
}
# single-word commands: name -> (module, command name inside that module)
ALIASES: dict[str, tuple[str, str]] = {
    "submit": ("hyperq.cli.submit", "submit"),
    "dashboard": ("hyperq.cli.dashboard", "dashboard"),
    "output-log": ("hyperq.cli.outputlog", "output-log"),
}
OUT_OF_SCOPE = ("doc", "generate-completion")

MAIN_USAGE = f"""hq {__version__}: HyperQueue task runtime (hyperq)

Usage:
  hq [global options] <command> [<args>...]

Commands:
  server     Commands for the server
  worker     Commands for workers
  submit     Submit a job (alias of `hq job submit`)
  job        Commands for jobs
  task       Commands for tasks
  journal    Commands for the event journal
  alloc      Commands for automatic allocation
  dashboard  Terminal dashboard of the cluster (live, or replayed from a journal)
  output-log Read output streamed with `--stream`

Global options (accepted at any level):
  --server-dir <PATH>    Server directory [env: HQ_SERVER_DIR, default: ~/.hq-server]
  --output-mode <MODE>   cli, json or quiet [env: HQ_OUTPUT_MODE, default: cli]
  --colors <WHEN>        auto, always or never [default: auto]
  --debug                Debug logging [env: HQ_DEBUG]
  --version              Print the version
  -h, --help             Print help
"""

CommandFn = Callable[..., int | None]


def _take_global(argv: list[str], i: int, found: dict[str, Any]) -> int | None:
    """If argv[i] is a global option, record it and return how many tokens it used."""
    token = argv[i]
    for name in GLOBAL_VALUE_OPTIONS:
        if token == name:
            if i + 1 >= len(argv):
                raise UsageError(
                    f"error: a value is required for '{name} <VALUE>' but none was supplied"
                )
            found[name] = argv[i + 1]
            return 2
        if token.startswith(name + "="):
            found[name] = token[len(name) + 1 :]
            return 1
    if token in GLOBAL_FLAGS:
        found[token] = True
        return 1
    return None


def split_command(argv: list[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Split argv into (global options, command path, the command's own arguments)."""
    found: dict[str, Any] = {}
    path: list[str] = []
    i = 0
    while i < len(argv):
        used = _take_global(argv, i, found)
        if used:
            i += used
            continue
        token = argv[i]
        if token.startswith("-"):
            if path or token not in ("-h", "--help", "--version"):
                break
            found[token] = True
            i += 1
            continue
        path.append(token)
        i += 1
        if path[0] in ALIASES or path[0] in OUT_OF_SCOPE or len(path) == 2 or path[0] not in GROUPS:
            break
    return found, path, argv[i:]


def extract_globals(
    rest: list[str], found: dict[str, Any], value_opts: set[str], options_first: bool
) -> list[str]:
    """Pull global options out of a command's arguments (until the task command starts)."""
    out: list[str] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        if token == "--":
            out.extend(rest[i:])
            break
        used = _take_global(rest, i, found)
        if used:
            i += used
            continue
        if token.startswith("-") and token != "-":
            out.append(token)
            if token in value_opts and i + 1 < len(rest):
                out.append(rest[i + 1])
                i += 1
        elif options_first:
            out.extend(rest[i:])
            break
        else:
            out.append(token)
        i += 1
    return out


def _resolve(path: list[str]) -> tuple[str, str]:
    if not path:
        raise UsageError(MAIN_USAGE)
    if path[0] in ALIASES:
        return ALIASES[path[0]]
    if path[0] in OUT_OF_SCOPE:
        raise HqError(f"`hq {path[0]}` is not supported by hyperq yet")
    if path[0] not in GROUPS:
        raise UsageError(
            f"error: unrecognized subcommand '{path[0]}'\n\nUsage: hq <command> [<args>...]"
        )
    module = GROUPS[path[0]]
    if len(path) < 2:
        return module, ""
    return module, path[1]


def _print_error(message: str, output_mode: str) -> None:
    if output_mode == "json":
        print(json.dumps({"error": message}, indent=2))
    else:
        print(message, file=sys.stderr)


def run(argv: list[str]) -> int:
    import os

    output_mode = os.environ.get("HQ_OUTPUT_MODE", "cli")
    debug = bool(os.environ.get("HQ_DEBUG"))
    try:
        found, path, rest = split_command(argv)
        output_mode = found.get("--output-mode", output_mode)
        debug = debug or bool(found.get("--debug"))
        if found.get("--version"):
            print(f"hq {__version__}")
            return 0
        if found.get("-h") or found.get("--help") or not path:
            print(MAIN_USAGE)
            return 0 if path or found else 2
        module_name, command = _resolve(path)
        module = importlib.import_module(module_name)
        commands: dict[str, tuple[str, CommandFn, bool]] = module.COMMANDS
        if command not in commands:
            group_usage = getattr(module, "GROUP_USAGE", "")
            if not command:
                asked = rest[:1] in (["-h"], ["--help"])
                print(group_usage, file=sys.stdout if asked else sys.stderr)
                return 0 if asked else 2
            raise UsageError(
                f"error: unrecognized subcommand '{command}'\n\n{group_usage}".rstrip()
            )
        usage, function, options_first = commands[command]
        from hyperq.cli.args import parse, value_options

        own = extract_globals(rest, found, value_options(usage), options_first)
        output_mode = found.get("--output-mode", output_mode)
        debug = debug or bool(found.get("--debug"))

        from hyperq.common.context import Context

        ctx = Context.from_options(
            found.get("--server-dir"), found.get("--output-mode"), found.get("--colors"), debug
        )
        from hyperq.common.log import configure

        configure(debug)
        args = parse(usage, path, own, options_first=options_first)
        code = function(ctx, args)
        return 0 if code is None else code
    except UsageError as error:
        print(error.message, file=sys.stderr)
        return 2
    except HqError as error:
        _print_error(error.message, output_mode)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as error:
        if debug:
            raise
        _print_error(f"Internal error: {describe_exception(error)}", output_mode)
        return 1


def main() -> None:
    code = run(sys.argv[1:])
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or 1
    # Out of the sight of the collections the interpreter makes while it shuts down
    # (~4% of a short command's CPU: every module's objects, scanned three times). The
    # command is over; what is left is freed by the process's exit.
    import gc

    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    main()

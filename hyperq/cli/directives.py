"""`#HQ` directives: `hq submit` options written at the top of a job script (jobs.md §3).

A script can carry its own submit options (`#HQ --cpus=4`) and its interpreter (`#!`),
so that `hq submit job.sh` needs nothing else on the command line. This module only
turns bytes into arguments and arguments into an options map; deciding which file to
read, and how directive values combine with the command line, belongs to
`hyperq.cli.submitdesc`. Pure: no file access, no printing, standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperq.common.errors import HqError

MAX_SCAN_BYTES = 32 * 1024
"""Only the head of a script is scanned: directives sit at its top, and scripts can be huge."""

DIRECTIVE_PREFIX = "#HQ "
INVALID_DIRECTIVE = "You have used invalid parameter(s) after a #HQ directive."
_USAGE_HINT = "Usage: #HQ <hq submit parameters>"

# Options a directive may set -> the value's metavar (None for flags). These are the job
# and task configuration options of `hq submit`; the ones that steer the submit command
# itself (--job, --wait, --stdin, --directives, ...) make no sense inside a script.
DIRECTIVE_OPTIONS: dict[str, str | None] = {
    "--name": "NAME",
    "--max-fails": "MAX_FAILS",
    "--nodes": "NODES",
    "--cpus": "CPUS",
    "--resource": "RESOURCE",
    "--time-request": "TIME_REQUEST",
    "--weight": "WEIGHT",
    "--pin": "PIN",
    "--cwd": "CWD",
    "--stdout": "STDOUT",
    "--stderr": "STDERR",
    "--env": "ENV",
    "--each-line": "EACH_LINE",
    "--from-json": "FROM_JSON",
    "--array": "ARRAY",
    "--priority": "PRIORITY",
    "--time-limit": "TIME_LIMIT",
    "--stream": "STREAM",
    "--task-dir": None,
    "--crash-limit": "CRASH_LIMIT",
}
REPEATABLE_OPTIONS = frozenset({"--resource", "--env"})

_SEPARATORS = " \t"


@dataclass(frozen=True)
class ScriptHeader:
    """What the head of a script says: directive argument text and the shebang words."""

    directives: tuple[str, ...]
    shebang: tuple[str, ...] | None


def scan_script(data: bytes) -> ScriptHeader:
    """Collect `#HQ` lines and the shebang from the first MAX_SCAN_BYTES of `data`.

    Leading whitespace of a line is ignored. Comment (`#…`) and blank lines are skipped;
    the first other line ends the scan, so `#HQ` lines after the script body starts are
    plain comments.
    """
    text = data[:MAX_SCAN_BYTES].decode("utf-8", errors="replace")
    directives: list[str] = []
    shebang: tuple[str, ...] | None = None
    for index, raw in enumerate(text.split("\n")):
        line = raw.removesuffix("\r").lstrip()
        if line.startswith(DIRECTIVE_PREFIX):
            value = line[len(DIRECTIVE_PREFIX) :].strip()
            if value:
                directives.append(value)
            continue
        if index == 0 and line.startswith("#!"):
            try:
                shebang = tuple(split_arguments(line[2:].strip()))
            except ValueError as error:
                raise HqError(f"Cannot parse shebang line: {error}") from None
        if line and not line.startswith("#"):
            break
    return ScriptHeader(tuple(directives), shebang)


def split_arguments(text: str) -> list[str]:
    """Split one directive (or shebang) line into arguments.

    Spaces and tabs separate arguments; `"…"` groups (`\\"` and `\\\\` inside it stand for
    a quote and a backslash); outside quotes `\\ ` and `\\"` escape a space or a quote.
    Other backslashes stay as they are (paths and regexes in values need them). Parts
    join like in a shell: `--cpus="2 compact"` is one argument. ValueError on an open quote.
    """
    arguments: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SEPARATORS:
            i += 1
        if i >= n:
            return arguments
        chars: list[str] = []
        while i < n and text[i] not in _SEPARATORS:
            char = text[i]
            if char == '"':
                i += 1
                while True:
                    if i >= n:
                        raise ValueError(f"missing closing quote in `{text}`")
                    char = text[i]
                    if char == "\\" and i + 1 < n and text[i + 1] in '"\\':
                        chars.append(text[i + 1])
                        i += 2
                    elif char == '"':
                        i += 1
                        break
                    else:
                        chars.append(char)
                        i += 1
            elif char == "\\" and i + 1 < n and text[i + 1] in ' "':
                chars.append(text[i + 1])
                i += 2
            else:
                chars.append(char)
                i += 1
        arguments.append("".join(chars))


def directive_arguments(header: ScriptHeader) -> list[str]:
    """All directive lines as one argument list (an option may span two `#HQ` lines)."""
    arguments: list[str] = []
    for line in header.directives:
        try:
            arguments.extend(split_arguments(line))
        except ValueError as error:
            raise HqError(f"{INVALID_DIRECTIVE}\nerror: {error}") from None
    return arguments


def _invalid(message: str) -> HqError:
    return HqError(f"{INVALID_DIRECTIVE}\n{message}\n\n{_USAGE_HINT}")


def _label(name: str) -> str:
    metavar = DIRECTIVE_OPTIONS[name]
    return name if metavar is None else f"{name} <{metavar}>"


def parse_directive_options(arguments: list[str]) -> dict[str, Any]:
    """Directive arguments → an options map shaped like docopt's for `hq submit`.

    Value options map to a string or None, repeatable ones to a list, flags to a bool.
    Anything else (unknown options, positional words, repeats) is an HqError that starts
    with INVALID_DIRECTIVE and names the culprit the way clap does, because scripts and
    users look for `unexpected argument '--foo' found`.
    """
    found: dict[str, Any] = {}
    for name, metavar in DIRECTIVE_OPTIONS.items():
        if name in REPEATABLE_OPTIONS:
            found[name] = []
        else:
            found[name] = None if metavar is not None else False
    i = 0
    while i < len(arguments):
        token = arguments[i]
        i += 1
        if not token.startswith("-") or token in ("-", "--"):
            raise _invalid(f"error: unexpected argument '{token}' found")
        name, has_value, inline = token.partition("=")
        if name not in DIRECTIVE_OPTIONS:
            raise _invalid(f"error: unexpected argument '{name}' found")
        if DIRECTIVE_OPTIONS[name] is None:
            if has_value:
                raise _invalid(
                    f"error: unexpected value '{inline}' for '{name}' found; no more were expected"
                )
            found[name] = True
            continue
        if has_value:
            value = inline
        elif i < len(arguments) and not arguments[i].startswith("--"):
            value = arguments[i]
            i += 1
        else:
            raise _invalid(f"error: a value is required for '{_label(name)}' but none was supplied")
        if name in REPEATABLE_OPTIONS:
            found[name].append(value)
        elif found[name] is not None:
            raise _invalid(f"error: the argument '{_label(name)}' cannot be used multiple times")
        else:
            found[name] = value
    return found

"""Parsing one command's arguments with docopt, with HyperQueue's usage-error wording.

docopt only says "usage: ..." on a mismatch; scripts built for `hq` look for
`unexpected argument '<arg>' found`, so we find the culprit ourselves.
"""

from __future__ import annotations

import re
from typing import Any

from docopt import DocoptExit, docopt, parse_options

from hyperq.common.errors import UsageError


def value_options(usage: str) -> set[str]:
    """Names of the options in the usage's Options section that take a value."""
    names: set[str] = set()
    for option in parse_options(usage):
        if option.argcount:
            if option.longer:
                names.add(option.longer)
            if option.short:
                names.add(option.short)
    return names


def known_options(usage: str) -> set[str]:
    names: set[str] = {"-h", "--help"}
    for option in parse_options(usage):
        if option.longer:
            names.add(option.longer)
        if option.short:
            names.add(option.short)
    return names


def parse(
    usage: str, path: list[str], argv: list[str], *, options_first: bool = False
) -> dict[str, Any]:
    """docopt over `path + argv`; a mismatch becomes a UsageError (exit 2) with a reason.

    With options_first (submit), everything from the first positional word (or after
    `--`) is the task's command: it is returned as `<command>` and never parsed as options.
    """
    command: list[str] = []
    if options_first:
        argv, command = split_task_command(usage, argv)
    try:
        args = dict(docopt(usage, argv=path + argv, default_help=True))
    except DocoptExit:
        raise UsageError(_explain(usage, path, argv, options_first)) from None
    if options_first:
        args["<command>"] = command
    return args


def split_task_command(usage: str, argv: list[str]) -> tuple[list[str], list[str]]:
    """Split submit's arguments into its options and the task's command."""
    takes_value = value_options(usage)
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return argv[:i], argv[i + 1 :]
        if token.startswith("-") and token != "-":
            if token.split("=", 1)[0] in takes_value and "=" not in token:
                i += 1
            i += 1
            continue
        return argv[:i], argv[i:]
    return argv, []


def _with_value(usage: str, name: str) -> str:
    """`--name <VALUE>` as the usage's Options section spells it."""
    found = re.search(rf"(?<![\w-]){re.escape(name)}[ =](<[^>]+>)", usage)
    return f"{name} {found.group(1)}" if found else name


def _matches(usage: str, argv: list[str]) -> dict[str, Any] | None:
    try:
        return dict(docopt(usage, argv=argv, default_help=False))
    except DocoptExit:
        return None


def _explain(usage: str, path: list[str], argv: list[str], options_first: bool) -> str:
    known = known_options(usage)
    takes_value = value_options(usage)
    short_usage = usage.split("Options:")[0].strip()
    skip_next = False
    for position, token in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        if token == "--":
            break
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            if name not in known:
                return f"error: unexpected argument '{name}' found\n\n{short_usage}"
            if name in takes_value and "=" not in token:
                skip_next = True
                if position == len(argv) - 1:
                    return (
                        f"error: a value is required for '{_with_value(usage, name)}' but "
                        f"none was supplied\n\n{short_usage}"
                    )
        elif options_first:
            break
    if not options_first:
        # A word too many or too few: find which, as clap (HyperQueue's parser) says it.
        for i in reversed(range(len(argv))):
            if not argv[i].startswith("-") and _matches(usage, path + argv[:i] + argv[i + 1 :]):
                return f"error: unexpected argument '{argv[i]}' found\n\n{short_usage}"
        probe = "\0"
        for extra in (1, 2):
            found = _matches(usage, path + argv + [probe] * extra)
            if found is not None:
                missing = [
                    name
                    for name, value in found.items()
                    if name.startswith("<") and (value == probe or value == [probe] * extra)
                ]
                if missing:
                    names = "\n".join(f"  {name}" for name in missing)
                    return (
                        "error: the following required arguments were not provided:\n"
                        f"{names}\n\n{short_usage}"
                    )
    return f"error: invalid arguments\n\n{short_usage}"

"""`#HQ` directive scanning, argument splitting and option parsing (pure, no files)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperq.cli.directives import (
    INVALID_DIRECTIVE,
    MAX_SCAN_BYTES,
    ScriptHeader,
    directive_arguments,
    parse_directive_options,
    scan_script,
    split_arguments,
)
from hyperq.common.errors import HqError, UsageError

# ---------------------------------------------------------------------------------------
# scan_script


def test_scan_collects_directives_until_the_first_command() -> None:
    script = b"""#!/bin/bash

# Comment
#HQ --abc --xyz

#HQ
#HQ \t
#HQ next arg

sleep 1
#HQ this should be ignored
"""
    header = scan_script(script)
    assert header.directives == ("--abc --xyz", "next arg")
    assert header.shebang == ("/bin/bash",)


def test_scan_reference_script() -> None:
    script = b"""#! /bin/bash
# Hello!
#HQ --name abc --array=1-10
#HQ --cpus="2 compact"

./do-something

#HQ --this-should-be-ignored
"""
    header = scan_script(script)
    assert header.shebang == ("/bin/bash",)
    assert directive_arguments(header) == ["--name", "abc", "--array=1-10", "--cpus=2 compact"]


def test_scan_shebang_with_arguments() -> None:
    header = scan_script(b'#!/bin/bash -l "a b"\n# Comment\n#HQ --abc --xyz\n')
    assert header.shebang == ("/bin/bash", "-l", "a b")
    assert header.directives == ("--abc --xyz",)


def test_scan_without_shebang() -> None:
    header = scan_script(b"\n# Comment\n#HQ --abc --xyz\n")
    assert header.shebang is None
    assert header.directives == ("--abc --xyz",)


def test_shebang_only_on_the_first_line() -> None:
    header = scan_script(b"# first\n#!/bin/sh\n#HQ --name x\n")
    assert header.shebang is None
    assert header.directives == ("--name x",)


def test_scan_strips_leading_whitespace_and_crlf() -> None:
    header = scan_script(
        b"#!/bin/sh\r\n   #HQ --name x  \r\n\t#HQ --cpus 2\r\necho\r\n#HQ --no\r\n"
    )
    assert header.shebang == ("/bin/sh",)
    assert header.directives == ("--name x", "--cpus 2")


def test_scan_stops_at_first_other_line() -> None:
    header = scan_script(b"echo hi\n#HQ --name x\n")
    assert header == ScriptHeader((), None)


def test_directive_prefix_needs_a_space() -> None:
    assert scan_script(b"#HQ--name x\n#HQx\n").directives == ()


def test_scan_reads_only_the_head() -> None:
    filler = b"#" * (MAX_SCAN_BYTES - 4) + b"\n"
    data = filler + b"#HQ --name too-late\n"
    assert scan_script(data).directives == ()
    assert scan_script(b"#HQ --name early\n" + filler).directives == ("--name early",)


def test_scan_tolerates_invalid_utf8() -> None:
    header = scan_script(b"#!/bin/sh\n#HQ --name \xff\xfe\n")
    assert header.directives == ("--name \ufffd\ufffd",)


def test_bad_shebang_is_an_error() -> None:
    with pytest.raises(HqError, match="Cannot parse shebang line"):
        scan_script(b'#!/bin/sh "open\n')


# ---------------------------------------------------------------------------------------
# split_arguments


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc!", ["abc!"]),
        ("one two   three", ["one", "two", "three"]),
        ('--cpus="2 compact"', ["--cpus=2 compact"]),
        (
            '--name "let\'s have a space inside" --cpus "2 compact" --pin',
            ["--name", "let's have a space inside", "--cpus", "2 compact", "--pin"],
        ),
        (r"a\ b c", ["a b", "c"]),
        (r"say\"hi\"", ['say"hi"']),
        (r'"in \"quotes\""', ['in "quotes"']),
        ('""', [""]),
        ("\tx\t y ", ["x", "y"]),
        (r"C:\path\x", [r"C:\path\x"]),
        ("", []),
        ("   ", []),
    ],
)
def test_split_arguments(text: str, expected: list[str]) -> None:
    assert split_arguments(text) == expected


def test_split_unterminated_quote() -> None:
    with pytest.raises(ValueError, match="missing closing quote"):
        split_arguments('--name "abc')


def _quote(argument: str) -> str:
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(st.lists(st.text(alphabet=st.characters(exclude_characters="\n\r"), max_size=12)))
def test_split_inverts_quoting(arguments: list[str]) -> None:
    assert split_arguments(" ".join(_quote(a) for a in arguments)) == arguments


def test_unterminated_quote_in_directive_is_invalid_directive() -> None:
    header = ScriptHeader(('--name "abc',), None)
    with pytest.raises(HqError) as info:
        directive_arguments(header)
    assert info.value.message.startswith(INVALID_DIRECTIVE + "\n")


# ---------------------------------------------------------------------------------------
# parse_directive_options


def test_parse_values_flags_and_lists() -> None:
    found = parse_directive_options(
        [
            "--name",
            "abc",
            "--array=1-10",
            "--env",
            "A=1",
            "--env=B=2",
            "--resource",
            "gpus=1",
            "--task-dir",
            "--priority",
            "-5",
        ]
    )
    assert found["--name"] == "abc"
    assert found["--array"] == "1-10"
    assert found["--env"] == ["A=1", "B=2"]
    assert found["--resource"] == ["gpus=1"]
    assert found["--task-dir"] is True
    assert found["--priority"] == "-5"
    assert found["--cpus"] is None
    assert found["--stream"] is None


def test_parse_empty() -> None:
    found = parse_directive_options([])
    assert found["--task-dir"] is False
    assert found["--env"] == []
    assert found["--name"] is None


@pytest.mark.parametrize(
    ("arguments", "culprit"),
    [
        (["--foo=bar"], "unexpected argument '--foo' found"),
        (["--foo", "bar"], "unexpected argument '--foo' found"),
        (["--name", "a", "extra"], "unexpected argument 'extra' found"),
        (["--wait"], "unexpected argument '--wait' found"),
        (["--stdin"], "unexpected argument '--stdin' found"),
        (["--job=1"], "unexpected argument '--job' found"),
        (["--directives=off"], "unexpected argument '--directives' found"),
        (["--help"], "unexpected argument '--help' found"),
        (["-h"], "unexpected argument '-h' found"),
        (["--nam", "x"], "unexpected argument '--nam' found"),
        (["--name"], "a value is required for '--name <NAME>' but none was supplied"),
        (["--name", "--cpus", "2"], "a value is required for '--name <NAME>'"),
        (["--name=a", "--name=b"], "the argument '--name <NAME>' cannot be used multiple times"),
        (["--task-dir=yes"], "unexpected value 'yes' for '--task-dir' found"),
    ],
)
def test_parse_errors(arguments: list[str], culprit: str) -> None:
    with pytest.raises(HqError) as info:
        parse_directive_options(arguments)
    assert not isinstance(info.value, UsageError)
    assert info.value.message.startswith(INVALID_DIRECTIVE + "\n")
    assert culprit in info.value.message

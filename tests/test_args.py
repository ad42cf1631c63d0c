"""Usage errors name the culprit, as HyperQueue's parser (clap) does."""

import pytest

from hyperq.cli.args import parse
from hyperq.common.errors import UsageError

USAGE = """Show things

Usage:
  hq thing show <SELECTOR> [--verbose] [--format <FMT>]
  hq thing copy <FROM> <TO>

Options:
  --verbose         More
  --format <FMT>    How
"""


@pytest.mark.parametrize(
    ("argv", "first_lines"),
    [
        (["show", "1", "2"], ["error: unexpected argument '2' found"]),
        (["show", "1", "--loud"], ["error: unexpected argument '--loud' found"]),
        (
            ["show"],
            ["error: the following required arguments were not provided:", "  <SELECTOR>"],
        ),
        (
            ["copy"],
            ["error: the following required arguments were not provided:", "  <FROM>", "  <TO>"],
        ),
        (["copy", "a", "b", "c"], ["error: unexpected argument 'c' found"]),
        (
            ["show", "1", "--format"],
            ["error: a value is required for '--format <FMT>' but none was supplied"],
        ),
    ],
)
def test_usage_errors_say_what_is_wrong(argv: list[str], first_lines: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        parse(USAGE, ["thing"], argv)
    lines = info.value.message.splitlines()
    assert lines[: len(first_lines)] == first_lines
    assert lines[len(first_lines)] == ""
    assert "Usage:" in info.value.message


def test_a_match_parses() -> None:
    args = parse(USAGE, ["thing"], ["copy", "a", "b"])
    assert (args["<FROM>"], args["<TO>"]) == ("a", "b")

"""User-facing errors: one clear line for the user, never a traceback.

Anything raised as HqError is printed by the CLI as its message and ends the command
with exit code 1; everything else is a bug and only shows a traceback under --debug.
"""


class HqError(Exception):
    """An error whose message is meant for the user as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(HqError):
    """Bad command-line arguments: printed like HqError but exits with code 2."""


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside a (nested) exception group, in order; [error] for others."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [error]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(reversed(item.exceptions))
        else:
            leaves.append(item)
    return leaves


def only_hq_error(group: BaseExceptionGroup) -> HqError | None:
    """The first HqError of a (nested) exception group whose every leaf is an HqError,
    as a nursery tree raises it; None if anything else is in there (a bug)."""
    leaves = _leaves(group)
    if leaves and all(isinstance(leaf, HqError) for leaf in leaves):
        first = leaves[0]
        assert isinstance(first, HqError)
        return first
    return None


def describe_exception(error: BaseException) -> str:
    """`Type: message` of an exception, or of each leaf of an exception group (a nursery
    wraps what escaped it; the group's own text would hide the reason)."""
    leaves = _leaves(error)
    return "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves[:5]) + (
        f"; and {len(leaves) - 5} more" if len(leaves) > 5 else ""
    )

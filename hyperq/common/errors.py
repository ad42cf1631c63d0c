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


def only_hq_error(group: BaseExceptionGroup) -> HqError | None:
    """The first HqError of a (nested) exception group whose every leaf is an HqError,
    as a nursery tree raises it; None if anything else is in there (a bug)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(reversed(item.exceptions))
        else:
            leaves.append(item)
    if leaves and all(isinstance(leaf, HqError) for leaf in leaves):
        first = leaves[0]
        assert isinstance(first, HqError)
        return first
    return None

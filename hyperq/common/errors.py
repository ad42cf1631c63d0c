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

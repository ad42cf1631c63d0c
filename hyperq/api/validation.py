"""Checks of what users pass to `Job.program`; errors derive from BaseException as in
the original, so a broad `except Exception` in user code does not swallow them."""

from __future__ import annotations

from typing import Any


class ValidationException(BaseException):
    pass


def validate_args(args: list[Any]) -> None:
    if all(type(arg) is str for arg in args):
        return  # the common case, without the import below
    from hyperq.api.output import Output

    for arg in args:
        if not isinstance(arg, (str, Output)):
            raise ValidationException(
                "Each program argument must either be a string or an instance of `hq.Output`. "
                f"Argument `{arg}` has type `{type(arg)}`."
            )

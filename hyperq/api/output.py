"""Where a task's stdout and stderr go (`StdioDef`), and the unfinished `Output` marker."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from hyperq.api.common import GenericPath
from hyperq.api.validation import ValidationException

FileOnCloseBehavior = Literal["none", "rm-if-finished"]


@dataclasses.dataclass
class StdioDef:
    """A file for one stream; `path` None means the CLI's default path."""

    path: GenericPath | None
    on_close: FileOnCloseBehavior

    @staticmethod
    def from_path(path: GenericPath) -> StdioDef:
        return StdioDef(path=path, on_close="none")

    @staticmethod
    def remove_if_finished(path: GenericPath | None = None) -> StdioDef:
        return StdioDef(path=path, on_close="rm-if-finished")


Stdio = GenericPath | StdioDef


def default_output(ext: str) -> str:
    # No `job-<id>/` folder, unlike the CLI default: the original's Python default.
    return "%{CWD}/%{TASK_ID}." + ext


def default_stdout() -> str:
    return default_output("stdout")


def default_stderr() -> str:
    return default_output("stderr")


class Output:
    """A named output file of a task (experimental in the original; submit rejects it)."""

    def __init__(
        self, name: str, filepath: str | None = None, extension: str | None = None
    ) -> None:
        if filepath and extension:
            raise ValidationException(
                "Parameters `filepath` and `extension` are mutually exclusive"
            )
        self.name = name
        self.filepath = filepath
        self.extension = extension.lstrip(".") if extension is not None else None


def gather_outputs(collection: Any) -> list[Output]:
    items: Any = []
    if isinstance(collection, (list, tuple)):
        items = collection
    elif isinstance(collection, dict):
        items = collection.values()
    elif isinstance(collection, Output):
        items = [collection]
    return [item for item in items if isinstance(item, Output)]

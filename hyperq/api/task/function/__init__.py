"""Python function tasks: pickled on the client, run by `task_main` on the worker.

`task_main` runs in a fresh interpreter for every task (`PythonEnv.args`), so this
module imports little at the top: cloudpickle only comes in with the wrapper, when a
function task is created or unpickled.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hyperq.api.common import GenericPath
from hyperq.api.ffi import TaskId
from hyperq.api.ffi.protocol import ResourceRequest, TaskDescription
from hyperq.api.output import Stdio
from hyperq.api.task.task import EnvType, Task, resource_variants

if TYPE_CHECKING:
    from hyperq.api.client import Client
    from hyperq.api.task.function.wrapper import CloudWrapper

# Wrappers by id(fn): a function used by many tasks is wrapped (and pickled) once.
_CLOUDWRAPPER_CACHE: dict[int, CloudWrapper] = {}

LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

# What the worker's interpreter runs; `hyperq` must be importable there.
TASK_MAIN_CODE = "from hyperq.api.task.function import task_main as m; m()"


def purge_cache() -> None:
    _CLOUDWRAPPER_CACHE.clear()


def _wrapper_class() -> type[CloudWrapper]:
    try:
        from hyperq.api.task.function.wrapper import CloudWrapper
    except ImportError as error:
        if error.name != "cloudpickle":
            raise
        from hyperq.api.utils.package import MissingPackageException

        raise MissingPackageException("cloudpickle") from None
    return CloudWrapper


def cloud_wrap(fn: Callable[..., Any], cache: bool = True) -> CloudWrapper:
    wrapper_class = _wrapper_class()
    if isinstance(fn, wrapper_class):
        return fn
    return wrapper_class(fn, cache=cache)


def get_logging_level(default: int) -> int:
    return LOG_LEVELS.get(os.environ.get("HQ_PYLOG", ""), default)


def task_main() -> None:
    """Run the pickled (fn, args, kwargs) from stdin; any exception fails the task.

    The traceback goes to `HQ_ERROR_FILENAME`, which the worker turns into the task's
    error, and to stderr. `SystemExit` counts as a failure too, as in the original.
    """
    import sys

    try:
        logging.basicConfig(
            level=get_logging_level(logging.INFO),
            format="%(asctime)s %(name)s:%(levelname)-4s %(message)s",
            datefmt="%d-%m-%Y %H:%M:%S",
        )
        fn, args, kwargs = pickle.loads(sys.stdin.buffer.read())
        fn(*args, **(kwargs if kwargs is not None else {}))
    except BaseException:
        import traceback

        text = traceback.format_exc()
        error_file = os.environ.get("HQ_ERROR_FILENAME")
        if error_file:
            with open(error_file, "w") as f:
                f.write(text)
        print(text, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        sys.exit(1)


class PythonEnv:
    """How the worker starts the interpreter of a function task."""

    def __init__(
        self, python_bin: str = "python3", prologue: str | None = None, shell: str = "bash"
    ) -> None:
        if prologue:
            self.args = [shell, "-c", f'{prologue}\n\n{python_bin} -c "{TASK_MAIN_CODE}"']
        else:
            self.args = [python_bin, "-c", TASK_MAIN_CODE]


class PythonFunction(Task):
    def __init__(
        self,
        task_id: TaskId,
        fn: Callable[..., Any],
        *,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        env: EnvType | None = None,
        cwd: GenericPath | None = None,
        stdout: Stdio | None = None,
        stderr: Stdio | None = None,
        name: str | None = None,
        dependencies: Sequence[Task] = (),
        priority: int = 0,
        resources: ResourceRequest | Sequence[ResourceRequest] | None = None,
        crash_limit: int | None = None,
    ) -> None:
        super().__init__(
            task_id,
            dependencies,
            priority,
            resources,
            env=env,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            name=generate_task_name(task_id, name, fn),
            crash_limit=crash_limit,
        )
        wrapper = _CLOUDWRAPPER_CACHE.get(id(fn))
        if wrapper is None:
            wrapper = cloud_wrap(fn)
            _CLOUDWRAPPER_CACHE[id(fn)] = wrapper
        self.fn = wrapper
        self.args = args
        self.kwargs = kwargs

    def _build(self, client: Client) -> TaskDescription:
        return TaskDescription(
            id=self.task_id,
            args=client.python_env.args,
            stdout=self.stdout,
            stderr=self.stderr,
            stdin=pickle.dumps((self.fn, self.args, self.kwargs)),
            env=self.env,
            cwd=self.cwd,
            dependencies=self._dependency_ids(),
            # The task dir gives the task its HQ_ERROR_FILENAME for the traceback.
            task_dir=True,
            priority=self.priority,
            resource_request=resource_variants(self.resources),
            crash_limit=self.crash_limit,
        )

    def __repr__(self) -> str:
        return f"<PyFunction fn={self.fn.__name__}>"


def generate_task_name(task_id: TaskId, name: str | None, fn: Callable[..., Any]) -> str | None:
    if name is not None:
        return name
    if hasattr(fn, "__name__"):
        return f"{fn.__name__}/{task_id}"
    return None

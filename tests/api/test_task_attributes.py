"""`Job.program` builds its tasks lazily (slots; env, stdout/stderr and outputs made on
first access): what users read and the errors they get are the original's."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperq.api import Job
from hyperq.api.output import Output, StdioDef
from hyperq.api.task.program import ExternalProgram
from hyperq.api.validation import ValidationException


def test_attributes_as_the_original_makes_them() -> None:
    job = Job(default_workdir="/w", default_env={"A": "1"})
    first = job.program("uname")
    second = job.program(
        ["echo", "x"],
        env={"B": "2"},
        cwd="c",
        stdout=Path("o.txt"),
        stderr=StdioDef.remove_if_finished(),
        stdin="in",
        deps=[first],
        name="n",
        task_dir=True,
        priority=3,
        crash_limit=0,
    )
    assert isinstance(second, ExternalProgram) and job.tasks == [first, second]
    assert job.task_map == {0: first, 1: second}
    assert first.args == ["uname"] and first.cwd == str(Path("/w").resolve())
    assert first.env == {"A": "1"} and first.env is not job.default_env
    assert first.stdout == StdioDef("%{CWD}/%{TASK_ID}.stdout", "none")
    assert first.stderr == StdioDef("%{CWD}/%{TASK_ID}.stderr", "none")
    assert first.outputs == {} and first.stdin is None and first.label == "0"
    assert second.env == {"A": "1", "B": "2"} and second.cwd == "c"
    assert second.stdout == StdioDef(Path("o.txt"), "none")
    assert second.stderr == StdioDef(None, "rm-if-finished")
    assert second.stdin == b"in" and second.dependencies == [first]
    assert (second.name, second.task_dir, second.priority, second.crash_limit) == ("n", True, 3, 0)
    assert job.program("x", stdout=None, stderr=None).stdout is None
    # Later changes stick, as attributes do.
    plain = Job().program(["true"], stdout=None)
    plain.env["K"] = "v"
    plain.stdout = StdioDef.from_path("p")
    plain.extra = 1  # type: ignore[attr-defined]
    assert plain.env == {"K": "v"} and plain.stdout.path == "p" and plain.extra == 1  # type: ignore[attr-defined]


def test_errors_at_the_call_in_the_original_order() -> None:
    job = Job()
    with pytest.raises(ValidationException, match="Invalid value provided for `stdout`"):
        job.program([1], stdout=3, stdin=5)  # type: ignore[arg-type,list-item]
    with pytest.raises(ValidationException, match="Invalid value provided for `stderr`"):
        job.program([1], stderr=3)  # type: ignore[arg-type,list-item]
    with pytest.raises(ValidationException, match="Each program argument must"):
        job.program([1], stdin=5)  # type: ignore[arg-type,list-item]
    with pytest.raises(Exception, match="stdin has to be str, bytes, or None"):
        job.program(["x", Output("a")], stdin=5)  # type: ignore[arg-type]
    with pytest.raises(ValidationException, match="Output `a` has been defined multiple times"):
        job.program(["x", Output("a")], env={"E": Output("a")})  # type: ignore[dict-item]
    assert job.tasks == []
    task = job.program(["x", Output("a")], env={"E": Output("b")})  # type: ignore[dict-item]
    assert sorted(task.outputs) == ["a", "b"] and task["a"].name == "a"

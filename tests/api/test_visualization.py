"""visualize_job: the job's task graph as DOT (the original's exact text)."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from hyperq.api.job import Job
from hyperq.api.utils.package import MissingPackageException
from hyperq.api.visualization import visualize_job


def diamond() -> Job:
    def fn() -> None:
        pass

    job = Job()
    a = job.function(fn, name="a")
    b1 = job.function(fn, name="b1", deps=[a])
    b2 = job.function(fn, name="b2", deps=[a])
    c1 = job.function(fn, name="c1", deps=[b1])
    c2 = job.function(fn, name="c2", deps=[b2])
    job.function(fn, name="d", deps=[c1, c2])
    return job


def test_visualization(tmp_path: Path) -> None:
    path = tmp_path / "job.dot"
    assert visualize_job(diamond(), path) is None
    assert path.read_text() == (
        "digraph job {\na;\nb1;\na -> b1;\nb2;\na -> b2;\nc1;\nb1 -> c1;\nc2;\n"
        "b2 -> c2;\nd;\nc1 -> d;\nc2 -> d;\n}\n"
    )


def test_visualization_quotes_default_names(tmp_path: Path) -> None:
    job = Job()
    first = job.function(len)
    job.program("ls", deps=[first])
    path = tmp_path / "job.dot"
    visualize_job(job, str(path))
    assert path.read_text() == 'digraph job {\n"len/0";\n1;\n"len/0" -> 1;\n}\n'


def test_visualization_without_pydot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pydot(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pydot":
            raise ImportError("No module named 'pydot'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydot)
    with pytest.raises(MissingPackageException) as info:
        visualize_job(diamond(), tmp_path / "x.dot")
    assert str(info.value) == "Unable to import `pydot`. You have to install the `pydot` package."

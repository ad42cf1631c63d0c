"""Fixtures of the Python API tests: a CLI-started server (and worker) in a temp dir,
and the test process's cwd moved there, since the API's relative paths (stdout files,
the submit dir) are relative to the calling process's cwd."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ClusterEnv


class ApiEnv(ClusterEnv):
    """A ClusterEnv whose workers run function tasks with this test's interpreter."""

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        # `python3` in a function task must be an interpreter that imports hyperq.
        bin_dir = os.path.dirname(sys.executable)
        self.env["PATH"] = os.pathsep.join([bin_dir, self.env.get("PATH", "")])

    def client(self, **kwargs: object) -> object:
        from hyperq.api import Client

        return Client(self.server_dir, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def api_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiEnv]:
    monkeypatch.chdir(tmp_path)
    env = ApiEnv(tmp_path)
    try:
        yield env
    finally:
        env.kill_all()


def bash(script: str) -> list[str]:
    return ["bash", "-c", script]

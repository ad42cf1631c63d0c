from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ClusterEnv, HqEnv


@pytest.fixture
def hq_env(tmp_path: Path) -> Iterator[HqEnv]:
    env = HqEnv(tmp_path)
    try:
        yield env
    finally:
        env.kill_all()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterEnv]:
    env = ClusterEnv(tmp_path)
    try:
        yield env
    finally:
        env.kill_all()

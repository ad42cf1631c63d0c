from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.harness import ClusterEnv, HqEnv

# Hypothesis' per-example deadline (200 ms) is a timing assertion: on a loaded 2-core CI
# machine a first example that imports a module can exceed it. Tests check results only.
settings.register_profile("hyperq", deadline=None)
settings.load_profile("hyperq")


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

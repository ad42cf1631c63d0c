"""`LocalCluster`: a server and workers on this machine for the calling program.

They run as child `hq` processes (see `hyperq.api.ffi.cluster`), cleaned up on `stop()`,
at exit, and also when the program is killed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path
from types import TracebackType
from typing import Any

from hyperq.api.client import Client
from hyperq.api.ffi.cluster import Cluster


@dataclasses.dataclass
class WorkerConfig:
    # None: as many CPUs as this machine has.
    cores: int | None = None


class LocalCluster:
    def __init__(
        self, server_dir: Path | None = None, worker_config: WorkerConfig | None = None
    ) -> None:
        self.cluster = Cluster(str(server_dir) if server_dir is not None else None)
        if worker_config is not None:
            self.start_worker(worker_config)

    def start_worker(self, config: WorkerConfig | None = None) -> None:
        config = config if config is not None else WorkerConfig()
        self.cluster.add_worker(config.cores or multiprocessing.cpu_count())

    def client(self, **client_args: Any) -> Client:
        return Client(self.cluster.server_dir, **client_args)

    def stop(self) -> None:
        self.cluster.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.stop()

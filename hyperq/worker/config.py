"""Settings of one `hq worker start`, and the configuration object the server stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperq.common.resources import ResourceDescriptor

ON_SERVER_LOST = ("stop", "finish-running", "reconnect")


@dataclass(frozen=True)
class WorkerConfig:
    hostname: str
    work_dir: str
    heartbeat: float
    idle_timeout: float | None
    time_limit: float | None
    on_server_lost: str
    group: str
    manager: str | None  # "PBS" | "Slurm" | None
    manager_job_id: str | None
    min_utilization: float
    overview_interval: float | None
    resources: ResourceDescriptor

    def to_json(self) -> dict[str, Any]:
        """The configuration object of worker.md §7 (what the server stores and lists)."""
        return {
            "heartbeat_interval": self.heartbeat,
            "idle_timeout": self.idle_timeout,
            "time_limit": self.time_limit,
            "work_dir": self.work_dir,
            "hostname": self.hostname,
            "group": self.group,
            "listen_address": f"{self.hostname}:0",
            "on_server_lost": self.on_server_lost,
            "min_utilization": self.min_utilization,
            "overview_interval": self.overview_interval,
            "resources": self.resources.to_json(),
            "manager": self.manager,
            "manager_job_id": self.manager_job_id,
        }

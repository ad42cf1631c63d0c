"""Settings of one `hq server start`, parsed and validated before anything starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    server_dir: Path
    host: str | None
    client_port: int | None
    worker_port: int | None
    idle_timeout: float | None
    journal_path: str | None
    journal_flush_period: float
    access_file: Path | None
    client_auth: bool
    worker_auth: bool
    reconnect_grace: float = 60.0

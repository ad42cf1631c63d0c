"""The facts `hq server info` reports, as one value shared by the server and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ServerInfo:
    server_uid: str
    client_host: str
    client_port: int
    worker_host: str
    worker_port: int
    version: str
    pid: int
    start_time: float
    journal_path: str | None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ServerInfo:
        return cls(**data)

"""Machine output: exactly one pretty-printed JSON value per command (`json` mode)."""

from __future__ import annotations

from pathlib import Path

from hyperq.common.duration import format_timestamp
from hyperq.output.base import Output, print_json
from hyperq.server.info import ServerInfo


class JsonOutput(Output):
    mode = "json"

    def job_submitted(self, job_id: int) -> None:
        print_json({"id": job_id})

    def job_opened(self, job_id: int) -> None:
        print_json({"id": job_id})

    def server_info(self, info: ServerInfo, server_dir: Path | None) -> None:
        print_json(
            {
                "server_dir": str(server_dir) if server_dir is not None else None,
                "server_uid": info.server_uid,
                "worker_host": info.worker_host,
                "client_host": info.client_host,
                "client_port": info.client_port,
                "worker_port": info.worker_port,
                "pid": info.pid,
                "start_date": format_timestamp(info.start_time),
                "version": info.version,
                "journal_path": info.journal_path,
            }
        )

    def generated_access(self, path: Path) -> None:
        print_json({})

    def nothing(self) -> None:
        print_json({})

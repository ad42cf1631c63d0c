"""Human tables: the `cli` output mode."""

from __future__ import annotations

from pathlib import Path

from hyperq.common.duration import format_date
from hyperq.output.base import Output
from hyperq.output.table import render_vertical
from hyperq.server.info import ServerInfo


class CliOutput(Output):
    mode = "cli"

    def __init__(self, colors: bool) -> None:
        self.colors = colors

    def job_submitted(self, job_id: int) -> None:
        print(f"Job submitted successfully, job ID: {job_id}", flush=True)

    def job_opened(self, job_id: int) -> None:
        print(f"Job {job_id} is open.", flush=True)

    def server_info(self, info: ServerInfo, server_dir: Path | None) -> None:
        rows: list[tuple[str, str]] = []
        if server_dir is not None:
            rows.append(("Server directory", str(server_dir)))
        rows += [
            ("Server UID", info.server_uid),
            ("Client host", info.client_host),
            ("Client port", str(info.client_port)),
            ("Worker host", info.worker_host),
            ("Worker port", str(info.worker_port)),
            ("Version", info.version),
            ("Pid", str(info.pid)),
            ("Start date", format_date(info.start_time)),
            ("Journal path", info.journal_path or ""),
        ]
        print(render_vertical(rows), flush=True)

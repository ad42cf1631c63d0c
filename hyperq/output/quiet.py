"""Bare results for scripts: the `quiet` output mode (ids, states, nothing else)."""

from __future__ import annotations

from pathlib import Path

from hyperq.output.base import Output
from hyperq.server.info import ServerInfo


class QuietOutput(Output):
    mode = "quiet"

    def job_submitted(self, job_id: int) -> None:
        print(job_id, flush=True)

    def job_opened(self, job_id: int) -> None:
        print(job_id, flush=True)

    def server_info(self, info: ServerInfo, server_dir: Path | None) -> None:
        # `server start` prints the server dir; `server info` prints nothing.
        if server_dir is not None:
            print(server_dir, flush=True)

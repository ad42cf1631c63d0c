"""Bare results for scripts: the `quiet` output mode (ids, states, nothing else).

README §3.4: submit/open print the id, `worker list` and `job list` print `<id> <STATE>`,
`job summary` prints `<STATE> <count>`, `job cat` prints file contents (shared with cli
in the base); everything else prints nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyperq.output.base import Output, Progress, Task, job_state
from hyperq.server.info import ServerInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hyperq.common.idrange import IdRanges
    from hyperq.common.resources import ResourceDescriptor


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

    def job_list(self, jobs: Sequence[Mapping[str, Any]], total: int, verbose: bool) -> None:
        lines = [f"{job['id']} {job_state(job).upper()}" for job in jobs]
        if lines:
            print("\n".join(lines), flush=True)

    def job_summary(self, counts: Mapping[str, int]) -> None:
        states = ("running", "waiting", "finished", "failed", "aborted", "canceled")
        print("\n".join(f"{s.upper()} {counts.get(s, 0)}" for s in states), flush=True)

    def job_details(
        self, jobs: Sequence[Mapping[str, Any]], worker_names: Mapping[int, str]
    ) -> None:
        pass

    def task_ids(self, jobs: Mapping[int, IdRanges]) -> None:
        pass

    def task_list(
        self,
        jobs: Mapping[int, Sequence[Task]],
        worker_names: Mapping[int, str],
        verbose: bool,
    ) -> None:
        pass

    def task_info(
        self, job_id: int, tasks: Sequence[Task], worker_names: Mapping[int, str], verbose: bool
    ) -> None:
        pass

    def task_explanation(self, data: Mapping[str, Any]) -> None:
        pass

    def job_progress(self, progress: Progress, final: bool) -> None:
        pass

    def worker_list(self, workers: Sequence[Mapping[str, Any]]) -> None:
        lines = [f"{w['id']} {str(w.get('state', '')).upper()}" for w in workers]
        if lines:
            print("\n".join(lines), flush=True)

    def worker_info(self, workers: Sequence[Mapping[str, Any]]) -> None:
        pass

    def worker_address(self, hostname: str) -> None:
        # The address is the command's whole result, so scripts get it in every mode.
        print(hostname, flush=True)

    def hwdetect(self, descriptor: ResourceDescriptor) -> None:
        pass

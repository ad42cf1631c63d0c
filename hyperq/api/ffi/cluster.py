"""A server and its workers for the calling program, as child `hq` processes.

The original runs them as threads of the user's process; here they are children, so a
watchdog process (standard library only) holds the read end of a pipe from this
process. If this process dies without saying `bye` (SIGKILL included), the pipe closes
and the watchdog kills the children's process groups: nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hyperq.common.context import Context
from hyperq.common.errors import HqError
from hyperq.common.serverdir import ACCESS_FILE, CURRENT_LINK

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.02

# Blocks on the pipe (no polling: it sleeps until the parent writes or dies).
WATCHDOG_SOURCE = r"""
import os, signal, time
groups = set()
buffer = b""
clean = False
while True:
    data = os.read(0, 65536)
    if not data:
        break
    buffer += data
    *lines, buffer = buffer.split(b"\n")
    for line in lines:
        if line == b"bye":
            clean = True
        elif line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
if not clean:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except OSError:
                pass
        if sig == signal.SIGTERM and groups:
            time.sleep(1.0)
"""


class _Watchdog:
    def __init__(self) -> None:
        read_end, write_end = os.pipe()
        try:
            # Its own session: a Ctrl-C aimed at the user's process group must leave it
            # alive to clean up after that process.
            self.process = subprocess.Popen(
                [sys.executable, "-S", "-c", WATCHDOG_SOURCE],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(read_end)
        os.set_inheritable(write_end, False)
        self.fd = write_end

    def write(self, line: str) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.fd, line.encode() + b"\n")

    def close(self) -> None:
        self.write("bye")
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _hq_argv(server_dir: Path) -> list[str]:
    return [sys.executable, "-m", "hyperq", "--colors", "never", "--server-dir", str(server_dir)]


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


class HqClusterContext:
    """The running children of one `Cluster`."""

    def __init__(self, server_dir: Path) -> None:
        self.server_dir = server_dir
        self.watchdog = _Watchdog()
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stopped = False

    def spawn(self, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.watchdog.write(f"+{process.pid}")
        return process

    def kill_all(self) -> None:
        for process in [*self.workers, self.server]:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Cluster:
    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="hq"))
        root = Path(os.path.abspath(root))
        root.mkdir(parents=True, exist_ok=True)
        self.ctx = HqClusterContext(root)
        try:
            self._start_server()
        except BaseException:
            self.ctx.kill_all()
            self.ctx.watchdog.close()
            raise

    @property
    def server_dir(self) -> str:
        return str(self.ctx.server_dir)

    def _start_server(self) -> None:
        root = self.ctx.server_dir
        link = root / CURRENT_LINK
        previous = os.path.realpath(link) if (link / ACCESS_FILE).exists() else None
        log = root / "hq-server.log"
        self.ctx.server = server = self.ctx.spawn(
            [*_hq_argv(root), "server", "start", "--host", "127.0.0.1"], log, dict(os.environ)
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"The HQ server did not start:\n{_log_tail(log)}")
            if (link / ACCESS_FILE).exists() and os.path.realpath(link) != previous:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"The HQ server did not start in {START_TIMEOUT:.0f} s")
            time.sleep(POLL_INTERVAL)

    def add_worker(self, cores: int) -> None:
        """Start a worker with `cores` CPUs; return once the server has registered it."""
        if self.ctx.stopped:
            raise RuntimeError("Attempting to add worker to a stopped server")
        root = self.ctx.server_dir
        index = len(self.ctx.workers) + 1
        env = dict(os.environ)
        # Function tasks run `python3`: prefer the interpreter of this program, whose
        # environment can import hyperq (the original's tasks inherit it too).
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        log = root / "worker" / f"worker-{index}.log"
        worker = self.ctx.spawn(
            [
                *_hq_argv(root),
                "worker",
                "start",
                "--cpus",
                str(int(cores)),
                "--detect-resources",
                "none",
                "--manager",
                "none",
                "--on-server-lost",
                "stop",
                "--heartbeat",
                "10s",
                "--work-dir",
                str(root / "worker" / "workdir"),
            ],
            log,
            env,
        )
        self.ctx.workers.append(worker)
        self._wait_registered(worker, log)

    def _wait_registered(self, worker: subprocess.Popen[bytes], log: Path) -> None:
        from hyperq.client.session import connect_to_server

        context = Context(self.ctx.server_dir, False, "cli", False, False)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            with connect_to_server(context) as session:
                while True:
                    if worker.poll() is not None:
                        raise RuntimeError(f"The HQ worker did not start:\n{_log_tail(log)}")
                    reply: Any = session.request("worker-list")
                    for found in reply.get("workers") or []:
                        if found.get("pid") == worker.pid and found.get("state") == "RUNNING":
                            return
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"The HQ worker did not start in {START_TIMEOUT:.0f} s")
                    time.sleep(POLL_INTERVAL)
        except HqError as error:
            raise RuntimeError(error.message) from None

    def stop(self) -> None:
        """Stop the server; its workers stop when they lose it."""
        ctx = self.ctx
        if ctx.stopped:
            raise RuntimeError("Attempting to stop an already stopped server")
        ctx.stopped = True
        try:
            server = ctx.server
            if server is not None and server.poll() is None:
                from hyperq.client.session import connect_to_server

                context = Context(ctx.server_dir, False, "cli", False, False)
                with contextlib.suppress(HqError), connect_to_server(context, retry=0) as s:
                    s.request("server-stop")
                deadline = time.monotonic() + STOP_TIMEOUT
                for process in [server, *ctx.workers]:
                    remaining = max(0.1, deadline - time.monotonic())
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=remaining)
        finally:
            ctx.kill_all()
            ctx.watchdog.close()

"""`hq worker deploy-ssh`: start one `hq worker start` per host of a hostfile over SSH.

Only the launcher runs here: it spawns the local `ssh` client, one per host, all at
once, and waits for them (cluster.md §5). It never talks to the server itself; the remote
workers find the server the usual way (server dir, or `--server-dir` in the worker args).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hyperq.common import log
from hyperq.common.errors import HqError, UsageError


@dataclass(frozen=True)
class SshHost:
    host: str
    port: int | None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def parse_hostfile(text: str) -> list[SshHost]:
    """One `host` or `host:port` per line; blank lines are skipped."""
    hosts: list[SshHost] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        host, sep, port_text = line.partition(":")
        port: int | None = None
        if sep:
            try:
                port = int(port_text)
            except ValueError:
                raise HqError(
                    f"Cannot parse port from {line}: invalid digit found in string"
                ) from None
            if not 0 <= port <= 65535:
                raise HqError(
                    f"Cannot parse port from {line}: number too large to fit in target type"
                )
        hosts.append(SshHost(host, port))
    if not hosts:
        raise HqError("The provided hostname is empty")
    return hosts


def load_hostfile(path: str) -> list[SshHost]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        raise HqError(f"Cannot load hostfile from {path}") from None
    return parse_hostfile(text)


def hq_program() -> str:
    """The absolute path of the `hq` the user ran, for the remote side to run the same one.

    Run as `python -m hyperq`, argv[0] is the package's __main__.py, which is not a program;
    the `hq` launcher installed next to that interpreter runs the same code.
    """
    argv0 = sys.argv[0]
    if argv0 and os.path.basename(argv0) != "__main__.py":
        return os.path.abspath(argv0)
    launcher = Path(sys.executable).parent / "hq"
    if os.access(launcher, os.X_OK):
        return str(launcher.absolute())
    raise HqError("Cannot find the path of the `hq` program to run on the remote hosts")


def ssh_argv(ssh: str, host: SshHost, hq: str, worker_args: list[str]) -> list[str]:
    argv = [ssh, host.host, "-t", "-t"]
    if host.port is not None:
        argv += ["-p", str(host.port)]
    return [*argv, "--", hq, "worker", "start", *worker_args]


def validate_worker_args(worker_args: list[str]) -> None:
    """The passed-through args must be valid `worker start` options (usage error if not)."""
    from hyperq.cli.args import parse, value_options
    from hyperq.cli.main import extract_globals
    from hyperq.cli.worker import START_USAGE

    # Global options (`--server-dir`, ...) are legal in a worker's command line too.
    own = extract_globals(list(worker_args), {}, value_options(START_USAGE), False)
    parse(START_USAGE, ["worker", "start"], own)


def deploy(hostfile: str, worker_args: list[str], show_output: bool) -> int:
    import trio

    validate_worker_args(worker_args)
    hosts = load_hostfile(hostfile)
    ssh = shutil.which("ssh")
    if ssh is None:
        raise HqError("Cannot find `ssh` binary. Make sure that OpenSSH is installed.")
    ssh = os.path.abspath(ssh)
    hq = hq_program()
    output = None if show_output else subprocess.DEVNULL
    return trio.run(_deploy_all, [ssh_argv(ssh, h, hq, worker_args) for h in hosts], hosts, output)


async def _deploy_all(
    argvs: list[list[str]], hosts: list[SshHost], output: int | None
) -> int:
    import trio

    failed = False
    interrupted = False

    async def run_one(argv: list[str], host: SshHost) -> None:
        nonlocal failed
        try:
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        except OSError as error:
            failed = True
            log.error(f"Worker at `{host}` has ended with an error: {error}")
            return
        log.info(f"Started worker process at `{host}`")
        try:
            code = await process.wait()
        finally:
            # Cancelled (SIGINT): the ssh client must not outlive us.
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        if code == 0:
            log.info(f"Worker at `{host}` has ended successfully")
        else:
            failed = True
            shown = code if code >= 0 else -1
            log.error(
                f"Worker at `{host}` has ended with an error: Worker exited with code {shown}"
            )

    async def watch_sigint(cancel: trio.CancelScope) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                interrupted = True
                print("SIGINT received, closing workers", file=sys.stderr, flush=True)
                cancel.cancel()
                return

    async with trio.open_nursery() as outer:
        outer.start_soon(watch_sigint, outer.cancel_scope)
        async with trio.open_nursery() as nursery:
            for argv, host in zip(argvs, hosts, strict=True):
                nursery.start_soon(run_one, argv, host)
        outer.cancel_scope.cancel()

    if interrupted:
        return 1
    log.info("All workers have finished")
    if failed:
        raise HqError("Some workers have ended with an error")
    return 0


def run(args: dict[str, object]) -> int:
    rest = list(args.get("<command>") or [])  # type: ignore[call-overload]
    if not rest:
        raise UsageError(
            "error: the following required arguments were not provided:\n  <HOSTFILE>"
        )
    return deploy(str(rest[0]), [str(a) for a in rest[1:]], bool(args.get("--show-output")))

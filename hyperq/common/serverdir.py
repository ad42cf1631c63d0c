"""The server directory: run directories, the `hq-current` link and how readers find it.

Every process (server, worker, client) finds the running server only through this
directory, so the layout rules live in one place. No network here.
"""

from __future__ import annotations

import os
from pathlib import Path

from hyperq.common.errors import HqError

CURRENT_LINK = "hq-current"
ACCESS_FILE = "access.json"
ENV_SERVER_DIR = "HQ_SERVER_DIR"


def default_server_dir() -> Path:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    if not home or home == "~":
        import tempfile

        return Path(tempfile.gettempdir()) / ".hq-server"
    return Path(home) / ".hq-server"


def absolute_server_dir(given: str | None) -> tuple[Path, bool]:
    """The absolute server dir, and whether it is the default one (for error hints)."""
    if given:
        return Path(os.path.abspath(given)), False
    env = os.environ.get(ENV_SERVER_DIR)
    if env:
        return Path(os.path.abspath(env)), False
    return default_server_dir(), True


def resolve_active_dir(server_dir: Path) -> Path:
    """The directory holding the active access record.

    `hq-current` wins when it resolves to a directory; otherwise the server dir itself is
    used, so a plain directory holding an access.json works too.
    """
    link = server_dir / CURRENT_LINK
    if link.is_dir():
        return link.resolve()
    if not server_dir.is_dir():
        raise HqError(
            f'Invalid server directory\n\nCaused by:\n    "{server_dir}" is not a directory'
        )
    return server_dir


def next_run_dir(server_dir: Path) -> Path:
    """Name of the next run directory: one more than the highest numeric child directory."""
    highest = 0
    try:
        entries = list(os.scandir(server_dir))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if entry.name.isdigit() and entry.is_dir(follow_symlinks=False):
            highest = max(highest, int(entry.name))
    return server_dir / f"{highest + 1:03d}"


def create_run_dir(server_dir: Path) -> Path:
    """Create the server dir (with parents) and a fresh run directory, mode 0700."""
    server_dir.mkdir(parents=True, exist_ok=True)
    while True:
        run_dir = next_run_dir(server_dir)
        try:
            run_dir.mkdir(mode=0o700)
        except FileExistsError:
            # Another server raced us to this number; take the next one.
            continue
        os.chmod(run_dir, 0o700)
        return run_dir


def point_current_link(server_dir: Path, run_dir: Path) -> None:
    """Atomically replace `hq-current` with a link to run_dir."""
    link = server_dir / CURRENT_LINK
    tmp = server_dir / f".{CURRENT_LINK}.{os.getpid()}"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(run_dir.resolve(), tmp)
    os.replace(tmp, link)


def remove_current_link(server_dir: Path, run_dir: Path) -> None:
    """Remove `hq-current`, but only if it still points at our run dir."""
    link = server_dir / CURRENT_LINK
    try:
        if os.path.realpath(link) == str(run_dir.resolve()):
            link.unlink()
    except FileNotFoundError:
        pass

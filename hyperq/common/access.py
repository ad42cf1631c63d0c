"""The access record (`access.json`): where the server listens and the role secrets.

The record is the only thing workers and clients know about a server. It is written
once, exclusively, readable only by its owner, and always version-checked on reading.
No network here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hyperq import __version__
from hyperq.common.errors import HqError

UID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_server_uid() -> str:
    # os.urandom rather than `secrets`: the latter's imports cost every CLI command time.
    return "".join(UID_ALPHABET[b % len(UID_ALPHABET)] for b in os.urandom(6))


def new_secret_key() -> str:
    return os.urandom(32).hex()


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    secret_key: str | None

    def key_bytes(self) -> bytes | None:
        return bytes.fromhex(self.secret_key) if self.secret_key is not None else None

    def to_json(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "secret_key": self.secret_key}

    @classmethod
    def from_json(cls, data: object, where: str) -> Endpoint:
        if not isinstance(data, dict):
            raise HqError(f"Invalid access record {where}: endpoint is not an object")
        host, port, key = data.get("host"), data.get("port"), data.get("secret_key")
        if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
            raise HqError(f"Invalid access record {where}: bad host or port")
        if key is not None:
            if not isinstance(key, str) or len(key) != 64:
                raise HqError(f"Invalid access record {where}: bad secret key")
            try:
                bytes.fromhex(key)
            except ValueError:
                raise HqError(f"Invalid access record {where}: bad secret key") from None
        return cls(host, port, key)


@dataclass(frozen=True)
class AccessRecord:
    version: str
    server_uid: str | None
    client: Endpoint | None
    worker: Endpoint | None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"version": self.version}
        if self.server_uid is not None:
            data["server_uid"] = self.server_uid
        if self.client is not None:
            data["client"] = self.client.to_json()
        if self.worker is not None:
            data["worker"] = self.worker.to_json()
        return data

    def client_only(self) -> AccessRecord:
        return AccessRecord(self.version, None, self.client, None)

    def worker_only(self) -> AccessRecord:
        return AccessRecord(self.version, None, None, self.worker)


def generate_record(
    client_host: str,
    client_port: int,
    worker_host: str,
    worker_port: int,
    *,
    client_auth: bool = True,
    worker_auth: bool = True,
    server_uid: str | None = None,
) -> AccessRecord:
    return AccessRecord(
        version=__version__,
        server_uid=server_uid or new_server_uid(),
        client=Endpoint(client_host, client_port, new_secret_key() if client_auth else None),
        worker=Endpoint(worker_host, worker_port, new_secret_key() if worker_auth else None),
    )


def write_record(path: Path, record: AccessRecord) -> None:
    """Write the record exclusively (never over an existing file) with mode 0400."""
    text = json.dumps(record.to_json(), indent=2)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:
        raise HqError(f"Access file {path} already exists") from None
    except OSError as error:
        raise HqError(f"Cannot write access file {path}: {error.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_record(path: Path) -> AccessRecord:
    """Read and version-check an access record; partial records are fine."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise HqError(f"Access file {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise HqError(f"Cannot read access file {path}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise HqError(f"Invalid access record {path}: missing version")
    version = data["version"]
    if version != __version__:
        raise HqError(
            "Hyperqueue version mismatch detected.\n"
            f"Access record contains version {version}, but the current version is {__version__}."
        )
    uid = data.get("server_uid")
    client = data.get("client")
    worker = data.get("worker")
    return AccessRecord(
        version=version,
        server_uid=uid if isinstance(uid, str) else None,
        client=Endpoint.from_json(client, str(path)) if client is not None else None,
        worker=Endpoint.from_json(worker, str(path)) if worker is not None else None,
    )

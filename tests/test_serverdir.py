"""Server directory layout and access records."""

import json
import os
import stat
from pathlib import Path

import pytest

from hyperq import __version__
from hyperq.common import serverdir
from hyperq.common.access import generate_record, read_record, write_record
from hyperq.common.errors import HqError


def test_run_dir_numbering(tmp_path: Path) -> None:
    assert serverdir.next_run_dir(tmp_path).name == "001"
    (tmp_path / "004").mkdir()
    (tmp_path / "abc").mkdir()
    (tmp_path / "0x9").mkdir()
    (tmp_path / "999").write_text("a file, not a directory")
    assert serverdir.next_run_dir(tmp_path).name == "005"
    (tmp_path / "999d").mkdir()
    (tmp_path / "137").mkdir()
    assert serverdir.next_run_dir(tmp_path).name == "138"
    (tmp_path / "999").unlink()
    (tmp_path / "999").mkdir()
    assert serverdir.next_run_dir(tmp_path).name == "1000"


def test_create_run_dir_mode_and_link(tmp_path: Path) -> None:
    server_dir = tmp_path / "a" / "b"
    run = serverdir.create_run_dir(server_dir)
    assert run.name == "001"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    serverdir.point_current_link(server_dir, run)
    assert serverdir.resolve_active_dir(server_dir) == run.resolve()
    run2 = serverdir.create_run_dir(server_dir)
    serverdir.point_current_link(server_dir, run2)
    assert os.readlink(server_dir / "hq-current") == str(run2.resolve())
    # Removing the link of a run that is no longer current leaves the new link alone.
    serverdir.remove_current_link(server_dir, run)
    assert (server_dir / "hq-current").is_symlink()
    serverdir.remove_current_link(server_dir, run2)
    assert not (server_dir / "hq-current").exists()
    assert run.is_dir() and run2.is_dir()


def test_resolve_plain_directory_and_errors(tmp_path: Path) -> None:
    assert serverdir.resolve_active_dir(tmp_path) == tmp_path
    plain = tmp_path / "hq-current"
    plain.mkdir()
    assert serverdir.resolve_active_dir(tmp_path) == plain.resolve()
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(HqError, match="Invalid server directory"):
        serverdir.resolve_active_dir(a_file)


def test_access_record_written_exclusively_0400(tmp_path: Path) -> None:
    record = generate_record("h1", 1000, "h2", 2000)
    path = tmp_path / "access.json"
    write_record(path, record)
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    data = json.loads(path.read_text())
    assert list(data) == ["version", "server_uid", "client", "worker"]
    assert data["version"] == __version__
    assert len(data["server_uid"]) == 6 and data["server_uid"].isalnum()
    assert list(data["client"]) == ["host", "port", "secret_key"]
    assert data["client"]["host"] == "h1" and data["worker"]["port"] == 2000
    assert len(data["client"]["secret_key"]) == 64
    assert data["client"]["secret_key"] != data["worker"]["secret_key"]
    assert data["client"]["secret_key"] == data["client"]["secret_key"].lower()
    with pytest.raises(HqError, match="already exists"):
        write_record(path, record)
    assert read_record(path) == record


def test_partial_records(tmp_path: Path) -> None:
    record = generate_record("h", 1, "h", 2, worker_auth=False)
    write_record(tmp_path / "c.json", record.client_only())
    write_record(tmp_path / "w.json", record.worker_only())
    client = read_record(tmp_path / "c.json")
    worker = read_record(tmp_path / "w.json")
    assert client.worker is None and client.client == record.client
    assert worker.client is None and worker.worker == record.worker
    assert worker.worker is not None and worker.worker.secret_key is None
    assert json.loads((tmp_path / "c.json").read_text()).keys() == {"version", "client"}


def test_version_mismatch_message(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    data = generate_record("h", 1, "h", 2).to_json()
    data["version"] = __version__ + ".1"
    path.write_text(json.dumps(data))
    with pytest.raises(HqError) as error:
        read_record(path)
    assert error.value.message == (
        "Hyperqueue version mismatch detected.\n"
        f"Access record contains version {__version__}.1, but the current version is {__version__}."
    )


def test_invalid_record_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    path.write_text("{not json")
    with pytest.raises(HqError, match="Cannot read access file"):
        read_record(path)
    path.write_text(json.dumps({"version": __version__, "client": {"host": "h", "port": "x"}}))
    with pytest.raises(HqError, match="Invalid access record"):
        read_record(path)

"""`hq server …` end to end: real server processes in temp dirs."""

import json
import os
import signal
import socket
import time

import pytest

from hyperq import __version__
from tests.harness import HqEnv, wait_until
from tests.tableparse import parse_table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_prints_info_table(hq_env: HqEnv) -> None:
    port = free_port()
    process = hq_env.start_server("--client-port", str(port))
    wait_until(lambda: "Server UID" in hq_env.log_of("server"), what="info table")
    table = parse_table(hq_env.log_of("server"))
    assert len(table.rows) == 10
    assert table.get_row_value("Server directory") == str(hq_env.server_dir)
    assert table.get_row_value("Client host") == "127.0.0.1"
    assert table.get_row_value("Client port") == str(port)
    assert table.get_row_value("Pid") == str(process.pid)
    assert table.get_row_value("Version") == __version__
    assert table.get_row_value("Journal path") == ""


def test_info_stop_round_trip(hq_env: HqEnv) -> None:
    process = hq_env.start_server()
    table = parse_table(hq_env.command(["server", "info"]))
    assert [row[0] for row in table.rows] == [
        "Server UID",
        "Client host",
        "Client port",
        "Worker host",
        "Worker port",
        "Version",
        "Pid",
        "Start date",
        "Journal path",
    ]
    assert table.get_row_value("Pid") == str(process.pid)
    assert table.get_row_value("Start date").endswith(" UTC")
    record = json.loads(hq_env.access_path().read_text())
    assert table.get_row_value("Server UID") == record["server_uid"]
    assert table.get_row_value("Worker port") == str(record["worker"]["port"])

    info = hq_env.json(["server", "info"])
    assert info["server_dir"] is None
    assert info["pid"] == process.pid
    assert info["client_port"] == record["client"]["port"]
    assert info["start_date"].endswith("Z")
    assert info["journal_path"] is None
    assert hq_env.command(["--output-mode", "quiet", "server", "info"]) == ""

    output = hq_env.command(["server", "stop"])
    assert "INFO Stopping server" in output
    assert process.wait(timeout=10) == 0


def test_json_start_output(hq_env: HqEnv) -> None:
    process = hq_env.start_process(
        "server",
        [
            "--output-mode",
            "json",
            "--server-dir",
            str(hq_env.server_dir),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--journal",
            "j.bin",
        ],
    )
    wait_until(lambda: hq_env.access_path().exists(), what="access record")
    wait_until(lambda: "}" in hq_env.log_of("server"), what="json output")
    text = hq_env.log_of("server")
    data = json.loads(text[text.index("{") : text.index("}") + 1])
    assert data["server_dir"] == str(hq_env.server_dir)
    assert data["journal_path"] == "j.bin"
    assert data["pid"] == process.pid
    hq_env.stop_server(process)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_stop_gracefully(hq_env: HqEnv, signum: int) -> None:
    process = hq_env.start_server()
    link = hq_env.server_dir / "hq-current"
    run_dir = os.path.realpath(link)
    process.send_signal(signum)
    assert process.wait(timeout=10) == 0
    assert not os.path.lexists(link)
    assert os.path.isdir(run_dir)
    assert os.path.exists(os.path.join(run_dir, "access.json"))


def test_run_dirs_accumulate(hq_env: HqEnv) -> None:
    for expected in ("001", "002"):
        process = hq_env.start_server()
        assert os.path.realpath(hq_env.server_dir / "hq-current").endswith(expected)
        hq_env.stop_server(process)


def test_second_server_refused(hq_env: HqEnv) -> None:
    hq_env.start_server()
    second = hq_env.start_process(
        "second", ["--server-dir", str(hq_env.server_dir), "server", "start", "--host", "127.0.0.1"]
    )
    assert second.wait(timeout=10) == 1
    assert (
        f"Server at {hq_env.server_dir} is already online, please stop it first using "
        f"`hq server stop --server-dir {hq_env.server_dir}`"
    ) in hq_env.log_of("second")


def test_stale_record_ignored(hq_env: HqEnv) -> None:
    process = hq_env.start_server()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert hq_env.access_path().exists()
    again = hq_env.start_server(name="again")
    assert os.path.realpath(hq_env.server_dir / "hq-current").endswith("002")
    hq_env.stop_server(again)


def test_no_server_messages(hq_env: HqEnv) -> None:
    hq_env.server_dir.mkdir()
    output = hq_env.command(["server", "info"], expect_fail=True)
    assert f'No running instance of HQ found at "{hq_env.server_dir}".' in output
    assert f"`hq server start --server-dir {hq_env.server_dir}`" in output
    data = json.loads(hq_env.command(["server", "info"], expect_fail=True, json_mode=True))
    assert data["error"].startswith("No running instance of HQ found")


def test_unreachable_message(hq_env: HqEnv) -> None:
    process = hq_env.start_server()
    record = json.loads(hq_env.access_path().read_text())
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    output = hq_env.command(["server", "info"], expect_fail=True)
    assert (
        f"Access token found but HQ server 127.0.0.1:{record['client']['port']} is unreachable."
        in output
    )


def test_version_mismatch(hq_env: HqEnv) -> None:
    hq_env.start_server()
    path = hq_env.access_path()
    data = json.loads(path.read_text())
    data["version"] += ".1"
    os.chmod(path, 0o600)
    path.write_text(json.dumps(data))
    output = hq_env.command(["server", "info"], expect_fail=True)
    assert (
        f"Access record contains version {__version__}.1, but the current version is {__version__}"
        in output
    )


def test_generate_access_round_trip(hq_env: HqEnv) -> None:
    client_port, worker_port = free_port(), free_port()
    access = hq_env.work_dir / "access.json"
    hq_env.command(
        [
            "server",
            "generate-access",
            str(access),
            "--client-port",
            str(client_port),
            "--worker-port",
            str(worker_port),
            "--host",
            "127.0.0.1",
            "--client-file",
            "client.json",
            "--worker-file",
            "worker.json",
        ]
    )
    assert json.loads((hq_env.work_dir / "client.json").read_text()).keys() == {"version", "client"}
    assert json.loads((hq_env.work_dir / "worker.json").read_text()).keys() == {"version", "worker"}
    process = hq_env.start_server("--access-file", str(access))
    assert json.loads(hq_env.access_path().read_text()) == json.loads(access.read_text())
    info = hq_env.json(["server", "info"])
    assert info["client_port"] == client_port and info["worker_port"] == worker_port

    # A client holding only the client record reaches the server too.
    plain = hq_env.work_dir / "client-only" / "hq-current"
    plain.mkdir(parents=True)
    (plain / "access.json").write_text((hq_env.work_dir / "client.json").read_text())
    out = hq_env.run(["--server-dir", str(plain.parent), "server", "info"])
    assert out.returncode == 0, out.stderr
    hq_env.stop_server(process)


def test_disabled_authentication_warns(hq_env: HqEnv) -> None:
    process = hq_env.start_server(
        "--disable-client-authentication-and-encryption",
        "--disable-worker-authentication-and-encryption",
    )
    record = json.loads(hq_env.access_path().read_text())
    assert record["client"]["secret_key"] is None and record["worker"]["secret_key"] is None
    wait_until(
        lambda: "WARN Client authentication and encryption is disabled" in hq_env.log_of("server"),
        what="warning",
    )
    assert hq_env.json(["server", "info"])["pid"] == process.pid
    hq_env.stop_server(process)


def test_server_wait(hq_env: HqEnv) -> None:
    start = time.monotonic()
    result = hq_env.run(["server", "wait", "--timeout", "1s"])
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert "Timeout after 1s: Could not connect to server at" in result.stderr
    assert elapsed < 5
    hq_env.start_server()
    assert hq_env.run(["server", "wait", "--timeout", "5s"]).returncode == 0


def test_usage_errors(hq_env: HqEnv) -> None:
    result = hq_env.run(["server", "start", "--foo"])
    assert result.returncode == 2
    assert "unexpected argument '--foo' found" in result.stderr
    result = hq_env.run(["server", "start", "--client-port", "notaport"])
    assert result.returncode == 2
    result = hq_env.run(["--output-mode", "yaml", "server", "info"])
    assert result.returncode == 2
    result = hq_env.run(["nosuchcommand"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_version_flag(hq_env: HqEnv) -> None:
    result = hq_env.run(["--version"])
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_debug_dump(hq_env: HqEnv) -> None:
    hq_env.start_server()
    path = hq_env.work_dir / "dump.json"
    hq_env.command(["server", "debug-dump", str(path)])
    assert "tako" in json.loads(path.read_text())
    output = hq_env.command(["server", "debug-dump", "/nonexistent/dir/x.json"], expect_fail=True)
    assert "Could not write debug dump" in output

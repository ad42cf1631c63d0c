"""`hq worker deploy-ssh` (cluster.md §5): against a real OpenSSH server on 127.0.0.1, and
against a fake `ssh` on PATH for what one local sshd cannot show (distinct hosts,
chosen exit codes, the exact argv)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperq.cli.deployssh import SshHost, parse_hostfile
from hyperq.common.errors import HqError
from tests.harness import HQ_ARGV, ClusterEnv, wait_until

HQ_LAUNCHER = str((Path(sys.executable).parent / "hq").absolute())

# A fake ssh: records its argv in <dir>/<host>.json, prints FOOBAR, sleeps if asked, and
# exits with the code given for that host (FAKE_SSH_EXIT="host=code,...").
FAKE_SSH = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys, time
    host = sys.argv[1]
    with open(os.path.join({record_dir!r}, host + ".json"), "w") as f:
        json.dump(sys.argv, f)
    print("FOOBAR", flush=True)
    time.sleep(float(os.environ.get("FAKE_SSH_SLEEP", "0")))
    codes = dict(i.split("=") for i in os.environ.get("FAKE_SSH_EXIT", "").split(",") if i)
    sys.exit(int(codes.get(host, "0")))
    """
)


def test_parse_hostfile() -> None:
    assert parse_hostfile(" a \n\nb:22\n") == [SshHost("a", None), SshHost("b", 22)]
    with pytest.raises(HqError, match="The provided hostname is empty"):
        parse_hostfile("\n  \n")
    with pytest.raises(HqError, match="Cannot parse port from b:x"):
        parse_hostfile("b:x")
    with pytest.raises(HqError, match="Cannot parse port from b:70000"):
        parse_hostfile("b:70000")


class FakeSsh:
    def __init__(self, root: Path) -> None:
        self.bin = root / "fakebin"
        self.records = root / "ssh-records"
        self.bin.mkdir()
        self.records.mkdir()
        script = self.bin / "ssh"
        script.write_text(FAKE_SSH.format(python=sys.executable, record_dir=str(self.records)))
        script.chmod(0o755)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env

    def argv_of(self, host: str) -> list[str]:
        return json.loads((self.records / f"{host}.json").read_text())


@pytest.fixture
def fake_ssh(tmp_path: Path) -> FakeSsh:
    return FakeSsh(tmp_path)


def deploy(
    tmp_path: Path, hosts: str, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(hosts)
    return subprocess.run(
        [*HQ_ARGV, "worker", "deploy-ssh", *args[:1], str(hostfile), *args[1:]]
        if args[:1] == ("--show-output",)
        else [*HQ_ARGV, "worker", "deploy-ssh", str(hostfile), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
    )


def test_deploy_ssh_worker_command_and_port(tmp_path: Path, fake_ssh: FakeSsh) -> None:
    result = deploy(tmp_path, "localhost:1234\nnode2\n", "--time-limit", "3s", env=fake_ssh.env())
    assert result.returncode == 0, result.stderr
    ssh = str(fake_ssh.bin / "ssh")
    argv = fake_ssh.argv_of("localhost")
    assert argv[:7] == [ssh, "localhost", "-t", "-t", "-p", "1234", "--"]
    assert argv[7:] == [HQ_LAUNCHER, "worker", "start", "--time-limit", "3s"]
    assert fake_ssh.argv_of("node2")[:5] == [ssh, "node2", "-t", "-t", "--"]
    assert "INFO Started worker process at `localhost:1234`" in result.stderr
    assert "INFO Worker at `node2` has ended successfully" in result.stderr
    assert result.stderr.rstrip().endswith("INFO All workers have finished")
    # Without --show-output the children's output is discarded.
    assert "FOOBAR" not in result.stdout + result.stderr


def test_deploy_ssh_multiple_workers_one_error(tmp_path: Path, fake_ssh: FakeSsh) -> None:
    env = fake_ssh.env(FAKE_SSH_EXIT="h2=42")
    result = deploy(tmp_path, "h1\nh2\nh3\n", env=env)
    assert sorted(p.name for p in fake_ssh.records.iterdir()) == ["h1.json", "h2.json", "h3.json"]
    assert result.returncode == 1
    assert (
        "ERROR Worker at `h2` has ended with an error: Worker exited with code 42"
        in result.stderr
    )
    assert "INFO Worker at `h1` has ended successfully" in result.stderr
    assert result.stderr.rstrip().endswith("Some workers have ended with an error")


def test_deploy_ssh_show_output_and_waits(tmp_path: Path, fake_ssh: FakeSsh) -> None:
    result = deploy(tmp_path, "h1\n", "--show-output", env=fake_ssh.env(FAKE_SSH_SLEEP="1"))
    assert result.returncode == 0, result.stderr
    assert "FOOBAR" in result.stdout
    assert "INFO Worker at `h1` has ended successfully" in result.stderr


def test_deploy_ssh_errors(tmp_path: Path, fake_ssh: FakeSsh) -> None:
    invalid = deploy(tmp_path, "h1\n", "--no-such-option", env=fake_ssh.env())
    assert invalid.returncode == 2
    assert "unexpected argument '--no-such-option'" in invalid.stderr
    assert not list(fake_ssh.records.iterdir())

    empty = deploy(tmp_path, "\n", env=fake_ssh.env())
    assert (empty.returncode, empty.stderr.strip()) == (1, "The provided hostname is empty")

    missing = subprocess.run(
        [*HQ_ARGV, "worker", "deploy-ssh", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=fake_ssh.env(),
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"Cannot load hostfile from {tmp_path / 'nope'}"

    no_ssh = deploy(tmp_path, "h1\n", env={**os.environ, "PATH": str(tmp_path / "empty")})
    assert no_ssh.returncode == 1
    assert "Cannot find `ssh` binary. Make sure that OpenSSH is installed." in no_ssh.stderr


def test_deploy_ssh_sigint_kills_children(tmp_path: Path, fake_ssh: FakeSsh) -> None:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("h1\n")
    process = subprocess.Popen(
        [*HQ_ARGV, "worker", "deploy-ssh", str(hostfile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=fake_ssh.env(FAKE_SSH_SLEEP="60"),
        start_new_session=True,
    )
    try:
        wait_until(lambda: (fake_ssh.records / "h1.json").exists(), what="ssh started")
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=15)
        assert "SIGINT received, closing workers" in err
        assert process.returncode != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- a real OpenSSH server --------------------------------------------------------------
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
SSH_CLIENT = shutil.which("ssh")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RealSshd:
    """sshd on a free loopback port with its own keys and config; `ssh` on PATH is a
    wrapper adding `-F <our client config>`, because ssh reads ~/.ssh from the passwd entry
    and we must not touch the user's files."""

    def __init__(self, root: Path) -> None:
        assert SSHD is not None and SSH_CLIENT is not None
        self.root = root
        self.port = free_port()
        root.mkdir()
        for key in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)],
                check=True,
            )
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        (root / "sshd_config").write_text(
            textwrap.dedent(
                f"""\
                Port {self.port}
                ListenAddress 127.0.0.1
                HostKey {root / "host_key"}
                AuthorizedKeysFile {root / "authorized_keys"}
                PidFile {root / "sshd.pid"}
                StrictModes no
                UsePAM no
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PrintMotd no
                """
            )
        )
        (root / "ssh_config").write_text(
            textwrap.dedent(
                f"""\
                Host *
                  User {getpass.getuser()}
                  IdentityFile {root / "client_key"}
                  IdentitiesOnly yes
                  StrictHostKeyChecking no
                  UserKnownHostsFile /dev/null
                  BatchMode yes
                  LogLevel ERROR
                """
            )
        )
        self.bin = root / "bin"
        self.bin.mkdir()
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {SSH_CLIENT} -F {root / "ssh_config"} "$@"\n')
        wrapper.chmod(0o755)
        if os.geteuid() == 0:
            # sshd refuses to start as root without its privilege-separation directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.log = open(root / "sshd.log", "w")
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self.listening, what="sshd to listen")

    def listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"sshd exited:\n{(self.root / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[RealSshd]:
    if SSHD is None or SSH_CLIENT is None:
        pytest.skip("OpenSSH server/client not installed (Debian packages openssh-server)")
    server = RealSshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


def test_deploy_ssh_real_sshd_starts_workers(cluster: ClusterEnv, sshd: RealSshd) -> None:
    cluster.start_server()
    hostfile = cluster.work_dir / "hostfile"
    # Two entries reaching the same sshd: two workers, told apart by the address used.
    hostfile.write_text(f"127.0.0.1:{sshd.port}\nlocalhost:{sshd.port}\n")
    env = dict(cluster.env)
    env["PATH"] = f"{sshd.bin}{os.pathsep}{env['PATH']}"
    deploy_process = subprocess.Popen(
        [
            *HQ_ARGV,
            "worker",
            "deploy-ssh",
            str(hostfile),
            "--server-dir",
            str(cluster.server_dir),
            "--time-limit",
            "4s",
            "--detect-resources",
            "none",
            "--cpus",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cluster.work_dir,
        start_new_session=True,
    )
    cluster.processes.append(("deploy", deploy_process))
    workers = wait_until(
        lambda: (
            cluster.json(["worker", "list"])
            if len(cluster.json(["worker", "list"])) == 2
            else None
        ),
        timeout=20,
        what="two workers started over ssh",
    )
    assert all(w["ended"] is None for w in workers)
    _out, err = deploy_process.communicate(timeout=30)
    assert deploy_process.returncode == 0, err
    for host in (f"127.0.0.1:{sshd.port}", f"localhost:{sshd.port}"):
        assert f"INFO Started worker process at `{host}`" in err
        assert f"INFO Worker at `{host}` has ended successfully" in err
    assert err.rstrip().endswith("INFO All workers have finished")
    gone = cluster.json(["worker", "list", "--all"])
    assert len(gone) == 2 and all(w["ended"] is not None for w in gone)

"""Throwaway Redis and PostgreSQL servers a test starts on a free port, stops and restarts itself.

The outage tests kill their dependency mid-test; they never touch the machine's shared servers.
Under CI=true a missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.databases import IN_CI
from tests.e2e.server import free_port


def require(binary: str | None, what: str) -> str:
    """The binary's path; a loud failure under CI=true, a skip elsewhere."""
    if binary and Path(binary).exists():
        return binary
    if IN_CI:
        pytest.fail(f"CI=true and {what} is not installed")
    pytest.skip(f"{what} is not installed")


def _wait_for_port(port: int, up: bool, timeout: float = 20) -> None:
    """Until something listens on `port` (up) or nothing does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            listening = sock.connect_ex(("127.0.0.1", port)) == 0
        if listening == up:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} still {'closed' if up else 'open'} after {timeout} s")


class RedisServer:
    """A redis-server of the test's own, without persistence."""

    def __init__(self, binary: str) -> None:
        """Pick a port; start() runs it."""
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Run it and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, up=True)

    def stop(self) -> None:
        """Kill it (SIGKILL: an outage, not a clean shutdown) and wait until the port is closed."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
        _wait_for_port(self.port, up=False)


SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_client():
    """A client of the machine's shared Redis; required under CI=true."""
    import redis

    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        if IN_CI:
            pytest.fail(f"CI=true and Redis at {SHARED_REDIS_URL} is unreachable: {error}")
        pytest.skip(f"Redis unreachable: {error}")
    yield client
    client.close()


@pytest.fixture
def redis_server():
    """A Redis started for this test, on a free port."""
    server = RedisServer(require(shutil.which("redis-server"), "redis-server"))
    server.start()
    yield server
    server.stop()


def _postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl), on a free port, trust auth.

    PostgreSQL refuses to run as root; then the cluster belongs to the `postgres` account.
    """

    def __init__(self, bindir: Path, directory: Path) -> None:
        """initdb a cluster in `directory`."""
        self.bindir = bindir
        self.directory = directory
        self.port = free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        self.user = "postgres" if os.geteuid() == 0 else None
        directory.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(directory / "data"), "-U", "postgres", "-A", "trust", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        """Run one of the server's tools, as the cluster's owner."""
        command = [str(self.bindir / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.directory)

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory}"
        options += " -c fsync=off -c max_connections=40"
        self._run(
            "pg_ctl",
            "-D",
            str(self.directory / "data"),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )
        _wait_for_port(self.port, up=True)

    def stop(self) -> None:
        """Stop it at once (every session is cut, as in a crash or failover)."""
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop")
        _wait_for_port(self.port, up=False)


@pytest.fixture
def postgres_server():
    """A PostgreSQL started for this test, on a free port."""
    bindir = _postgres_bin()
    require(str(bindir / "pg_ctl") if bindir else None, "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin)")
    directory = Path(f"/tmp/auth-pg-{free_port()}")  # short: the socket path has a length limit
    server = PostgresServer(bindir, directory)
    server.start()
    yield server
    try:
        server.stop()
    except (subprocess.CalledProcessError, AssertionError):
        pass
    shutil.rmtree(directory, ignore_errors=True)

"""gunicorn under test: start with deploy/gunicorn.conf.py on a free loopback port, find its workers, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """One gunicorn master serving `app_spec` with the production config, plain HTTP on 127.0.0.1."""

    def __init__(self, name: str, app_spec: str, env: dict[str, str], log_path: Path, health_path: str) -> None:
        """Remember how to start; nothing runs until start()."""
        self.name = name
        self.app_spec = app_spec
        self.env = env
        self.log_path = log_path
        self.health_path = health_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self, *, expected_workers: int, timeout: float = 60) -> None:
        """Start, then wait until the health path answers 200 and every worker has booted."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # No --certfile: plain HTTP, so TLS (the terminating proxy's cost, equal for both sides) stays out.
        self.process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--config",
                str(GUNICORN_CONFIG),
                "--bind",
                f"127.0.0.1:{self.port}",
                self.app_spec,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} gunicorn exited; log: {self.log_tail()}")
            if len(self.worker_pids()) >= expected_workers and self._healthy():
                self._settle(deadline)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} gunicorn did not come up in {timeout}s; log: {self.log_tail()}")
            time.sleep(0.2)

    def _settle(self, deadline: float) -> None:
        """Wait until no worker's RSS moves between two looks: every worker has imported the app."""
        previous: dict[int, float] = {}
        while time.monotonic() < deadline:
            current = self.worker_rss_mb()
            if current.keys() == previous.keys() and all(abs(current[p] - previous[p]) < 0.5 for p in current):
                return
            previous = current
            time.sleep(0.5)

    def _healthy(self) -> bool:
        """True when the health path answers 200."""
        try:
            with urllib.request.urlopen(self.base_url + self.health_path, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        """The worker processes: children of the master."""
        if self.process is None:
            return []
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit() and _ppid(entry) == pid]
        return sorted(int(child) for child in children)

    def cpu_seconds(self) -> float:
        """User plus system CPU time of every worker so far (all its threads), from /proc/<pid>/stat.

        CPU per request is far steadier than requests per second on a shared machine: another
        process stealing cores lowers the rate but not the work each request costs.
        """
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
        return total / ticks

    def worker_rss_mb(self) -> dict[int, float]:
        """VmRSS of each worker, in MiB, from /proc/<pid>/status."""
        rss = {}
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss[pid] = int(line.split()[1]) / 1024
            except OSError:
                continue
        return rss

    def worker_pss_uss_mb(self) -> dict[int, list[float]]:
        """[PSS, USS] of each worker, in MiB, from /proc/<pid>/smaps_rollup (beside VmRSS, never instead).

        RSS counts every resident page, the shared libraries and pages inherited from the master
        included, in full in every worker. PSS divides each shared page among the processes that
        share it (what the machine pays per worker); USS counts only the worker's own pages (what
        stopping it would free).
        """
        out = {}
        for pid in self.worker_pids():
            try:
                fields = {
                    line.split(":")[0]: int(line.split()[1])
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
                }
            except (OSError, ValueError, IndexError):
                continue
            out[pid] = [fields["Pss"] / 1024, (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024]
        return out

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the master (graceful), SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=35)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids():
                    _kill(pid)
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _ppid(entry: Path) -> int | None:
    """The parent pid of /proc/<pid>, or None if it vanished."""
    try:
        return int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _kill(pid: int) -> None:
    """SIGKILL one pid we started, ignoring one that is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

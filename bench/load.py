"""Load generation: wrk with bench/lua/bench.lua, or a small threaded Python client for the smoke only."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "lua" / "bench.lua"


@dataclass(frozen=True)
class Scenario:
    """One endpoint under load: what to send, and what counts as a good answer."""

    name: str
    method: str
    path: str
    mode: str = "none"  # none | body (POST each line as JSON) | bearer (each line is an access token)
    data_file: Path | None = None
    partition: bool = False  # single-use lines (refresh tokens): never send one twice
    check_valid: bool = False  # a 200 must also say "valid": true


@dataclass
class LoadResult:
    """What one timed run measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    invalid: int
    errors: int
    wrapped: int = 0
    statuses: dict[str, int] | None = None
    cpu_ms: float | None = None  # the server's worker CPU per completed request (bench/server.py cpu_seconds)

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def ensure_wrk(*, timeout: float) -> str | None:
    """The path of wrk, installing the Debian package when missing (root only); None if it cannot be had."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("wrk is missing and cannot be installed here (not root, or no apt-get)", flush=True)
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]
    deadline = time.monotonic() + timeout
    # The package lists may be missing on a fresh machine: install, and on failure update once and retry.
    for command in (install, ["apt-get", "update", "-q"], install):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        print(f"wrk is missing: {' '.join(command)}", flush=True)
        try:
            done = subprocess.run(
                command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=remaining
            )
        except subprocess.TimeoutExpired:
            print("apt-get timed out", flush=True)
            break
        if command is install and done.returncode == 0:
            return shutil.which("wrk")
        if done.returncode != 0:
            print(f"{command[1]} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    """wrk's own version line."""
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    match = re.search(r"wrk \S+", done.stdout + done.stderr)
    return match.group(0) if match else "wrk"


def run_wrk(
    wrk: str, base_url: str, scenario: Scenario, *, seconds: float, connections: int, threads: int
) -> LoadResult:
    """Drive `scenario` for `seconds` with wrk and parse the JSON line bench.lua prints."""
    data = str(scenario.data_file) if scenario.data_file else "-"
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        base_url,
        "--",
        scenario.method,
        scenario.path,
        scenario.mode,
        data,
        str(threads),
        "1" if scenario.partition else "0",
        "valid" if scenario.check_valid else "none",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((row for row in done.stdout.splitlines() if row.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    raw = json.loads(line[len("BENCH_JSON ") :])
    statuses: dict[str, int] = {}
    for part in raw["non2xx_statuses"]:
        for code, count in part.items():
            statuses[code] = statuses.get(code, 0) + count
    latency = raw["latency_us"]
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        non2xx=raw["non2xx"],
        invalid=raw["invalid"],
        errors=sum(raw["errors"][kind] for kind in ("connect", "read", "write", "timeout")),
        wrapped=raw["wrapped"] if scenario.partition else 0,
        statuses=statuses,
    )


def _python_items(scenario: Scenario) -> list[tuple[dict[str, str], bytes | None]]:
    """The (headers, body) of every request the scenario rotates over."""
    if scenario.mode == "none":
        return [({}, None)]
    lines = [line for line in scenario.data_file.read_text().splitlines() if line]
    if scenario.mode == "body":
        return [({"Content-Type": "application/json"}, line.encode()) for line in lines]
    return [({"Authorization": f"Bearer {line}"}, None) for line in lines]


def run_python(base_url: str, scenario: Scenario, *, seconds: float, connections: int) -> LoadResult:
    """The same measurement with threads and keep-alive http.client connections (smoke fallback only)."""
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    items = _python_items(scenario)
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    tally = {"non2xx": 0, "invalid": 0, "errors": 0, "sent": 0}
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        mine: list[float] = []
        while time.monotonic() < deadline:
            index = next(counter)
            headers, body = items[index % len(items)]
            started = time.perf_counter()
            try:
                conn.request(scenario.method, scenario.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                with lock:
                    tally["errors"] += 1
                continue
            mine.append(time.perf_counter() - started)
            with lock:
                tally["sent"] = max(tally["sent"], index + 1)
                if not 200 <= response.status < 300:
                    tally["non2xx"] += 1
                    statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
                elif scenario.check_valid and not re.search(rb'"valid"\s*:\s*true', payload):
                    tally["invalid"] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=statistics.median(latencies) * 1000 if latencies else 0.0,
        p99_ms=pct(0.99),
        non2xx=tally["non2xx"],
        invalid=tally["invalid"],
        errors=tally["errors"],
        wrapped=max(0, tally["sent"] - len(items)) if scenario.partition else 0,
        statuses=statuses,
    )


class LoadGenerator:
    """wrk when available, else the Python client; counts every request sent, for the memory samples."""

    def __init__(self, wrk: str | None, *, connections: int, threads: int) -> None:
        """Choose the tool once."""
        self.wrk = wrk
        self.connections = connections
        self.threads = threads
        self.name = wrk_version(wrk) if wrk else "python http.client fallback (smoke only)"

    def run(self, base_url: str, scenario: Scenario, seconds: float) -> LoadResult:
        """One timed run of `scenario` against `base_url`."""
        if self.wrk:
            return run_wrk(
                self.wrk, base_url, scenario, seconds=seconds, connections=self.connections, threads=self.threads
            )
        return run_python(base_url, scenario, seconds=seconds, connections=self.connections)

"""gunicorn under deploy/gunicorn.conf.py, for real: how it stops, and what it logs.

A small WSGI app is served with the project's config and worker class, so a request can be
made slow or made to fail on purpose; the app's own behaviour is tested elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import BIN, ROOT, free_port, stop_process, wait_until

pytestmark = pytest.mark.slow

PROBE_APP = """
import time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(float(environ["QUERY_STRING"].partition("=")[2] or 2))
    if path == "/boom":
        raise RuntimeError("the probe app fails on purpose")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""
SECRET = "qs-secret-4f1d9a"  # what a query string carries; never to be logged
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def start(tmp_path: Path, **environ: str) -> tuple[subprocess.Popen, int, Path]:
    """gunicorn with the project config serving the probe app on a free port; (process, port, log)."""
    (tmp_path / "probeapp.py").write_text(PROBE_APP)
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GUNICORN_", "TLS_", "LOG_", "PROMETHEUS_", "AUTH_SERVICE_"))
    }
    env.update(APP_ENV="testing", GUNICORN_WORKERS="2", GUNICORN_THREADS="2", GUNICORN_BIND=f"127.0.0.1:{port}")
    env.update(GUNICORN_GRACEFUL_TIMEOUT="10", **environ)
    log = tmp_path / "gunicorn.log"
    command = [str(BIN / "gunicorn"), "--config", str(ROOT / "deploy" / "gunicorn.conf.py")]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--chdir", str(tmp_path), "probeapp:app"], env=env, stdout=output, stderr=subprocess.STDOUT
        )

    def workers_up():
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        return len(children) == 2 and exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")

    try:
        wait_until(workers_up, timeout=30, what="gunicorn with 2 workers")
    except BaseException:
        process.kill()
        raise
    time.sleep(0.3)  # both workers in their event loops
    return process, port, log


def exchange(port: int, raw: bytes, timeout: float = 10) -> bytes:
    """Send `raw` on a new connection; everything the server answers until it closes."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(raw)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
            return answer
    except OSError:
        return b""


def test_sigterm_refuses_new_connections_at_once_and_finishes_the_request_in_flight(tmp_path):
    process, port, log = start(tmp_path)
    answers: list[bytes] = []
    try:
        slow = threading.Thread(
            target=lambda: answers.append(
                exchange(port, b"GET /slow?seconds=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=20)
            )
        )
        slow.start()
        time.sleep(0.5)  # the request is in a worker's thread now
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        refused_after = None
        while time.monotonic() - signalled < 1.5:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                refused_after = time.monotonic() - signalled
                break
            time.sleep(0.02)
        # Before the workers closed their copies of the listening socket, connections were
        # completed by the kernel until the slow request had ended, then reset.
        assert refused_after is not None and refused_after < 0.5, "new connections were still accepted"
        slow.join(timeout=20)
        assert answers and answers[0].startswith(b"HTTP/1.1 200"), answers
        assert answers[0].endswith(b"ok")
        process.wait(timeout=15)
    finally:
        stop_process(process)
    assert process.returncode == 0
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_log_line_carries_a_query_string(tmp_path, log_format):
    """gunicorn's "Error handling request" and "Invalid request" lines and its access log quote the
    request line; the query string (here carrying a secret) is cut out of each."""
    process, port, log = start(tmp_path, LOG_FORMAT=log_format, GUNICORN_ACCESS_LOG="1")
    try:
        # An exception escaping the app: "Error handling request /boom?..." with a traceback.
        boom = exchange(port, f"GET /boom?token={SECRET} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert boom.startswith(b"HTTP/1.1 500"), boom
        # Malformed request lines: "Invalid request from ip=...: Invalid HTTP request line: '...'".
        for line in (f"GET /login?password={SECRET}", f"GET /lo gin?password={SECRET} HTTP/1.1"):
            bad = exchange(port, f"{line}\r\nHost: t\r\n\r\n".encode())
            assert bad.startswith(b"HTTP/1.1 400"), bad
        # A request served: the access log's %(r)s, and a Referer carrying a query string too.
        fine = f"GET /?access_token={SECRET} HTTP/1.1\r\nHost: t\r\nReferer: https://a.example/p?t={SECRET}\r\n"
        assert exchange(port, (fine + "Connection: close\r\n\r\n").encode()).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)
    finally:
        stop_process(process)
    text = log.read_text()
    assert "Error handling request GET /boom" in text, text
    assert "Invalid HTTP request line: 'GET /login" in text and "Invalid HTTP Version: 'gin" in text, text
    assert re.search(r'GET / HTTP/1.1\\?" 200', text), text  # the access line, without its query string
    assert SECRET not in text, text
    lines = text.splitlines()
    if log_format == "json":
        # Every line an operator collects is JSON, its time in ISO 8601 UTC (tracebacks included).
        for line in lines:
            record = json.loads(line)
            assert ISO_UTC.match(record["time"]), line
        assert any("exc_info" in json.loads(line) for line in lines)
    else:
        # gunicorn's layout, "<time> [<pid>] [<level>] <message>", with an ISO 8601 UTC time.
        stamped = [line.split(" ", 1)[0] for line in lines if re.match(r"\S+ \[\d+\] \[[A-Z]+\] ", line)]
        assert len(stamped) >= 8 and all(ISO_UTC.match(time) for time in stamped), lines

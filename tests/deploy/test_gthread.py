"""deploy/gthread.py: new connections are spread over the workers, not taken by the first to wake."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import Counter

from tests.deploy.conftest import BIN, ROOT, free_port, wait_until

PID_APP = """
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(str(os.getpid()))))])
    return [str(os.getpid()).encode()]
"""


def ask_pid(connection: socket.socket) -> int:
    """One keep-alive request on `connection`; the pid of the worker that answered."""
    connection.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.split(b"\r\n\r\n", 1)[1]:
        chunk = connection.recv(4096)
        assert chunk, answer
        answer += chunk
    return int(answer.split(b"\r\n\r\n", 1)[1])


def test_a_burst_of_keepalive_connections_is_shared_by_the_workers(tmp_path):
    """8 connections opened at once, 2 workers × 4 threads: each worker gets about half.

    Plain gthread often gives one worker 7 or all 8 of them (seen here: 15 of 16), so a client
    with a fixed pool of keep-alive connections would use one core of two.
    """
    (tmp_path / "pidapp.py").write_text(PID_APP)
    port = free_port()
    env = {**os.environ, "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "4", "GUNICORN_BIND": f"127.0.0.1:{port}"}
    env.pop("TLS_CERT_FILE", None)
    env.pop("TLS_KEY_FILE", None)
    log = tmp_path / "gunicorn.log"
    command = [str(BIN / "gunicorn"), "--config", str(ROOT / "deploy" / "gunicorn.conf.py")]
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "--chdir", str(tmp_path), "pidapp:app"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:

        def workers_up():
            found = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
            return len(found) == 2 and _answers(port)

        wait_until(workers_up, timeout=30, what="gunicorn with 2 workers")
        time.sleep(0.5)  # both workers in their event loops
        for _ in range(3):
            connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
            try:
                counts = Counter(ask_pid(connection) for connection in connections)
            finally:
                for connection in connections:
                    connection.close()
            assert len(counts) == 2 and max(counts.values()) <= 5, counts
            time.sleep(0.3)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            return ask_pid(connection) > 0
    except OSError:
        return False

"""deploy/gthread.py: new connections are spread over the workers; /health has a thread of its own."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter

import pytest

from tests.deploy.conftest import BIN, ROOT, free_port, stop_process, wait_until

PID_APP = """
import json
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
        stop_process(server)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            return ask_pid(connection) > 0
    except OSError:
        return False


# /slow holds its thread; /health answers at once; anything else says what it got (method, path, body).
BUSY_APP = """
import time


class App:
    config = {"URL_PREFIX": "/auth"}  # read by the worker, as from the Flask app

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/auth/slow":
            time.sleep(float(environ.get("QUERY_STRING") or 3))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        answer = ("%s %s %s" % (environ["REQUEST_METHOD"], path, body.decode())).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
        return [answer]


app = App()
"""


def _certificate(folder) -> tuple:
    """A new self-signed certificate for localhost in `folder`: (cert.pem, key.pem)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class _Busy:
    """gunicorn with deploy/gthread.py serving BUSY_APP: 1 worker x 2 threads, plain or TLS."""

    def __init__(self, tmp_path, tls: bool) -> None:
        """Start it and wait until it answers."""
        (tmp_path / "busyapp.py").write_text(BUSY_APP)
        self.port = free_port()
        self.context = None
        env = {
            **os.environ,
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": "2",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
        }
        env.pop("TLS_CERT_FILE", None)
        env.pop("TLS_KEY_FILE", None)
        if tls:
            cert, key = _certificate(tmp_path)
            env.update(TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key))
            self.context = ssl.create_default_context(cafile=str(cert))
        self.log = tmp_path / "gunicorn.log"
        command = [str(BIN / "gunicorn"), "--config", str(ROOT / "deploy" / "gunicorn.conf.py")]
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [*command, "--chdir", str(tmp_path), "busyapp:app"], env=env, stdout=output, stderr=subprocess.STDOUT
            )
        wait_until(lambda: self._up(), timeout=30, what="gunicorn")

    def _up(self) -> bool:
        try:
            return self.ask(b"GET /auth/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def connect(self) -> socket.socket:
        """A fresh connection (TLS when served)."""
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if self.context is not None:
            connection = self.context.wrap_socket(connection, server_hostname="localhost")
        return connection

    def ask(self, *pieces: bytes, pause: float = 0.0, connection: socket.socket | None = None) -> bytes:
        """Send `pieces` (`pause` s apart) and read one whole answer."""
        own = connection is None
        connection = connection or self.connect()
        try:
            for piece in pieces:
                connection.sendall(piece)
                time.sleep(pause)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = connection.recv(4096)
                assert chunk, answer
                answer += chunk
            head, body = answer.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            while len(body) < length and not pieces[0].startswith(b"HEAD "):
                chunk = connection.recv(4096)
                assert chunk, answer
                body += chunk
            return head + b"\r\n\r\n" + body
        finally:
            if own:
                connection.close()

    def stop(self) -> str:
        """SIGTERM; the log."""
        stop_process(self.process)
        return self.log.read_text()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_health_is_answered_while_every_thread_is_busy(tmp_path, tls):
    """Both threads busy and a queue behind them: /health answers at once, on fresh and kept-alive connections."""
    server = _Busy(tmp_path, tls)
    try:
        slow = [
            threading.Thread(
                target=server.ask, args=(b"GET /auth/slow?3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",)
            )
            for _ in range(4)
        ]
        for thread in slow:
            thread.start()
        time.sleep(0.5)
        latencies = []
        for request in (b"GET /auth/health HTTP/1.1\r\nHost: t\r\n\r\n", b"HEAD /auth/health?x=1 HTTP/1.0\r\n\r\n"):
            started = time.monotonic()
            answer = server.ask(request)
            latencies.append(time.monotonic() - started)
            assert answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200"), answer
        # Kept alive: the next request on the connection is read on the event loop too.
        with server.connect() as connection:
            for _ in range(3):
                started = time.monotonic()
                answer = server.ask(b"GET /auth/health HTTP/1.1\r\nHost: t\r\n\r\n", connection=connection)
                latencies.append(time.monotonic() - started)
                assert answer.endswith(b"GET /auth/health "), answer
        assert max(latencies) < 0.5, latencies
        # Anything else waits for a request thread, as before: it is not a way around the pool.
        started = time.monotonic()
        assert server.ask(b"GET /auth/other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").endswith(
            b"GET /auth/other "
        )
        assert time.monotonic() - started > 1.0
        for thread in slow:
            thread.join()
    finally:
        log = server.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_requests_read_on_the_event_loop_reach_the_app_whole(tmp_path, tls):
    """Heads sent in pieces, a body after the head, a /health with a body, a path that only starts like it."""
    server = _Busy(tmp_path, tls)
    try:
        # A probe's head in pieces, slower than one read: still one request.
        answer = server.ask(b"GET /auth/hea", b"lth HTTP/1.1\r\nHost:", b" t\r\nConnection: close\r\n\r\n", pause=0.2)
        assert answer.endswith(b"GET /auth/health "), answer
        # A head that stalls past HEAD_WAIT goes to the pool, whose parser waits for the rest.
        answer = server.ask(b"GET /auth/health HTTP/1.1\r\nHost: t\r\n", b"Connection: close\r\n\r\n", pause=2.5)
        assert answer.endswith(b"GET /auth/health "), answer
        body = b"x" * 20000  # more than the event loop reads
        answer = server.ask(b"POST /auth/data HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n" + body)
        assert answer.endswith(b"POST /auth/data " + body), answer[-100:]
        answer = server.ask(b"POST /auth/health HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        assert answer.endswith(b"POST /auth/health hi"), answer
        answer = server.ask(b"GET /auth/healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert answer.endswith(b"GET /auth/healthz "), answer
        answer = server.ask(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")  # outside URL_PREFIX: the app's to answer
        assert answer.endswith(b"GET /health "), answer
        # A connection that closes before a request, or (TLS) a client that speaks plain HTTP to it.
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"GET /auth/health HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                raw.recv(4096)  # a plain answer, or (TLS) the connection closed
            except ConnectionResetError:
                assert tls
        assert server.ask(b"GET /auth/health HTTP/1.1\r\nHost: t\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        log = server.stop()
    assert "Traceback" not in log, log[-3000:]


def test_a_renewed_certificate_is_served_from_the_next_connection(tmp_path):
    """The worker keeps its TLS context between connections, and makes it again when the files change."""
    server = _Busy(tmp_path, tls=True)
    try:
        with server.connect() as connection:
            first = connection.getpeercert(binary_form=True)
        renewed = tmp_path / "renewed"
        renewed.mkdir()
        new_cert, new_key = _certificate(renewed)
        # As a Secret's files are replaced: new files renamed over the old ones.
        os.replace(new_key, tmp_path / "key.pem")
        os.replace(new_cert, tmp_path / "cert.pem")
        server.context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        with server.connect() as connection:
            assert connection.getpeercert(binary_form=True) != first
        assert server.ask(b"GET /auth/health HTTP/1.1\r\nHost: t\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        log = server.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /auth/\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_request"),
        (b"GET /auth/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer a\x01b\r\n\r\n", 400, "bad_request"),
        (b"GET /auth/x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
    ],
    ids=["request-line", "header-value", "header-size"],
)
def test_gunicorns_own_refusals_are_problem_documents_with_the_envelope(tmp_path, request_bytes, status, code):
    server = _Busy(tmp_path, tls=False)
    try:
        answer = server.ask(request_bytes)
    finally:
        log = server.stop()
    head, body = answer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    assert lines[0].startswith(f"HTTP/1.1 {status} ")
    assert headers["content-type"] == "application/problem+json; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY" and len(headers["x-request-id"]) == 32
    problem = json.loads(body)
    assert problem["status"] == status and problem["code"] == code and problem["success"] is False
    assert b"\xff" not in body and b"aaaa" not in body  # the request is never echoed
    assert "Invalid request from ip=127.0.0.1" in log  # gunicorn still logs what it refused

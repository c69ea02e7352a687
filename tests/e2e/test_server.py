"""End to end: the real server (gunicorn with TLS, production settings) walked over HTTPS."""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.databases import BACKENDS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """HTTPS calls to the running server, trusting only its own certificate."""

    def __init__(self, base: str, cafile: Path) -> None:
        """Pin the generated certificate as the only trust anchor."""
        self.base = base
        self.context = ssl.create_default_context(cafile=str(cafile))

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        """Return (status, headers, parsed JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                return response.status, response.headers, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.headers, json.loads(error.read() or b"null")


@pytest.fixture(params=["postgresql", "sqlite"])
def server(request, tmp_path):
    """Migrate a fresh database with `flask db upgrade`, then serve it with gunicorn over TLS."""
    name = request.param
    problem = request.config.backend_problems.get(name)
    if problem is not None:
        pytest.skip(f"{name} unreachable: {problem}")
    backend = BACKENDS[name]
    url = backend.create(str(tmp_path))
    env = {
        **os.environ,
        "APP_ENV": "production",
        "DATABASE_URL": url,
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "FLASK_APP": "wsgi",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "2",
    }
    flask = [str(BIN / "flask")]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    certs = tmp_path / "certs"
    subprocess.run([*flask, "dev-cert", "--out", str(certs)], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--config", "deploy/gunicorn.conf.py",
            "--bind", f"127.0.0.1:{port}",
            "--certfile", str(certs / "cert.pem"),
            "--keyfile", str(certs / "key.pem"),
            "wsgi:app",
        ],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Server(f"https://localhost:{port}", certs / "cert.pem")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if server.call("GET", "/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, ssl.SSLError):
                pass
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        backend.drop(url)


def test_full_flow_over_https(server):
    status, headers, _ = server.call("GET", "/ready")
    assert status == 200
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")

    status, _, signup = server.call(
        "POST", "/signup", {"email": "e2e@example.com", "password": "correct horse battery staple", "name": "E2E"}
    )
    assert status == 201, signup
    status, headers, login = server.call(
        "POST", "/login", {"email": "E2E@example.com", "password": "correct horse battery staple"}
    )
    assert status == 200 and headers["Cache-Control"] == "no-store"

    status, _, check = server.call("POST", "/checkToken", {"token": login["access_token"]})
    assert status == 200 and check["valid"] is True and check["user_id"] == signup["user_id"]
    status, headers, _ = server.call("GET", "/validate", token=login["access_token"])
    assert status == 200 and headers["X-User-Email"] == "e2e@example.com"

    status, _, refreshed = server.call("POST", "/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 200
    status, _, reused = server.call("POST", "/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 401 and reused["code"] == "token_reused"

    status, _, out = server.call("POST", "/logout", token=signup["access_token"])
    assert status == 200 and out["success"] is True
    status, _, check = server.call("POST", "/checkToken", {"token": signup["access_token"]})
    assert check == {"success": True, "valid": False, "reason": "revoked"}

    status, headers, missing = server.call("GET", "/nope")
    assert status == 404 and headers["Content-Type"] == "application/problem+json"

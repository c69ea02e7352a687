"""Start the real service (gunicorn, deploy config) on a fresh database, for end-to-end tests."""

from __future__ import annotations

import contextlib
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

from tests.databases import BACKENDS, TEST_REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """HTTP(S) calls to a running server; over TLS it trusts only the server's own certificate."""

    def __init__(self, base: str, cafile: Path | None = None) -> None:
        """Pin the generated certificate as the only trust anchor."""
        self.base = base
        self.context = ssl.create_default_context(cafile=str(cafile)) if cafile else None

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        """Return (status, headers, parsed JSON body); a new connection each call."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                return response.status, response.headers, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.headers, json.loads(error.read() or b"null")


@contextlib.contextmanager
def running_server(
    tmp_path: Path,
    backend_name: str,
    *,
    tls: bool = True,
    workers: int = 2,
    extra_args: tuple[str, ...] = (),
    database_url: str | None = None,
    port: int | None = None,
    **env_overrides,
):
    """Migrate a fresh database with `flask db upgrade` and serve it with gunicorn; yield a Server.

    With `database_url`, serve that database instead (a second instance of another server's),
    and leave it for its owner to drop.
    """
    backend = BACKENDS[backend_name]
    url = database_url or backend.create(str(tmp_path))
    env = {
        **os.environ,
        "APP_ENV": "production",
        "DATABASE_URL": url,
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "FLASK_APP": "wsgi",
        "GUNICORN_WORKERS": str(workers),
        # Production with two workers shares its per-IP limits through Redis (config.check_serving).
        "REDIS_URL": TEST_REDIS_URL,
        "RATELIMIT_KEY_PREFIX": f"t{secrets.token_hex(5)}",
        "GUNICORN_THREADS": "2",
        "PYTHONUNBUFFERED": "1",
        **env_overrides,
    }
    flask = str(BIN / "flask")
    subprocess.run([flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = port or free_port()
    command = [
        str(BIN / "gunicorn"), "--config", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", *extra_args
    ]  # fmt: skip
    cafile = None
    if tls:
        certs = tmp_path / "certs"
        subprocess.run([flask, "dev-cert", "--out", str(certs)], cwd=ROOT, env=env, check=True, capture_output=True)
        command += ["--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem")]
        cafile = certs / "cert.pem"
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([*command, "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = Server(f"{'https' if tls else 'http'}://localhost:{port}", cafile)
        server.log_path = log_path
        server.database_url = url
        server.cafile = cafile
        server.jwt_secret = env["JWT_SECRET_KEY"]
        server.ratelimit_prefix = env["RATELIMIT_KEY_PREFIX"]  # a new one per server unless given
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if server.call("GET", "/health")[0] == 200:
                        break
                except (urllib.error.URLError, ConnectionError, ssl.SSLError):
                    pass
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=30)
            if database_url is None:
                backend.drop(url)

"""The API gateway, for real: nginx (Debian's package) running deploy/nginx/gateway.conf in front of
the auth service (the entrypoint, HTTPS with a given certificate, URL_PREFIX=/auth) and of a tiny
upstream that echoes the identity headers it receives. Everything listens on loopback ports.

The gateway file is used as it is, only its host names, ports and certificate paths swapped, so
the auth_request wiring tested here is the one operators copy.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    GATEWAY_PASSWORD as PASSWORD,
)
from tests.deploy.conftest import (
    ROOT,
    answers,
    call,
    debian_binary,
    flask,
    free_port,
    gw,
    require_or_skip,
    service_env,
    signup,
    trusting,
    wait_until,
)

pytestmark = pytest.mark.slow

GATEWAY_CONF = ROOT / "deploy" / "nginx" / "gateway.conf"

ECHO_UPSTREAM = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAMES = ("X-User-Id", "X-User-Email", "X-User-Roles", "Authorization", "X-Forwarded-For", "X-Forwarded-Proto")


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = {name: self.headers.get_all(name) for name in NAMES}
        data = json.dumps({"method": self.command, "path": self.path, "body_length": len(body), "headers": seen})
        with open(sys.argv[2], "a") as log:
            log.write(f"{self.command} {self.path}\\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    """nginx, installed by this set-up when missing; a skip locally (a failure under CI) if impossible."""
    binary = debian_binary("nginx", "/usr/sbin/nginx")
    modules = subprocess.run([binary, "-V"], capture_output=True, text=True).stderr
    if "http_auth_request_module" not in modules:
        require_or_skip(f"{binary} was built without the auth_request module")
    return binary


def render_gateway(ports: dict[str, int], cert: Path, key: Path) -> str:
    """deploy/nginx/gateway.conf with loopback ports and the test certificate, nothing else changed."""
    text = GATEWAY_CONF.read_text()
    swaps = {
        "server auth:8443;": f"server 127.0.0.1:{ports['auth']};",
        "server orders:8080;": f"server 127.0.0.1:{ports['orders']};",
        "listen 80;": f"listen 127.0.0.1:{ports['http']};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{ports['https']} ssl http2;",
        "/etc/nginx/tls/api.example.com.crt": str(cert),
        "/etc/nginx/tls/api.example.com.key": str(key),
        "/etc/nginx/tls/auth-ca.crt": str(cert),
        # The test certificate is issued to localhost (and 127.0.0.1), not to the service name.
        "proxy_ssl_name auth;": "proxy_ssl_name localhost;",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"deploy/nginx/gateway.conf no longer has exactly one {old!r}"
        text = text.replace(old, new)
    return text


def nginx_main_conf(folder: Path) -> str:
    """A main nginx.conf whose every path (pid, logs, temp) is in `folder`, including the gateway."""
    return f"""
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/gateway.conf;
}}
"""


@pytest.fixture(scope="module")
def gateway(nginx_binary, databases, entrypoints, module_workdir):
    """nginx on loopback in front of the auth service and the echo upstream; yields what tests need."""
    folder = module_workdir
    folder.chmod(0o755)  # nginx workers run as an unprivileged user and use the temp folders in it
    ports = {name: free_port() for name in ("auth", "orders", "http", "https")}
    env = service_env(
        databases.url(),
        URL_PREFIX="/auth",
        GUNICORN_BIND=f"127.0.0.1:{ports['auth']}",
        TRUSTED_PROXIES="127.0.0.1",
        METRICS_PUBLIC="true",  # the service would answer /metrics: the gateway must be what hides it
    )
    certs = folder / "certs"
    made = flask(env, "dev-cert", "--out", str(certs))
    assert made.returncode == 0, made.stderr
    cert, key = certs / "cert.pem", certs / "key.pem"
    auth = entrypoints({**env, "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}, folder)
    auth.wait_for(f"https://127.0.0.1:{ports['auth']}/auth/health", context=trusting(cert))

    (folder / "echo.py").write_text(ECHO_UPSTREAM)
    upstream_log = folder / "upstream.log"
    upstream_log.touch()
    upstream = subprocess.Popen([sys.executable, str(folder / "echo.py"), str(ports["orders"]), str(upstream_log)])

    (folder / "gateway.conf").write_text(render_gateway(ports, cert, key))
    (folder / "nginx.conf").write_text(nginx_main_conf(folder))
    nginx_args = [nginx_binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")]
    checked = subprocess.run([*nginx_args, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    nginx_out = open(folder / "nginx.out", "wb")  # noqa: SIM115 - closed below
    nginx = subprocess.Popen(nginx_args, stdout=nginx_out, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{ports['https']}"
    context = trusting(cert)
    try:
        wait_until(answers(f"{base}/auth/health", context), 30, "the gateway to answer")
        wait_until(lambda: upstream.poll() is None and "orders" in ports, 5, "the upstream")
        yield {
            "base": base,
            "context": context,
            "ports": ports,
            "auth": auth,
            "upstream_log": upstream_log,
            "folder": folder,
        }
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=15)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(timeout=10)
        nginx_out.close()
        upstream.terminate()
        upstream.wait(timeout=15)


def test_no_token_is_401_at_the_gateway_and_never_reaches_the_service(gateway):
    before = gateway["upstream_log"].read_text()
    response = gw(gateway, "/api/orders/42")
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "missing_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    bad = gw(gateway, "/api/orders/42", token="not-a-jwt")
    assert bad.status == 401 and bad.json()["code"] == "invalid_token"
    assert gateway["upstream_log"].read_text() == before


def test_signup_and_login_are_routed_through_the_gateway(gateway):
    created = signup(gateway, "gate-login@example.com")
    assert created["user"]["email"] == "gate-login@example.com"
    login = gw(gateway, "/auth/login", "POST", body={"email": "gate-login@example.com", "password": PASSWORD})
    assert login.status == 200, login.body
    assert login.headers["Cache-Control"] == "no-store"
    me = gw(gateway, "/auth/me", token=login.json()["access_token"])
    assert me.status == 200 and me.json()["user"]["id"] == created["user_id"]


def test_a_valid_token_reaches_the_upstream_with_the_callers_identity(gateway):
    created = signup(gateway, "gate-user@example.com")
    forged = {"X-User-Id": "someone-else", "X-User-Roles": "admin", "x-user-email": "boss@example.com"}
    response = gw(gateway, "/api/orders/42?x=1", token=created["access_token"], headers=forged)
    assert response.status == 200, response.body
    seen = response.json()
    assert seen["path"] == "/api/orders/42?x=1"
    # Exactly the auth service's answer: the client's own X-User-* headers are gone.
    assert seen["headers"]["X-User-Id"] == [created["user_id"]]
    assert seen["headers"]["X-User-Email"] == ["gate-user@example.com"]
    assert seen["headers"]["X-User-Roles"] == ["user"]
    assert seen["headers"]["X-Forwarded-Proto"] == ["https"]


def test_a_request_body_goes_to_the_upstream_but_not_to_validate(gateway):
    created = signup(gateway, "gate-body@example.com")
    payload = {"item": "x" * 4000}
    # Were the body announced to /validate and not sent, this would hang until the timeout.
    response = gw(gateway, "/api/orders/", "POST", body=payload, token=created["access_token"])
    assert response.status == 200, response.body
    assert response.json()["method"] == "POST"
    assert response.json()["body_length"] > 4000
    # The auth service saw only GETs on /validate, never the client's POST.
    validate_lines = [
        json.loads(line)
        for line in gateway["auth"].log.splitlines()
        if line.startswith("{") and '"/auth/validate"' in line
    ]
    assert {line["method"] for line in validate_lines} == {"GET"}
    assert any(line["status"] == 200 for line in validate_lines)


def test_after_logout_the_gateway_answers_401(gateway):
    created = signup(gateway, "gate-logout@example.com")
    token = created["access_token"]
    assert gw(gateway, "/api/orders/1", token=token).status == 200
    out = gw(gateway, "/auth/logout", "POST", token=token)
    assert out.status == 200, out.body
    after = gw(gateway, "/api/orders/1", token=token)
    assert after.status == 401 and after.json()["code"] == "invalid_token"


def test_client_supplied_identity_headers_never_reach_the_auth_service_routes(gateway):
    created = signup(gateway, "gate-noforge@example.com")
    response = gw(gateway, "/auth/me", token=created["access_token"], headers={"X-User-Id": "forged"})
    assert response.status == 200 and response.json()["user"]["id"] == created["user_id"]


def test_metrics_are_not_published_through_the_gateway(gateway):
    response = gw(gateway, "/auth/metrics")
    assert response.status == 404 and response.json()["code"] == "not_found"
    assert b"auth_http_requests_total" not in response.body


def test_plain_http_is_redirected_to_https(gateway):
    response = call(f"http://127.0.0.1:{gateway['ports']['http']}/auth/health")
    assert response.status == 308
    assert response.headers["Location"].startswith("https://")


def test_sessions_record_the_client_address_behind_the_gateway(gateway):
    # The gateway replaces the client's X-Forwarded-For; the service trusts the gateway (TRUSTED_PROXIES).
    login_body = {"email": "gate-ip@example.com", "password": PASSWORD, "name": "Ip"}
    forged = {"X-Forwarded-For": "198.51.100.7"}
    created = gw(gateway, "/auth/signup", "POST", body=login_body, source="127.0.0.5", headers=forged)
    assert created.status == 201, created.body
    sessions = gw(gateway, "/auth/me/sessions", token=created.json()["access_token"]).json()["items"]
    assert [item["ip"] for item in sessions] == ["127.0.0.5"]


def test_when_the_auth_service_is_down_the_gateway_fails_closed(gateway):
    # Last in this module: it stops the auth service.
    created = signup(gateway, "gate-down@example.com")
    assert gateway["auth"].stop() == 0
    response = gw(gateway, "/api/orders/1", token=created["access_token"])
    assert response.status == 503
    assert response.json()["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == "5"

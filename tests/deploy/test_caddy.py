"""The second real gateway: Caddy (Debian's package) running deploy/caddy/Caddyfile with forward_auth in
front of the auth service (the entrypoint, HTTPS with a given certificate, URL_PREFIX=/auth) and of a
tiny upstream that echoes the identity headers it receives. Everything listens on loopback ports.

The Caddyfile is used as it is, only its host names, ports and certificate paths swapped and a
global block for the test's ports added, so the forward_auth wiring tested here is the one
operators copy. Caddy is installed by this set-up as nginx is for test_gateway.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    GATEWAY_PASSWORD as PASSWORD,
)
from tests.deploy.conftest import (
    ROOT,
    Response,
    answers,
    call,
    debian_binary,
    flask,
    free_port,
    gw,
    service_env,
    signup,
    trusting,
    wait_until,
)
from tests.deploy.test_gateway import ECHO_UPSTREAM

pytestmark = pytest.mark.slow

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"

IDENTITY = '"X-User-Id", "X-User-Email", "X-User-Roles",'
assert IDENTITY in ECHO_UPSTREAM
ECHO = ECHO_UPSTREAM.replace(IDENTITY, IDENTITY + ' "X-User-Amr", "X-Forwarded-Host",')


@pytest.fixture(scope="module")
def caddy_binary() -> str:
    """caddy, installed by this set-up when missing; a skip locally (a failure under CI) if impossible."""
    return debian_binary("caddy", "/usr/bin/caddy")


def render_caddyfile(ports: dict[str, int], cert: Path, key: Path) -> str:
    """deploy/caddy/Caddyfile on loopback with the test certificate, behind a global block of the test's."""
    text = CADDYFILE.read_text()
    swaps = {
        "api.example.com {": "127.0.0.1 {\n\tbind 127.0.0.1",
        "/etc/caddy/tls/api.example.com.crt": str(cert),
        "/etc/caddy/tls/api.example.com.key": str(key),
        "reverse_proxy orders:8080": f"reverse_proxy 127.0.0.1:{ports['orders']}",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"deploy/caddy/Caddyfile no longer has exactly one {old!r}"
        text = text.replace(old, new)
    twice = {
        "https://auth:8443": f"https://127.0.0.1:{ports['auth']}",
        "/etc/caddy/tls/auth-ca.crt": str(cert),
        # The test certificate is issued to localhost (and 127.0.0.1), not to the service name.
        "tls_server_name auth": "tls_server_name localhost",
    }
    for old, new in twice.items():
        assert text.count(old) == 2, f"deploy/caddy/Caddyfile no longer has {old!r} in both proxies"
        text = text.replace(old, new)
    head = f"{{\n\tadmin off\n\thttp_port {ports['http']}\n\thttps_port {ports['https']}\n\tskip_install_trust\n}}\n"
    return head + text


@pytest.fixture(scope="module")
def gateway(caddy_binary, databases, entrypoints, module_workdir):
    """Caddy on loopback in front of the auth service and the echo upstream; yields what tests need."""
    folder = module_workdir
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

    (folder / "echo.py").write_text(ECHO)
    upstream_log = folder / "upstream.log"
    upstream_log.touch()
    upstream = subprocess.Popen([sys.executable, str(folder / "echo.py"), str(ports["orders"]), str(upstream_log)])

    config = folder / "Caddyfile"
    config.write_text(render_caddyfile(ports, cert, key))
    caddy_env = {**os.environ, "HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"),
                 "XDG_CONFIG_HOME": str(folder / "config")}  # fmt: skip
    checked = subprocess.run([caddy_binary, "validate", "--config", str(config), "--adapter", "caddyfile"],
                             capture_output=True, text=True, timeout=60, env=caddy_env)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    caddy_out = open(folder / "caddy.out", "wb")  # noqa: SIM115 - closed below
    caddy = subprocess.Popen([caddy_binary, "run", "--config", str(config), "--adapter", "caddyfile"],
                             stdout=caddy_out, stderr=subprocess.STDOUT, env=caddy_env)  # fmt: skip
    base = f"https://127.0.0.1:{ports['https']}"
    context = trusting(cert)
    try:
        wait_until(answers(f"{base}/auth/health", context), 30, "the gateway to answer")
        yield {"base": base, "context": context, "ports": ports, "auth": auth, "env": env,
               "upstream_log": upstream_log, "folder": folder}  # fmt: skip
    finally:
        caddy.terminate()
        try:
            caddy.wait(timeout=15)
        except subprocess.TimeoutExpired:
            caddy.kill()
            caddy.wait(timeout=10)
        caddy_out.close()
        upstream.terminate()
        upstream.wait(timeout=15)


def test_no_token_is_401_at_the_gateway_and_never_reaches_the_service(gateway):
    before = gateway["upstream_log"].read_text()
    response = gw(gateway, "/api/orders/42")
    assert response.status == 401
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == "missing_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    bad = gw(gateway, "/api/orders/42", token="not-a-jwt")
    assert bad.status == 401 and bad.json()["code"] == "invalid_token"
    assert gateway["upstream_log"].read_text() == before


def test_a_valid_token_reaches_the_upstream_with_the_callers_identity(gateway):
    created = signup(gateway, "caddy-user@example.com")
    forged = {"X-User-Id": "someone-else", "X-User-Roles": "admin", "x-user-email": "boss@example.com",
              "X-User-Amr": "pwd,otp"}  # fmt: skip
    response = gw(gateway, "/api/orders/42?x=1", token=created["access_token"], headers=forged)
    assert response.status == 200, response.body
    seen = response.json()
    assert seen["path"] == "/api/orders/42?x=1"
    # Exactly the auth service's answer: the client's own X-User-* headers are gone.
    assert seen["headers"]["X-User-Id"] == [created["user_id"]]
    assert seen["headers"]["X-User-Email"] == ["caddy-user@example.com"]
    assert seen["headers"]["X-User-Roles"] == ["user"]
    assert seen["headers"]["X-User-Amr"] == ["pwd"]
    assert seen["headers"]["X-Forwarded-Proto"] == ["https"]


def test_a_request_body_goes_to_the_upstream_but_not_to_validate(gateway):
    created = signup(gateway, "caddy-body@example.com")
    response = gw(gateway, "/api/orders/", "POST", body={"item": "x" * 4000}, token=created["access_token"])
    assert response.status == 200, response.body
    assert response.json()["method"] == "POST" and response.json()["body_length"] > 4000
    validate_lines = [
        json.loads(line)
        for line in gateway["auth"].log.splitlines()
        if line.startswith("{") and '"/auth/validate"' in line
    ]
    assert {line["method"] for line in validate_lines} == {"GET"}
    assert any(line["status"] == 200 for line in validate_lines)


def test_after_logout_the_gateway_answers_401(gateway):
    created = signup(gateway, "caddy-logout@example.com")
    token = created["access_token"]
    assert gw(gateway, "/api/orders/1", token=token).status == 200
    assert gw(gateway, "/auth/logout", "POST", token=token).status == 200
    after = gw(gateway, "/api/orders/1", token=token)
    assert after.status == 401 and after.json()["code"] == "token_revoked"


def test_client_supplied_identity_headers_never_reach_the_auth_service_routes(gateway):
    created = signup(gateway, "caddy-noforge@example.com")
    response = gw(gateway, "/auth/me", token=created["access_token"], headers={"X-User-Id": "forged"})
    assert response.status == 200 and response.json()["user"]["id"] == created["user_id"]


def test_metrics_are_not_published_through_the_gateway(gateway):
    response = gw(gateway, "/auth/metrics")
    assert response.status == 404 and response.json()["code"] == "not_found"
    assert b"auth_http_requests_total" not in response.body


def test_plain_http_is_redirected_to_https(gateway):
    response = call(f"http://127.0.0.1:{gateway['ports']['http']}/auth/health")
    assert response.status in (301, 308)
    assert response.headers["Location"].startswith("https://")


def test_sessions_record_the_client_address_behind_the_gateway(gateway):
    body = {"email": "caddy-ip@example.com", "password": PASSWORD, "name": "Ip"}
    created = gw(gateway, "/auth/signup", "POST", body=body, source="127.0.0.5",
                 headers={"X-Forwarded-For": "198.51.100.7"})  # fmt: skip
    assert created.status == 201, created.body
    sessions = gw(gateway, "/auth/me/sessions", token=created.json()["access_token"]).json()["items"]
    assert [item["ip"] for item in sessions] == ["127.0.0.5"]


def test_service_clients_and_the_metadata_through_the_gateway(gateway):
    made = flask(gateway["env"], "clients", "create", "--name", "caddy-orders")
    assert made.returncode == 0, made.stderr
    client_id = re.search(r"client_id: (\S+)", made.stdout).group(1)
    secret = re.search(r"client_secret: (\S+)", made.stdout).group(1)
    # Behind the gateway (TRUSTED_PROXIES), the URLs are the gateway's: https, its host and port, /auth.
    metadata = gw(gateway, "/auth/.well-known/oauth-authorization-server").json()
    assert metadata["token_endpoint"] == f"{gateway['base']}/auth/oauth/token"
    assert metadata["introspection_endpoint"] == f"{gateway['base']}/auth/introspect"
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode(),
             "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    token = call_form(gateway, "/auth/oauth/token", "grant_type=client_credentials", basic)
    assert token.status == 200, token.body
    access = token.json()["access_token"]
    active = call_form(gateway, "/auth/introspect", f"token={access}", basic)
    assert active.status == 200 and active.json()["client_id"] == client_id
    # A client token is no user: /validate refuses it, so the gateway does too.
    refused = gw(gateway, "/api/orders/1", token=access)
    assert refused.status == 401 and refused.json()["code"] == "invalid_token"


def call_form(gateway, path: str, body: str, headers: dict):
    """A form POST through the gateway."""
    conn = http.client.HTTPSConnection("127.0.0.1", gateway["ports"]["https"], timeout=10, context=gateway["context"])
    try:
        conn.request("POST", path, body=body.encode(), headers=headers)
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        conn.close()


def test_when_the_auth_service_is_down_the_gateway_fails_closed(gateway):
    # Last in this module: it stops the auth service.
    created = signup(gateway, "caddy-down@example.com")
    assert gateway["auth"].stop() == 0
    before = gateway["upstream_log"].read_text()
    response = gw(gateway, "/api/orders/1", token=created["access_token"])
    assert response.status == 503
    assert response.json()["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == "5"
    assert gateway["upstream_log"].read_text() == before

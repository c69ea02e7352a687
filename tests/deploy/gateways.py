"""What the two real gateways (test_gateway.py: nginx, test_caddy.py: Caddy) share: the auth service
and the echo upstream they sit in front of, and the tests both must pass (GatewayContract).

Each test module starts its gateway with `auth_behind_a_gateway` in a module-scoped `gateway`
fixture and runs the contract with `class TestX(GatewayContract)`; the class attributes say where
the two gateways differ.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.deploy.conftest import (
    GATEWAY_PASSWORD,
    Databases,
    answers,
    call,
    flask,
    free_port,
    gw,
    service_env,
    signup,
    stop_process,
    trusting,
    wait_until,
)

# The upstream behind the gateway: answers every request with what it received (the identity
# headers above all), and logs each request line to argv[2] (what reached it, what did not).
ECHO_UPSTREAM = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAMES = ("X-User-Id", "X-User-Email", "X-User-Roles", "X-User-Amr", "Authorization", "X-Forwarded-For",
         "X-Forwarded-Proto", "X-Forwarded-Host")


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


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def auth_behind_a_gateway(databases: Databases, entrypoints, folder: Path) -> Iterator[dict[str, Any]]:
    """The auth service (the entrypoint, HTTPS with a dev certificate, URL_PREFIX=/auth, trusting the
    gateway on 127.0.0.1) and the echo upstream, on free loopback ports; the gateway's to start.

    Yields ports (auth, orders: the upstream, http and https: the gateway's), env, cert, key, auth
    (the Entrypoint), upstream_log and folder; the upstream is stopped after.
    """
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
    try:
        wait_until(lambda: upstream.poll() is None and listening(ports["orders"]), 10, "the echo upstream")
        yield {"ports": ports, "env": env, "cert": cert, "key": key, "auth": auth, "upstream_log": upstream_log,
               "folder": folder}  # fmt: skip
    finally:
        stop_process(upstream, timeout=15)


@contextlib.contextmanager
def gateway_serving(service: dict[str, Any], process: subprocess.Popen, stop: int = signal.SIGTERM):
    """`process`, a gateway just started in front of `service`: once it answers over HTTPS, the dict the
    tests take (`service` with base and context); stopped with `stop` after."""
    base = f"https://127.0.0.1:{service['ports']['https']}"
    context = trusting(service["cert"])
    try:
        wait_until(answers(f"{base}/auth/health", context), 30, "the gateway to answer")
        yield {**service, "base": base, "context": context}
    finally:
        stop_process(process, stop, timeout=15)


class GatewayContract:
    """The tests every gateway in front of the service passes; the module's `gateway` fixture serves them.

    `gateway` is the dict of auth_behind_a_gateway with base (the gateway's https URL) and context
    (an SSL context trusting the test certificate) added.
    """

    # Who signs up here: "NAME-login@example.com", … (accounts of one module's service).
    NAME = "gate"
    # The identity headers the gateway passes on from /validate's answer, with what a new user's are.
    IDENTITY = {"X-User-Id": None, "X-User-Email": None, "X-User-Roles": ["user"]}  # None: the user's own
    # The code of a revoked token at the gateway: the service's own answer, or the gateway's 401 body.
    REVOKED_CODE = "token_revoked"
    # What plain HTTP is redirected with.
    REDIRECT_STATUSES: tuple[int, ...] = (308,)

    def test_no_token_is_401_at_the_gateway_and_never_reaches_the_service(self, gateway):
        before = gateway["upstream_log"].read_text()
        response = gw(gateway, "/api/orders/42")
        assert response.status == 401
        assert response.headers["Content-Type"].split(";")[0] == "application/problem+json"
        assert response.json()["code"] == "missing_token"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        bad = gw(gateway, "/api/orders/42", token="not-a-jwt")
        assert bad.status == 401 and bad.json()["code"] == "invalid_token"
        assert gateway["upstream_log"].read_text() == before

    def test_signup_and_login_are_routed_through_the_gateway(self, gateway):
        email = f"{self.NAME}-login@example.com"
        created = signup(gateway, email)
        assert created["user"]["email"] == email
        login = gw(gateway, "/auth/login", "POST", body={"email": email, "password": GATEWAY_PASSWORD})
        assert login.status == 200, login.body
        assert login.headers["Cache-Control"] == "no-store"
        me = gw(gateway, "/auth/me", token=login.json()["access_token"])
        assert me.status == 200 and me.json()["user"]["id"] == created["user_id"]

    def test_a_valid_token_reaches_the_upstream_with_the_callers_identity(self, gateway):
        email = f"{self.NAME}-user@example.com"
        created = signup(gateway, email)
        forged = {"X-User-Id": "someone-else", "X-User-Roles": "admin", "x-user-email": "boss@example.com",
                  "X-User-Amr": "pwd,otp"}  # fmt: skip
        forged = {name: value for name, value in forged.items() if name.title() in self.IDENTITY}
        response = gw(gateway, "/api/orders/42?x=1", token=created["access_token"], headers=forged)
        assert response.status == 200, response.body
        seen = response.json()
        assert seen["path"] == "/api/orders/42?x=1"
        # Exactly the auth service's answer: the client's own X-User-* headers are gone.
        own = {"X-User-Id": [created["user_id"]], "X-User-Email": [email]}
        for name, value in self.IDENTITY.items():
            assert seen["headers"][name] == (value or own[name]), name
        assert seen["headers"]["X-Forwarded-Proto"] == ["https"]

    def test_a_request_body_goes_to_the_upstream_but_not_to_validate(self, gateway):
        created = signup(gateway, f"{self.NAME}-body@example.com")
        # Were the body announced to /validate and not sent, this would hang until the timeout.
        response = gw(gateway, "/api/orders/", "POST", body={"item": "x" * 4000}, token=created["access_token"])
        assert response.status == 200, response.body
        assert response.json()["method"] == "POST" and response.json()["body_length"] > 4000
        # The auth service saw only GETs on /validate, never the client's POST.
        validate_lines = [
            json.loads(line)
            for line in gateway["auth"].log.splitlines()
            if line.startswith("{") and '"/auth/validate"' in line
        ]
        assert {line["method"] for line in validate_lines} == {"GET"}
        assert any(line["status"] == 200 for line in validate_lines)

    def test_after_logout_the_gateway_answers_401(self, gateway):
        token = signup(gateway, f"{self.NAME}-logout@example.com")["access_token"]
        assert gw(gateway, "/api/orders/1", token=token).status == 200
        out = gw(gateway, "/auth/logout", "POST", token=token)
        assert out.status == 200, out.body
        after = gw(gateway, "/api/orders/1", token=token)
        assert after.status == 401 and after.json()["code"] == self.REVOKED_CODE

    def test_client_supplied_identity_headers_never_reach_the_auth_service_routes(self, gateway):
        created = signup(gateway, f"{self.NAME}-noforge@example.com")
        response = gw(gateway, "/auth/me", token=created["access_token"], headers={"X-User-Id": "forged"})
        assert response.status == 200 and response.json()["user"]["id"] == created["user_id"]

    def test_metrics_are_not_published_through_the_gateway(self, gateway):
        response = gw(gateway, "/auth/metrics")
        assert response.status == 404 and response.json()["code"] == "not_found"
        assert b"auth_http_requests_total" not in response.body

    def test_plain_http_is_redirected_to_https(self, gateway):
        response = call(f"http://127.0.0.1:{gateway['ports']['http']}/auth/health")
        assert response.status in self.REDIRECT_STATUSES
        assert response.headers["Location"].startswith("https://")

    def test_sessions_record_the_client_address_behind_the_gateway(self, gateway):
        # The gateway replaces the client's X-Forwarded-For; the service trusts the gateway (TRUSTED_PROXIES).
        body = {"email": f"{self.NAME}-ip@example.com", "password": GATEWAY_PASSWORD, "name": "Ip"}
        forged = {"X-Forwarded-For": "198.51.100.7"}
        created = gw(gateway, "/auth/signup", "POST", body=body, source="127.0.0.5", headers=forged)
        assert created.status == 201, created.body
        sessions = gw(gateway, "/auth/me/sessions", token=created.json()["access_token"]).json()["items"]
        assert [item["ip"] for item in sessions] == ["127.0.0.5"]

    def test_when_the_auth_service_is_down_the_gateway_fails_closed(self, gateway):
        # Collected last (a subclass's own tests come first): it stops the auth service.
        created = signup(gateway, f"{self.NAME}-down@example.com")
        assert gateway["auth"].stop() == 0
        before = gateway["upstream_log"].read_text()
        response = gw(gateway, "/api/orders/1", token=created["access_token"])
        assert response.status == 503
        assert response.json()["code"] == "service_unavailable"
        assert response.headers["Retry-After"] == "5"
        assert gateway["upstream_log"].read_text() == before

"""The second real gateway: Caddy (Debian's package) running deploy/caddy/Caddyfile with forward_auth in
front of the auth service (the entrypoint, HTTPS with a given certificate, URL_PREFIX=/auth) and of a
tiny upstream that echoes the identity headers it receives. Everything listens on loopback ports.

The Caddyfile is used as it is, only its host names, ports and certificate paths swapped and a
global block for the test's ports added, so the forward_auth wiring tested here is the one
operators copy. Caddy is installed by this set-up as nginx is for test_gateway.py; the tests are
GatewayContract's (tests/deploy/gateways.py), which nginx passes too, and the service clients'.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    ROOT,
    Response,
    debian_binary,
    flask,
    gw,
)
from tests.deploy.gateways import GatewayContract, auth_behind_a_gateway, gateway_serving

pytestmark = pytest.mark.slow

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"


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
    with auth_behind_a_gateway(databases, entrypoints, folder) as service:
        config = folder / "Caddyfile"
        config.write_text(render_caddyfile(service["ports"], service["cert"], service["key"]))
        caddy_env = {**os.environ, "HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"),
                     "XDG_CONFIG_HOME": str(folder / "config")}  # fmt: skip
        checked = subprocess.run([caddy_binary, "validate", "--config", str(config), "--adapter", "caddyfile"],
                                 capture_output=True, text=True, timeout=60, env=caddy_env)  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        with open(folder / "caddy.out", "wb") as caddy_out:
            caddy = subprocess.Popen([caddy_binary, "run", "--config", str(config), "--adapter", "caddyfile"],
                                     stdout=caddy_out, stderr=subprocess.STDOUT, env=caddy_env)  # fmt: skip
        with gateway_serving(service, caddy) as gateway:
            yield gateway


def call_form(gateway, path: str, body: str, headers: dict):
    """A form POST through the gateway."""
    conn = http.client.HTTPSConnection("127.0.0.1", gateway["ports"]["https"], timeout=10, context=gateway["context"])
    try:
        conn.request("POST", path, body=body.encode(), headers=headers)
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        conn.close()


class TestServiceClients:
    """Caddy's own: service clients and the metadata behind the gateway (before TestCaddy, which stops the service)."""

    def test_service_clients_and_the_metadata_through_the_gateway(self, gateway):
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


class TestCaddy(GatewayContract):
    """deploy/caddy/Caddyfile."""

    NAME = "caddy"
    # forward_auth copies the four headers of /validate's answer, X-User-Amr too (Caddyfile copy_headers).
    IDENTITY = {"X-User-Id": None, "X-User-Email": None, "X-User-Roles": ["user"], "X-User-Amr": ["pwd"]}
    # Any non-2xx answer of /validate is passed back as it is: the service's own problem document.
    REVOKED_CODE = "token_revoked"
    REDIRECT_STATUSES = (301, 308)

"""The API gateway, for real: nginx (Debian's package) running deploy/nginx/gateway.conf in front of
the auth service (the entrypoint, HTTPS with a given certificate, URL_PREFIX=/auth) and of a tiny
upstream that echoes the identity headers it receives. Everything listens on loopback ports.

The gateway file is used as it is, only its host names, ports and certificate paths swapped, so
the auth_request wiring tested here is the one operators copy. The tests are GatewayContract's
(tests/deploy/gateways.py), which Caddy passes too (test_caddy.py).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, debian_binary, require_or_skip
from tests.deploy.gateways import GatewayContract, auth_behind_a_gateway, gateway_serving

pytestmark = pytest.mark.slow

GATEWAY_CONF = ROOT / "deploy" / "nginx" / "gateway.conf"


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
    with auth_behind_a_gateway(databases, entrypoints, folder) as service:
        (folder / "gateway.conf").write_text(render_gateway(service["ports"], service["cert"], service["key"]))
        (folder / "nginx.conf").write_text(nginx_main_conf(folder))
        nginx_args = [
            nginx_binary,
            "-p",
            str(folder),
            "-c",
            str(folder / "nginx.conf"),
            "-e",
            str(folder / "error.log"),
        ]
        checked = subprocess.run([*nginx_args, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        with open(folder / "nginx.out", "wb") as nginx_out:
            nginx = subprocess.Popen(nginx_args, stdout=nginx_out, stderr=subprocess.STDOUT)
        with gateway_serving(service, nginx, signal.SIGQUIT) as gateway:  # SIGQUIT: nginx's graceful shutdown
            yield gateway


class TestNginx(GatewayContract):
    """deploy/nginx/gateway.conf."""

    NAME = "gate"
    # nginx passes on the four headers gateway.conf sets from /validate's answer, X-User-Amr too.
    IDENTITY = {"X-User-Id": None, "X-User-Email": None, "X-User-Roles": ["user"], "X-User-Amr": ["pwd"]}
    # Every 401 of /validate becomes the gateway's own invalid_token document (gateway.conf @unauthorized).
    REVOKED_CODE = "invalid_token"
    REDIRECT_STATUSES = (308,)

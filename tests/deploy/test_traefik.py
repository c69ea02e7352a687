"""deploy/traefik/dynamic.yml: the ForwardAuth twin of the nginx gateway (Traefik is not run here;
the nginx one is, in test_gateway.py). Checks the wiring an operator relies on."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.conftest import ROOT

IDENTITY = ["X-User-Id", "X-User-Email", "X-User-Roles", "X-User-Amr"]


@pytest.fixture(scope="module")
def http() -> dict:
    """The `http` section of the dynamic configuration."""
    return yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic.yml").read_text())["http"]


def test_forward_auth_asks_validate_with_the_credential_only(http):
    forward = http["middlewares"]["auth-validate"]["forwardAuth"]
    assert forward["address"] == "https://auth:8443/auth/validate"
    assert forward["authRequestHeaders"] == ["Authorization"]
    assert forward["authResponseHeaders"] == IDENTITY
    assert forward.get("forwardBody", False) is False
    assert forward["trustForwardHeader"] is False
    assert forward["tls"]["ca"]


def test_client_identity_headers_are_dropped_before_the_check_on_every_route(http):
    strip = http["middlewares"]["strip-identity"]["headers"]["customRequestHeaders"]
    assert strip == {name: "" for name in IDENTITY}
    assert http["routers"]["orders"]["middlewares"] == ["strip-identity", "auth-validate"]
    assert http["routers"]["auth"]["middlewares"] == ["strip-identity"]
    assert all("tls" in router for router in http["routers"].values())
    assert "!Path(`/auth/metrics`)" in http["routers"]["auth"]["rule"]


def test_the_auth_service_is_reached_over_verified_https(http):
    auth = http["services"]["auth"]["loadBalancer"]
    assert auth["servers"] == [{"url": "https://auth:8443"}]
    transport = http["serversTransports"][auth["serversTransport"]]
    assert transport["rootCAs"] and transport["serverName"] == "auth"
    assert "insecureSkipVerify" not in transport

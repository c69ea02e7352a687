"""X-Forwarded-* are trusted only from TRUSTED_PROXIES."""

from __future__ import annotations

import pytest

import config
from app.proxy import client_address, parse_networks
from tests.helpers import PASSWORD, bearer

NETS = parse_networks(["10.0.0.0/8", "192.168.1.5"])


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # untrusted peer: header ignored
        ("10.1.1.1", "1.2.3.4", "1.2.3.4"),  # trusted proxy: client from the header
        ("10.1.1.1", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # only the hop our proxy added counts
        ("10.1.1.1", "1.2.3.4, 192.168.1.5", "1.2.3.4"),  # chained trusted proxies are skipped
        ("10.1.1.1", "not-an-ip", "10.1.1.1"),
        ("10.1.1.1", None, "10.1.1.1"),
        ("10.1.1.1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_address(peer, header, expected):
    assert client_address(peer, header, NETS) == expected


def test_client_address_without_trusted_proxies_is_the_peer():
    assert client_address("10.1.1.1", "1.2.3.4", []) == "10.1.1.1"


def test_bad_trusted_proxies_refused():
    with pytest.raises(config.ConfigError, match="TRUSTED_PROXIES"):
        config.TestingConfig({"TRUSTED_PROXIES": "10.0.0.0/8, nonsense"})


def _login_ip(app, peer: str, forwarded: str) -> str:
    """Sign up through `app` from `peer` with an X-Forwarded-For header; the session's recorded ip."""
    client = app.test_client()
    environ = {"REMOTE_ADDR": peer}
    headers = {"X-Forwarded-For": forwarded, "X-Forwarded-Proto": "https"}
    body = {"email": f"p{peer.replace('.', '')}@example.com", "password": PASSWORD, "name": "P"}
    signup = client.post("/signup", json=body, environ_base=environ, headers=headers).get_json()
    sessions = client.get("/me/sessions", headers={**headers, **bearer(signup["access_token"])}, environ_base=environ)
    return sessions.get_json()["items"][0]["ip"], sessions.headers.get("Strict-Transport-Security")


def test_forwarded_headers_honoured_only_from_trusted_proxy(make_app):
    app = make_app(TRUSTED_PROXIES="10.0.0.0/8")
    assert _login_ip(app, "10.0.0.7", "198.51.100.1") == ("198.51.100.1", "max-age=31536000; includeSubDomains")
    assert _login_ip(app, "203.0.113.5", "198.51.100.2") == ("203.0.113.5", None)


def test_forwarded_headers_ignored_by_default(make_app):
    app = make_app()
    assert _login_ip(app, "10.0.0.7", "198.51.100.1") == ("10.0.0.7", None)

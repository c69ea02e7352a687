"""Trust X-Forwarded-For/-Proto only from the proxies named in TRUSTED_PROXIES.

Werkzeug's ProxyFix trusts a fixed number of hops from whoever connects; here the peer must be
one of the configured addresses or networks, so a client cannot spoof its address or the
scheme by sending the headers itself (ASVS 4.0 1.14.x / OWASP: never trust client headers).
"""

from __future__ import annotations

import ipaddress

from config import parse_networks

__all__ = ["TrustedProxyMiddleware", "client_address", "parse_networks"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str | None, networks: list[IPNetwork]) -> bool:
    """Whether `address` lies in one of the trusted networks."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, networks: list[IPNetwork]) -> str | None:
    """The client's address: walk X-Forwarded-For from the right while the hop is a trusted proxy."""
    if not networks or not _trusted(peer, networks) or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    address = peer
    while hops:
        address = hops.pop()
        if not _trusted(address, networks):
            break
    if address is None:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return peer


class TrustedProxyMiddleware:
    """WSGI middleware rewriting REMOTE_ADDR and the URL scheme for requests from trusted proxies."""

    def __init__(self, wsgi_app, networks: list[IPNetwork]) -> None:
        """Wrap `wsgi_app`."""
        self.wsgi_app = wsgi_app
        self.networks = networks

    def __call__(self, environ, start_response):
        """Rewrite the environ when the peer is trusted, then call the app."""
        peer = environ.get("REMOTE_ADDR")
        if self.networks and _trusted(peer, self.networks):
            environ["REMOTE_ADDR"] = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"), self.networks)
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.wsgi_app(environ, start_response)

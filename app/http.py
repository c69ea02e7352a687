"""HTTP details shared by the Flask stack and the hot path: security headers and request ids."""

from __future__ import annotations

import random

# ASVS 14.4: every response says how browsers must treat it.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def choose_request_id(given: str | None) -> str:
    """The caller's X-Request-ID when it is sane (printable, at most 128 characters), else a new one."""
    if given and len(given) <= 128 and given.isprintable():
        return given
    # A correlation id, not a secret: the PRNG (reseeded in each forked worker) is enough, and it
    # spares a getrandom() system call on every request of the hot path.
    return f"{random.getrandbits(128):032x}"

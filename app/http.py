"""HTTP details shared by the Flask stack and the hot path: the headers every response carries, request ids, CORS."""

from __future__ import annotations

import random
from collections.abc import Container
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask.sessions import NullSession, SecureCookieSessionInterface, SessionInterface

if TYPE_CHECKING:
    from app.services.verification import VerifiedToken

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
# The admin console's pages (app/console/): styles, scripts and images from the service itself and
# nothing inline (no 'unsafe-inline': an injected <script> or style attribute does not run), forms
# posted only to it, no plugins, no <base>, never framed.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# The console's forms need the Referer of an HTTPS post (Flask-WTF's WTF_CSRF_SSL_STRICT checks it
# is this host); same-origin never sends it to another site.
CONSOLE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "Referrer-Policy": "same-origin"}
CONSOLE_BLUEPRINT = "console"
# `__Host-`: the browser takes it only with Secure, Path=/ and no Domain (RFC 6265bis 4.1.3.2), so
# no sibling host or plain-HTTP page can plant or overwrite it.
CONSOLE_COOKIE = "__Host-admin_session"


def choose_request_id(given: str | None) -> str:
    """The caller's X-Request-ID when it is sane (printable, at most 128 characters), else a new one."""
    if given and len(given) <= 128 and given.isprintable():
        return given
    # A correlation id, not a secret: the PRNG (reseeded in each forked worker) is enough, and it
    # spares a getrandom() system call on every request of the hot path.
    return f"{random.getrandbits(128):032x}"


def envelope_headers(present: Container[str], request_id: str, *, https: bool) -> list[tuple[str, str]]:
    """The headers every response carries, less those the answer already set (its X-Request-ID aside).

    The one list: Flask's after_request hook and the verification fast path both add these.
    """
    headers = [("X-Request-ID", request_id)]
    headers += [(name, value) for name, value in SECURITY_HEADERS.items() if name not in present]
    if "Cache-Control" not in present:  # no caching unless the view allowed it
        headers += NO_STORE.items()
    if https and HSTS[0] not in present:
        headers.append(HSTS)
    return headers


def cors_settings(origins: list[str]) -> dict[str, Any]:
    """Flask-CORS's options: an explicit allow-list, with credentials (the cookie mode of browser apps).

    `Access-Control-Allow-Credentials: true` goes only with an echoed, listed origin: config.py
    refuses "*" and patterns, and the Fetch standard forbids credentials with "*" anyway. Only
    /refresh and /logout read the one cookie there is, after checking the Origin themselves
    (app/api/cookies.py); credentials everywhere else let a frontend that sends them on every
    call (`credentials: "include"`, axios' withCredentials) work without exceptions.
    """
    return {
        "origins": origins,
        "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
        "expose_headers": ["X-Request-ID", "Retry-After"],
        "supports_credentials": True,
        "max_age": 600,
    }


def cors_headers(options: Any, request_headers: Any, method: str) -> list[tuple[str, str]]:
    """The CORS headers Flask-CORS gives a request, computed by Flask-CORS itself (for the fast path)."""
    from flask_cors.core import get_cors_headers

    return [(name, str(value)) for name, value in get_cors_headers(options, request_headers, method).items(multi=True)]


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, if any (the one parser of it)."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unstorable(text: str) -> bool:
    """NUL (PostgreSQL refuses it) or a lone surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# X-User-Email is percent-encoded UTF-8 (RFC 3986 2.1): header values must be ASCII (WSGI
# allows latin-1, gateways and HTTP/2 stacks often less), and an address may be internationalized
# (RFC 6531). Every printable ASCII character but "%" stands for itself, so a plain ASCII address
# is sent unchanged and decoding (docs/GATEWAYS.md) is exact for every address.
_EMAIL_HEADER_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "%")


def identity_headers(verified: VerifiedToken) -> list[tuple[str, str]]:
    """The X-User-* headers of a /validate answer (app/hotpath.py builds it, for both paths)."""
    return [
        ("X-User-Id", str(verified.user_id)),
        ("X-User-Email", quote(verified.email, safe=_EMAIL_HEADER_SAFE)),
        ("X-User-Roles", ",".join(verified.roles)),
        ("X-User-Amr", ",".join(verified.amr)),
    ]


class NoCookieSession(SessionInterface):
    """Flask's cookie session, switched off: tokens travel as Bearer credentials, never in it.

    Nothing reads or writes it (a write raises), so no response gets a session cookie or the
    `Vary: Cookie` that merely reading it adds (Flask-Login looks at it after every request);
    the fast path's answers and Flask's carry the same headers.
    """

    def open_session(self, app, request) -> NullSession:
        """Always the null session."""
        return self.make_null_session(app)

    def save_session(self, app, session, response) -> None:
        """Never called for the null session."""


class ConsoleOnlySession(NoCookieSession):
    """Flask's signed cookie session for the admin console's requests; the null session for every other.

    The API keeps no cookie and no `Vary: Cookie` (NoCookieSession); the console's cookie is
    `__Host-` prefixed, HttpOnly, Secure, SameSite=Strict, and its signature's age is checked
    against PERMANENT_SESSION_LIFETIME (the console's idle timeout) on every request.
    """

    def __init__(self) -> None:
        """The console's cookie settings, whatever Flask's SESSION_COOKIE_* say."""
        self.signed = _ConsoleCookie()

    def open_session(self, app, request):
        """The signed session for a request to the console's paths, else the null session.

        By path: Flask opens the session before it matches the URL to a view.
        """
        mount = app.extensions.get("console_path")
        if mount and (request.path == mount or request.path.startswith(mount + "/")):
            return self.signed.open_session(app, request)
        return self.make_null_session(app)

    def save_session(self, app, session, response) -> None:
        """Write the console's cookie; nothing for the null session."""
        if not isinstance(session, NullSession):
            self.signed.save_session(app, session, response)


class _ConsoleCookie(SecureCookieSessionInterface):
    """The console cookie's attributes, fixed (a `__Host-` cookie must be Secure, Path=/, host-only)."""

    def get_cookie_name(self, app) -> str:
        """The cookie's name."""
        return CONSOLE_COOKIE

    def get_cookie_domain(self, app) -> None:
        """Host-only."""
        return None

    def get_cookie_path(self, app) -> str:
        """`/`, as the prefix requires (the console under URL_PREFIX included)."""
        return "/"

    def get_cookie_httponly(self, app) -> bool:
        """Never readable by scripts."""
        return True

    def get_cookie_secure(self, app) -> bool:
        """HTTPS only."""
        return True

    def get_cookie_samesite(self, app) -> str:
        """Never sent on a request another site starts (a second line against CSRF)."""
        return "Strict"

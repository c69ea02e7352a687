"""The refresh token in an HttpOnly cookie, for browser apps (docs/CONTRACT.md, "Browser apps").

With `"cookie": true` on /signup, /login, /login/mfa or /refresh the refresh token is set as
`__Host-refresh_token` and left out of the body, so a script on the page (an XSS bug) can never
read it; /refresh and /logout read it when the body has none. The tokens themselves are the same:
rotation and reuse detection are app/services/sessions.py's, whichever way the token travels.

The attributes follow OWASP's Session Management Cheat Sheet and ASVS 4.0 3.4.1-3.4.5:
`Secure` and `HttpOnly`; `SameSite=Strict`; the `__Host-` prefix, which makes the browser refuse
the cookie unless it is Secure, has `Path=/` and no `Domain` (so no sibling subdomain can set or
shadow it, RFC 6265bis 4.1.3.2); `Max-Age` the token's own lifetime. The name and attributes are
the same in every environment: development serves HTTPS too (`make run`), so nothing here is
relaxed for it (docs/SECURITY.md says what a plain-HTTP setup gets).

A request that relies on the cookie must also carry an `Origin` that is the service's own or one
of CORS_ORIGINS (403 `origin_not_allowed`): SameSite=Strict alone leaves sibling subdomains
(same site) able to send it, and older browsers ignore SameSite (OWASP CSRF Prevention Cheat
Sheet: SameSite is defence in depth, verify the origin). CORS_ORIGINS is read through Flask-CORS's
own matcher on the options the app gave it (app/http.py cors_settings), so the CORS headers and
this check never disagree about an origin.
"""

from __future__ import annotations

import math
from typing import Any

from flask import Response, after_this_request, current_app, request
from flask_cors.core import get_cors_origins

from app.errors import OriginNotAllowed
from app.models import utcnow
from app.services.issuing import TokenPair

REFRESH_COOKIE = "__Host-refresh_token"
# The attributes of every Set-Cookie of it: setting, rotating and clearing (a clearing cookie
# must match the one it replaces, and a __Host- cookie is refused without Secure and Path=/).
_ATTRIBUTES: dict[str, Any] = {"path": "/", "domain": None, "secure": True, "httponly": True, "samesite": "Strict"}


def own_origin() -> str:
    """The origin this request was addressed to (scheme as seen through TRUSTED_PROXIES, and Host)."""
    return f"{request.scheme}://{request.host}".lower()


def origin_allowed(origin: str | None) -> bool:
    """Whether `origin` is the service's own or one of CORS_ORIGINS (none, or `null` unless listed: no)."""
    if not origin:
        return False
    if origin.lower() == own_origin():
        return True
    return get_cors_origins(current_app.extensions["cors_options"], origin) is not None


def require_allowed_origin() -> None:
    """403 origin_not_allowed unless the request's Origin is allowed; called before anything changes."""
    if not origin_allowed(request.headers.get("Origin")):
        raise OriginNotAllowed()


def wants_cookie(args: dict) -> bool:
    """Whether this request asks for the refresh token as a cookie (`"cookie": true`, taken out of `args`).

    A browser sends `Origin` with every POST; one that names a foreign site is refused here too,
    before a cookie could be planted from there (login CSRF). A client without `Origin` is not a
    browser page, and gets the cookie it asked for.
    """
    if not args.pop("cookie", False):
        return False
    if "Origin" in request.headers:
        require_allowed_origin()
    return True


def refresh_token_from_cookie() -> str | None:
    """The cookie's refresh token, if the request carries one; 403 when its Origin is not allowed."""
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        return None
    require_allowed_origin()
    return token


def token_body(pair: TokenPair, *, cookie: bool) -> dict:
    """The token fields of the answer: in cookie mode the refresh token goes to the cookie instead."""
    body = pair.as_dict()
    if cookie:
        del body["refresh_token"]
        max_age = max(0, math.floor((pair.refresh_expires_at - utcnow()).total_seconds()))

        @after_this_request
        def _set(response: Response) -> Response:
            response.set_cookie(REFRESH_COOKIE, pair.refresh_token, max_age=max_age, **_ATTRIBUTES)
            return response

    return body


def clear_cookie() -> None:
    """Make the browser drop the cookie (Max-Age=0 and an Expires in 1970) with this response."""

    @after_this_request
    def _clear(response: Response) -> Response:
        response.delete_cookie(REFRESH_COOKIE, **_ATTRIBUTES)
        return response

"""The OAuth 2.0 dialect of /oauth/token and /introspect: its error bodies and its client credentials.

These two endpoints answer errors the way OAuth clients parse them (RFC 6749 5.2:
`{"error": "invalid_client", "error_description": "…"}`); every other endpoint answers problem+json
(app/errors.py). Both the Flask views (app/api/oauth.py) and the verification fast path
(app/hotpath.py) raise and render these.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from app.http import unstorable

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
BASIC_CHALLENGE = 'Basic realm="auth"'
MAX_PARAMETER_LENGTH = 8192  # as the token fields of the JSON endpoints (app/schemas/auth.py)
# Form parameters as parsed: each name with every value it was sent with (a repeat is an error).
Form = Mapping[str, list[str]]

# The error codes these endpoints use, with their status (RFC 6749 5.2; server_error and
# temporarily_unavailable are RFC 6749 4.1.2.1's, used for 5xx and 429 as most servers do).
OAUTH_ERRORS = {
    "invalid_request": 400,
    "invalid_client": 401,
    "invalid_grant": 400,
    "unauthorized_client": 400,
    "unsupported_grant_type": 400,
    "invalid_scope": 400,
    "temporarily_unavailable": 503,
    "server_error": 500,
}


class OAuthError(Exception):
    """An error of /oauth/token or /introspect: an RFC 6749 5.2 code, a description, a status, headers."""

    def __init__(
        self, error: str, description: str, *, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """An error of OAUTH_ERRORS (its usual status unless told otherwise)."""
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status or OAUTH_ERRORS[error]
        self.headers = dict(headers or {})
        if self.error == "invalid_client" and self.status == 401:
            # RFC 6749 5.2: a 401 names the authentication scheme the client must use.
            self.headers.setdefault("WWW-Authenticate", BASIC_CHALLENGE)

    def body(self) -> dict[str, str]:
        """The RFC 6749 5.2 body."""
        return {"error": self.error, "error_description": self.description}


def invalid_client(description: str = "Client authentication failed.") -> OAuthError:
    """401 invalid_client with the Basic challenge."""
    return OAuthError("invalid_client", description)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The client_id and secret of an `Authorization: Basic` header, or None when there is no Basic header.

    RFC 6749 2.3.1: each half is form-urlencoded before base64, so it is decoded after the
    split. Raises OAuthError invalid_client for a Basic header that cannot be read.
    """
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_client("The Basic credentials are not base64 of client_id:client_secret.") from None
    client_id, colon, secret = decoded.partition(":")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if not colon or not client_id or not secret or unstorable(client_id) or unstorable(secret):
        raise invalid_client("The Basic credentials are not client_id:client_secret.")
    return client_id, secret


def parameter(form: Form, name: str, *, required: bool = True) -> str | None:
    """One form parameter: RFC 6749 3.2 wants each at most once; None when absent and optional."""
    values = form.get(name, [])
    if len(values) > 1:
        raise OAuthError("invalid_request", f"The parameter {name!r} is sent more than once.")
    value = values[0] if values else ""
    if value == "":
        if required:
            raise OAuthError("invalid_request", f"The parameter {name!r} is required.")
        return None
    if len(value) > MAX_PARAMETER_LENGTH or unstorable(value):
        raise OAuthError("invalid_request", f"The parameter {name!r} is not a plain value of at most 8192 characters.")
    return value


def required_parameter(form: Form, name: str) -> str:
    """A parameter that must be there (RFC 6749 3.2: once); OAuthError invalid_request otherwise."""
    value = parameter(form, name)
    if value is None:  # parameter() raised already; this satisfies the type
        raise OAuthError("invalid_request", f"The parameter {name!r} is required.")
    return value


def require_form(form: Form | None) -> Form:
    """The parsed form; OAuthError invalid_request when the body was not form-encoded (RFC 6749 4.4.2)."""
    if form is None:
        raise OAuthError("invalid_request", f"The request body must be {FORM_CONTENT_TYPE}.")
    return form


def only_basic(form: Form) -> None:
    """Refuse credentials in the body: this server authenticates clients by HTTP Basic only (RFC 6749 2.3.1)."""
    if "client_secret" in form:
        raise invalid_client("Send the client credentials by HTTP Basic (client_secret_basic), not in the body.")


def rate_limited(wait: int) -> OAuthError:
    """429 with Retry-After: RFC 6749 has no code of its own for it; temporarily_unavailable says what to do."""
    return OAuthError(
        "temporarily_unavailable", "Too many requests; slow down.", status=429, headers={"Retry-After": str(wait)}
    )


def from_app_error(error: Any) -> OAuthError:
    """Any other error of these endpoints (app/errors.py's, with its status and headers) in the OAuth vocabulary."""
    status = error.status
    if status == 429:
        error_code = "temporarily_unavailable"
    elif status >= 500:
        error_code = "temporarily_unavailable" if status == 503 else "server_error"
    else:
        error_code = "invalid_request"
    return OAuthError(error_code, error.detail, status=status, headers=error.headers)

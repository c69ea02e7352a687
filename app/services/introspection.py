"""RFC 7662 token introspection: the caller's client authentication, then the token judged as /checkToken judges it.

The verdict is verification.verify_token, the function behind /checkToken; this module only says it
in RFC 7662's words. app/hotpath.py builds the HTTP answer from it, for the fast path and the
Flask view alike.
"""

from __future__ import annotations

from typing import Any

from app.errors import InvalidToken
from app.oauth import (
    Form,
    OAuthError,
    basic_credentials,
    invalid_client,
    only_basic,
    parameter,
    require_form,
    required_parameter,
)
from app.services import clients, verification
from app.services.token_codec import ACCESS

INACTIVE = {"active": False}
# RFC 7662 2.1 / RFC 7009 2.1: the hints a caller may give. A refresh token is never active here:
# it is judged by /checkToken's rules, which accept access tokens only (RFC 6749 1.5: refresh
# tokens are for the authorization server, never for the services that introspect).
TOKEN_TYPE_HINTS = ("access_token", "refresh_token")


def authenticate_caller(authorization: str | None, form: Form) -> None:
    """The caller must be a service client, by HTTP Basic; OAuthError invalid_client otherwise (audited)."""
    credentials = basic_credentials(authorization)
    if credentials is None:
        raise invalid_client("Authenticate with your client_id and client_secret by HTTP Basic.")
    only_basic(form)
    try:
        clients.authenticate(*credentials)
    except OAuthError:
        clients.record_failure(credentials[0], "introspect")
        raise


def introspect(form: Form | None, authorization: str | None) -> dict[str, Any]:
    """The /introspect body for a form and an Authorization header; raises OAuthError for a bad request or caller."""
    form = require_form(form)
    authenticate_caller(authorization, form)
    token = required_parameter(form, "token")
    parameter(form, "token_type_hint", required=False)  # at most once; an unknown hint is ignored (RFC 7662 2.1)
    try:
        verified = verification.verify_token(token, expected_type=ACCESS, clients_too=True)
    except InvalidToken:
        return dict(INACTIVE)
    return describe(verified)


def describe(verified: verification.VerifiedToken | clients.VerifiedClientToken) -> dict[str, Any]:
    """RFC 7662 2.2 members of an active token."""
    claims = verified.claims
    body: dict[str, Any] = {
        "active": True,
        "sub": claims["sub"],
        "roles": list(verified.roles),
        "token_type": "access_token",
        "exp": int(claims["exp"]),
        "iat": int(claims["iat"]),
        "nbf": int(claims["nbf"]),
        "jti": claims["jti"],
        "iss": claims["iss"],
    }
    if "aud" in claims:
        body["aud"] = claims["aud"]
    if isinstance(verified, clients.VerifiedClientToken):
        body.update(client_id=str(verified.client_id), username=verified.name)
        return body
    body.update(email=verified.email, sid=str(verified.sid), amr=list(verified.amr))
    if verified.username:
        body["username"] = verified.username
    return body

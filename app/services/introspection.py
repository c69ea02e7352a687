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
    rate_limited,
    require_form,
    required_parameter,
)
from app.ratelimit import AddressLimit
from app.services import clients, verification
from app.services.token_codec import ACCESS

INACTIVE = {"active": False}
# RFC 7662 2.1 / RFC 7009 2.1: the hints a caller may give. A refresh token is never active here:
# it is judged by /checkToken's rules, which accept access tokens only (RFC 6749 1.5: refresh
# tokens are for the authorization server, never for the services that introspect).
TOKEN_TYPE_HINTS = ("access_token", "refresh_token")


def refuse_blocked(budget: AddressLimit, address: str | None) -> None:
    """429 (OAuth's words) while this worker knows `address` has spent its failure budget: before any check.

    So a right guess made after the budget ran out is refused like a wrong one, and tells nothing.
    """
    wait = budget.blocked(address)
    if wait is not None:
        raise rate_limited(wait)


def authenticate_caller(authorization: str | None, form: Form, address: str | None, budget: AddressLimit) -> None:
    """The caller must be a service client, by HTTP Basic; OAuthError invalid_client otherwise (audited).

    A failed authentication spends one of `address`'s failed secret checks from `budget`, the one
    /login and /oauth/token spend (RATELIMIT_LOGIN_FAILURES; ASVS 2.2.1, NIST SP 800-63B 5.2.2), and is a 429
    once that is used up. Unlike theirs, nothing is reserved before the check: services call
    /introspect on every request they serve, and reserving and refunding would cost every successful
    call two Redis round trips. A success costs none while this worker knows no block for the
    address (refuse_blocked, before the check). The price: once the budget is spent, each worker
    thread can have one more guess evaluated (the one in flight when the budget ran out, or the
    first one a worker that has not yet seen the block gets) before it answers 429. A client
    secret is 256 bits from the CSPRNG (clients._new_secret), so those few guesses change nothing;
    the budget is there to stop the guessing and to tell a prober from a service. A database outage
    raises before anything is spent (a 503 costs the caller nothing).
    """
    try:
        credentials = basic_credentials(authorization)
        if credentials is None:
            raise invalid_client("Authenticate with your client_id and client_secret by HTTP Basic.")
        only_basic(form)
        try:
            clients.authenticate(*credentials)
        except OAuthError:
            clients.record_failure(credentials[0], "introspect")
            raise
    except OAuthError:  # every failed client authentication (a 401), as /oauth/token counts its own
        wait = budget.spend(address)
        if wait is not None:
            raise rate_limited(wait) from None
        raise


def introspect(
    form: Form | None, authorization: str | None, address: str | None, budget: AddressLimit
) -> dict[str, Any]:
    """The /introspect body for a form and an Authorization header from `address`; raises OAuthError for a
    bad request or caller, and for an address whose failure `budget` (app/ratelimit.py
    password_failure_budget) is spent."""
    refuse_blocked(budget, address)
    form = require_form(form)
    authenticate_caller(authorization, form, address, budget)
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

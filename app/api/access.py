"""Who is calling: the Bearer credential, Flask-Login's loader of the user behind it, and the access decorators.

The loaders are bound to Flask-Login by app.register_extensions. A Bearer request's
`current_user` is a SignedInUser (app/services/verification.py): the user as verify_token found
them (the revocation view's entry, or its one query), with no query of its own; `caller()` loads
the model object for the views that change something (bench/PROFILE.md, "/me": the load was a
third of /me's CPU).
"""

from __future__ import annotations

from functools import wraps
from typing import Any

from flask import g, request
from flask_login import current_user, login_required

from app.errors import Forbidden, InvalidToken, MissingToken, MissingTokenField
from app.extensions import db
from app.http import CONSOLE_BLUEPRINT, bearer
from app.models import ADMIN, User
from app.services import token_codec, verification
from app.services.verification import SignedInUser

__all__ = [
    "SignedInUser",
    "admin_required",
    "bearer_token",
    "caller",
    "client_info",
    "load_user_from_request",
    "login_required",
    "signed_in",
    "token_argument",
    "unauthorized",
]


def bearer_token() -> str | None:
    """The Bearer credential of the current request, if any."""
    return bearer(request.headers.get("Authorization"))


def client_info() -> dict[str, str | None]:
    """The caller's user agent and address, for the session record."""
    return {"user_agent": request.headers.get("User-Agent"), "ip": request.remote_addr}


def token_argument(args: dict[str, Any], field: str) -> str:
    """A token from the body field, else from the Bearer header; 400 when neither (docs/CONTRACT.md)."""
    token = args.get(field) or bearer_token()
    if not token:
        raise MissingTokenField(
            f"Send the token as '{field}' in the body or as a Bearer credential.",
            errors={field: ["Missing data for required field."]},
        )
    return token


def load_user_from_request(req) -> SignedInUser | None:
    """Flask-Login's loader: the user behind a valid access token, through verify_token.

    Not on the admin console's pages: they are signed in by their own cookie only (app/console/).
    """
    if req.blueprint == CONSOLE_BLUEPRINT:
        return None
    token = bearer_token()
    if token is None:
        g.auth_error = MissingToken()
        return None
    try:
        verified = verification.verify_token(token, expected_type=token_codec.ACCESS)
    except InvalidToken as error:
        g.auth_error = error
        return None
    g.token = verified
    return SignedInUser(verified)


def unauthorized() -> None:
    """401 problem+json with the reason the loader recorded."""
    raise g.get("auth_error") or MissingToken()


def signed_in() -> SignedInUser | User:
    """The signed-in user itself (not the proxy): a SignedInUser, or the console's admin (a User)."""
    return current_user._get_current_object()


def caller() -> User:
    """The signed-in user as the model object, for the services (one query for a Bearer request).

    A user deleted since their token was verified is `revoked`, as verify_token would say.
    """
    found = signed_in()
    if isinstance(found, User):
        return found  # the admin console's sign-in loads the row itself
    user = db.session.get(User, found.id)
    if user is None:
        raise InvalidToken("revoked")
    return user


def admin_required(view):
    """Require a valid access token of an active admin (403 for anyone else)."""

    @wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if current_user.role != ADMIN:
            raise Forbidden("This needs the admin role.")
        return view(*args, **kwargs)

    return wrapper

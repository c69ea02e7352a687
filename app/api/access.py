"""Who is calling: the Bearer credential, Flask-Login's loader of the user behind it, and the access decorators.

The loaders are bound to Flask-Login by app.register_extensions. A Bearer request's
`current_user` is a SignedInUser: the user as verify_token found them (the revocation view's
entry, or its one query), with no query of its own; `caller()` loads the model object for the
views that change something (bench/PROFILE.md, "/me": the load was a third of /me's CPU).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import wraps
from typing import Any

from flask import g, request
from flask_login import current_user, login_required

from app.errors import Forbidden, InvalidToken, MissingToken, MissingTokenField
from app.extensions import db
from app.http import CONSOLE_BLUEPRINT, bearer
from app.models import ADMIN, User
from app.services import token_codec, verification

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


class SignedInUser:
    """The user behind a valid access token, as verification found them (Flask-Login's current_user).

    Its attributes are the user's columns that responses show (UserSchema), read from the state
    that verified the token: as fresh as the verdict itself, since every change of the user's row
    invalidates that state (app/services/revocation_view.py).
    """

    __slots__ = ("_state", "id", "token")
    is_authenticated = True
    is_anonymous = False

    def __init__(self, verified: verification.VerifiedToken) -> None:
        """Wrap a verified access token of a user (never a service client's)."""
        self.token = verified
        self.id: uuid.UUID = verified.user_id
        self._state = verified.state

    def get_id(self) -> str:
        """Flask-Login's identifier: the user id as a string."""
        return str(self.id)

    @property
    def email(self) -> str | None:
        """The current address."""
        return self._state.email

    @property
    def username(self) -> str | None:
        """The username, if any."""
        return self._state.username

    @property
    def name(self) -> str | None:
        """The display name."""
        return self._state.name

    @property
    def role(self) -> str | None:
        """user or admin."""
        return self._state.role

    @property
    def is_active(self) -> bool:
        """Always true: verify_token refuses an inactive user's tokens."""
        return self._state.is_active

    @property
    def email_verified(self) -> bool:
        """Whether the address was confirmed."""
        return self._state.email_verified

    @property
    def pending_email(self) -> str | None:
        """A new address waiting for its link."""
        return self._state.pending_email

    @property
    def mfa_enabled(self) -> bool:
        """Whether a second factor is on."""
        return self._state.mfa_enabled

    @property
    def created_at(self) -> datetime | None:
        """When the account was made."""
        return self._state.created_at

    @property
    def updated_at(self) -> datetime | None:
        """When the row last changed."""
        return self._state.updated_at


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

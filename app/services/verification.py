"""Verification: the one function that decides whether a token is valid, and the /checkToken result.

`verify_token` is the one place that decides (docs/CONTRACT.md, "2. Tokens"); /checkToken,
/validate, /introspect and every protected endpoint go through it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, overload

from app.errors import InvalidToken
from app.services import clients, token_state
from app.services.revocation_view import TokenState
from app.services.token_codec import ACCESS, AMR_PASSWORD, REFRESH, decode_verified, is_client_subject


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token proves: who, which session, until when."""

    user_id: uuid.UUID
    email: str
    roles: list[str]
    jti: str
    sid: uuid.UUID
    type: str
    fresh: bool
    expires_at: datetime
    claims: Mapping[str, Any]
    # The database's word on the user, session and jti that it was judged by (the revocation
    # view's entry, or one query).
    state: TokenState
    amr: tuple[str, ...] = AMR_PASSWORD
    username: str | None = None


class SignedInUser:
    """The user behind a valid access token, as verification found them: Flask-Login's current_user, GET /me.

    Its attributes are the user's columns that responses show (UserSchema), read from the state
    that verified the token: as fresh as the verdict itself, since every change of the user's row
    invalidates that state (app/services/revocation_view.py).
    """

    __slots__ = ("_state", "id", "token")
    is_authenticated = True
    is_anonymous = False

    def __init__(self, verified: VerifiedToken) -> None:
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


@overload
def verify_token(token: str, *, expected_type: str = ACCESS) -> VerifiedToken: ...


@overload
def verify_token(
    token: str, *, expected_type: str = ACCESS, clients_too: Literal[True]
) -> VerifiedToken | clients.VerifiedClientToken: ...


def verify_token(
    token: str, *, expected_type: str = ACCESS, clients_too: bool = False
) -> VerifiedToken | clients.VerifiedClientToken:
    """Decide whether `token` is valid for `expected_type` by every rule of docs/CONTRACT.md.

    A service client's token (app/services/clients.py) is judged only where `clients_too` is
    given (/checkToken, /introspect); every user endpoint finds it invalid.
    Raises InvalidToken with reason expired, invalid, wrong_type, revoked or user_inactive,
    and lets a database failure propagate (it becomes a 503: never "valid" when unsure).
    """
    found = decode_verified(token)
    claims = found.claims
    if is_client_subject(claims["sub"]):
        if not clients_too:
            raise InvalidToken("invalid")
        return clients.verify(claims, found.expires_at)
    if claims["type"] != expected_type:
        raise InvalidToken("wrong_type" if claims["type"] in (ACCESS, REFRESH) else "invalid")
    user_id, sid = found.user_id, found.sid
    if user_id is None or sid is None:
        raise InvalidToken("invalid")
    # Refresh tokens always ask the database: rotation must see the latest state.
    state = token_state.lookup(user_id, sid, claims["jti"], use_cache=expected_type == ACCESS)
    if not state.user_exists:
        raise InvalidToken("revoked")  # the user was deleted, and every token with them
    if not state.is_active:
        raise InvalidToken("user_inactive")  # before the session: deactivation revokes those too
    if state.jti_revoked or not state.session_live:
        raise InvalidToken("revoked")
    cutoff = state.tokens_valid_after
    if cutoff is not None and claims["iat"] < _as_utc(cutoff).timestamp():
        raise InvalidToken("revoked")  # password reset or deactivation after issue
    return VerifiedToken(
        user_id=user_id,
        email=state.email or "",  # a user row always has both (TokenState defaults them for no row)
        roles=[state.role or ""],
        jti=claims["jti"],
        sid=sid,
        type=claims["type"],
        fresh=bool(claims.get("fresh", False)),
        expires_at=found.expires_at,
        claims=claims,
        amr=found.amr,
        username=state.username,
        state=state,
    )


def _as_utc(value: datetime) -> datetime:
    """Aware UTC, for values read through Core (the column type already does this)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_token_result(token: str) -> dict[str, Any]:
    """The /checkToken answer: validity plus who, or the reason it is not valid."""
    try:
        verified = verify_token(token, expected_type=ACCESS, clients_too=True)
    except InvalidToken as error:
        return {"success": True, "valid": False, "reason": error.reason}
    if isinstance(verified, clients.VerifiedClientToken):
        return {
            "success": True,
            "valid": True,
            "client_id": str(verified.client_id),
            "roles": verified.roles,
            "expires_at": verified.expires_at,
            "jti": verified.jti,
        }
    return {
        "success": True,
        "valid": True,
        "user_id": str(verified.user_id),
        "email": verified.email,
        "roles": verified.roles,
        "expires_at": verified.expires_at,
        "jti": verified.jti,
        "sid": str(verified.sid),
        "amr": list(verified.amr),
    }

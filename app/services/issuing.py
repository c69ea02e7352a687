"""Issuing tokens: an access and a refresh token for a session, signed by Flask-JWT-Extended.

Flask-JWT-Extended creates the tokens (its key loaders pick the signing key, app/services/keys.py);
verification never goes through it (app/services/token_codec.py says why).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token

from app.errors import InvalidToken
from app.models import utcnow
from app.services.token_codec import AMR_PASSWORD


@dataclass(frozen=True, slots=True)
class TokenPair:
    """A freshly issued access and refresh token, and what the session must remember of them."""

    access_token: str
    refresh_token: str
    expires_in: int
    refresh_jti: str
    refresh_expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The token fields of a response body."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


def issue_pair(
    *,
    user_id: uuid.UUID,
    roles: list[str],
    sid: uuid.UUID,
    fresh: bool,
    session_started: datetime,
    amr: tuple[str, ...] = AMR_PASSWORD,
) -> TokenPair:
    """Sign an access and a refresh token for session `sid`; the access token says how the login proved itself (`amr`).

    The refresh token never outlives the session's absolute lifetime (SESSION_MAX_LIFETIME from
    the login), so rotating it forever does not keep a session alive forever.
    """
    config = current_app.config
    now = utcnow()
    session_end = session_started + config["SESSION_MAX_LIFETIME"]
    refresh_expires_at = min(now + config["JWT_REFRESH_TOKEN_EXPIRES"], session_end)
    if refresh_expires_at <= now:
        raise InvalidToken("expired")
    refresh_jti = str(uuid.uuid4())
    access = create_access_token(
        identity=str(user_id),
        fresh=fresh,
        additional_claims={"roles": roles, "sid": str(sid), "amr": list(amr)},
    )
    refresh = create_refresh_token(
        identity=str(user_id),
        additional_claims={"sid": str(sid), "jti": refresh_jti},
        expires_delta=refresh_expires_at - now,
    )
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=int(config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
        refresh_jti=refresh_jti,
        refresh_expires_at=refresh_expires_at,
    )

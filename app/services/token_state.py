"""The token-state query: what the database says about a token's user, session and jti, in one round trip.

The user's shown columns come along (revocation_view.TokenState), so GET /me needs no query of its own.

Access tokens read it through this worker's revocation view (app/services/revocation_view.py);
refresh tokens always read the database.
"""

from __future__ import annotations

import uuid

from flask import current_app
from sqlalchemy import and_, bindparam, exists, select

from app.extensions import db
from app.models import RevokedToken, Session, User
from app.services.revocation_view import RevocationView, TokenState

_USERS, _SESSIONS, _REVOKED = User.__table__, Session.__table__, RevokedToken.__table__
# Built once: one round trip for the user's standing, the session's, and whether the jti is revoked.
STATE_QUERY = (
    select(
        _USERS.c.email,
        _USERS.c.username,
        _USERS.c.role,
        _USERS.c.is_active,
        _USERS.c.tokens_valid_after,
        _USERS.c.name,
        _USERS.c.email_verified,
        _USERS.c.pending_email,
        _USERS.c.mfa_enabled,
        _USERS.c.created_at,
        _USERS.c.updated_at,
        _SESSIONS.c.id.label("session_id"),
        _SESSIONS.c.revoked_at,
        exists().where(_REVOKED.c.jti == bindparam("jti")).label("jti_revoked"),
    )
    .select_from(
        _USERS.outerjoin(_SESSIONS, and_(_SESSIONS.c.id == bindparam("sid"), _SESSIONS.c.user_id == _USERS.c.id))
    )
    .where(_USERS.c.id == bindparam("user_id"))
)


def lookup(user_id: uuid.UUID, sid: uuid.UUID, jti: str, *, use_cache: bool) -> TokenState:
    """What the database says about this token: from this worker's revocation view, or one query."""
    view: RevocationView = current_app.extensions["revocations"]
    key = (jti, user_id, sid)
    if use_cache:
        view.ensure_listening()
        cached = view.cache.get(key)
        if isinstance(cached, TokenState):
            return cached
    epoch = view.cache.epoch
    row = db.session.execute(STATE_QUERY, {"user_id": user_id, "sid": sid, "jti": jti}).first()
    if row is None:
        state = TokenState(user_exists=False)
    else:
        state = TokenState(
            user_exists=True,
            email=row.email,
            username=row.username,
            role=row.role,
            is_active=row.is_active,
            tokens_valid_after=row.tokens_valid_after,
            session_live=row.session_id is not None and row.revoked_at is None,
            jti_revoked=bool(row.jti_revoked),
            name=row.name,
            email_verified=row.email_verified,
            pending_email=row.pending_email,
            mfa_enabled=row.mfa_enabled,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
    if use_cache:
        view.cache.put(key, state, epoch)
    return state

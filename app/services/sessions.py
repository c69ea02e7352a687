"""The session lifecycle: open a session, rotate its refresh token (reuse detection), revoke, log out, purge.

A refresh token spent twice is theft: `rotate_refresh` revokes the whole session (docs/CONTRACT.md).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import IntegrityError

from app import observability
from app.errors import InvalidToken, TokenReused
from app.extensions import db, execute_dml
from app.models import RevokedToken, Session, User, utcnow
from app.services import audit, events, revocation_view
from app.services.issuing import TokenPair, issue_pair
from app.services.token_codec import ACCESS, AMR_PASSWORD, REFRESH, decode_verified
from app.services.verification import VerifiedToken, verify_token


def whole_second_now() -> datetime:
    """Now, rounded down to the second: `iat` has whole seconds, so cut-offs must too."""
    now = utcnow()
    return datetime.fromtimestamp(math.floor(now.timestamp()), UTC)


def open_session(
    user: User, *, user_agent: str | None, ip: str | None, fresh: bool, amr: tuple[str, ...] = AMR_PASSWORD
) -> TokenPair:
    """Open a session for `user` and issue its first pair; the caller commits."""
    now = utcnow()
    sid = uuid.uuid4()
    pair = issue_pair(user_id=user.id, roles=user.roles, sid=sid, fresh=fresh, session_started=now, amr=amr)
    db.session.add(
        Session(
            id=sid,
            user_id=user.id,
            refresh_jti=pair.refresh_jti,
            created_at=now,
            last_used_at=now,
            expires_at=pair.refresh_expires_at,
            user_agent=(user_agent or "")[:255] or None,
            ip=(ip or "")[:45] or None,
            amr=",".join(amr),
        )
    )
    observability.count_issued_pair()  # before the caller commits: a failed commit overcounts by one
    return pair


def rotate_refresh(refresh_token: str) -> TokenPair:
    """Spend a refresh token for a new pair; a spent one revokes its whole session.

    Raises InvalidToken, or TokenReused when the token was already spent (docs/CONTRACT.md: theft).
    The swap is one conditional UPDATE, so of simultaneous uses at most one wins.
    """
    verified = verify_token(refresh_token, expected_type=REFRESH)
    session = db.session.execute(select(Session.created_at, Session.amr).where(Session.id == verified.sid)).first()
    if session is None:
        raise InvalidToken("revoked")
    # The session keeps the amr of its login: a refresh proves nothing new, and loses nothing.
    pair = issue_pair(
        user_id=verified.user_id,
        roles=verified.roles,
        sid=verified.sid,
        fresh=False,
        session_started=session.created_at,
        amr=tuple(session.amr.split(",")),
    )
    swapped = execute_dml(
        update(Session)
        .where(Session.id == verified.sid, Session.refresh_jti == verified.jti, Session.revoked_at.is_(None))
        .values(refresh_jti=pair.refresh_jti, expires_at=pair.refresh_expires_at, last_used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if swapped == 1:
        db.session.commit()
        observability.count_issued_pair()
        return pair
    db.session.rollback()
    revoke_sessions(verified.user_id, Session.id == verified.sid, reason="token_reused")
    audit.record("refresh_reuse_detected", target_id=verified.user_id, session_id=str(verified.sid))
    db.session.commit()
    raise TokenReused()


def _announce_revoked(
    user_id: uuid.UUID, criteria: tuple[ColumnElement[bool], ...], reason: str
) -> tuple[ColumnElement[bool], ...]:
    """One auth.session.revoked for `reason` per unrevoked session of the user matching `criteria`.

    With events on, the sessions are locked and the criteria returned name exactly them, so a
    concurrent revocation tells once; without, `criteria` as they are, with the user and
    unrevoked. The caller revokes (or deletes) them and commits.
    """
    live: tuple[ColumnElement[bool], ...] = (Session.user_id == user_id, Session.revoked_at.is_(None), *criteria)
    if not events.enabled():
        return live
    sids = list(db.session.scalars(select(Session.id).where(*live).with_for_update()).all())
    events.sessions_revoked(user_id, sids, reason)
    return Session.id.in_(sids), Session.revoked_at.is_(None)


def revoke_sessions(user_id: uuid.UUID, *criteria: ColumnElement[bool], reason: str) -> int:
    """Mark the user's live sessions matching `criteria` revoked, for `reason` (app/services/events.py
    REASONS: one auth.session.revoked each); the caller commits."""
    revocation_view.invalidate_user(db.session(), user_id)  # a Core UPDATE: the ORM hooks do not see it
    live = _announce_revoked(user_id, criteria, reason)
    revoked = execute_dml(
        update(Session).where(*live).values(revoked_at=utcnow()).execution_options(synchronize_session=False)
    )
    observability.TOKENS_REVOKED.labels("session").inc(revoked)
    return revoked


def announce_deleted_sessions(user_id: uuid.UUID) -> None:
    """The user is being deleted, its sessions rows with it: one auth.session.revoked (reason `user_deleted`)
    per session still live, neither revoked nor expired. Said before the account's auth.user.deleted,
    so consumers see the sessions end first. Nothing is written to the rows, which the caller
    deletes before it commits."""
    _announce_revoked(user_id, (Session.expires_at > utcnow(),), "user_deleted")


def record_revoked_jti(jti: str, *, token_type: str, user_id: uuid.UUID | None, expires_at: datetime) -> None:
    """Record a revoked jti (idempotent: a concurrent twin is not an error); commits."""
    if db.session.get(RevokedToken, jti) is not None:
        return
    db.session.add(RevokedToken(jti=jti, token_type=token_type, user_id=user_id, expires_at=expires_at))
    try:
        db.session.commit()
        observability.TOKENS_REVOKED.labels(token_type).inc()
    except IntegrityError:
        db.session.rollback()  # the same jti was revoked by a simultaneous request


def logout(verified: VerifiedToken, *, refresh_token: str | None = None, everywhere: bool = False) -> None:
    """Revoke this access token and its session; also the given refresh token's; or every session."""
    if everywhere:
        revoke_sessions(verified.user_id, reason="logout_all")
    else:
        revoke_sessions(verified.user_id, Session.id == verified.sid, reason="logout")
    if refresh_token:
        try:
            other = decode_verified(refresh_token).claims
        except InvalidToken:
            other = None
        # Only a refresh token of the same user can be revoked this way.
        if other is not None and other["type"] == REFRESH and other["sub"] == str(verified.user_id):
            try:
                revoke_sessions(verified.user_id, Session.id == uuid.UUID(other["sid"]), reason="logout")
            except ValueError:
                pass
    audit.record("logout", actor_id=verified.user_id, target_id=verified.user_id, all=everywhere)
    db.session.commit()
    record_revoked_jti(verified.jti, token_type=ACCESS, user_id=verified.user_id, expires_at=verified.expires_at)


def void_all_tokens(user: User, *, reason: str) -> None:
    """Void every token the user holds now: a cut-off at this second and every session revoked.

    The caller commits.
    """
    user.tokens_valid_after = whole_second_now()
    revoke_sessions(user.id, reason=reason)


def purge_expired(now: datetime | None = None) -> tuple[int, int]:
    """Delete revocation records and sessions whose tokens have expired anyway; commits."""
    now = now or utcnow()
    revoked = execute_dml(RevokedToken.__table__.delete().where(RevokedToken.expires_at < now))
    sessions = execute_dml(Session.__table__.delete().where(Session.expires_at < now))
    db.session.commit()
    return revoked, sessions

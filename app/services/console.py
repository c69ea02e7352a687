"""The admin console's own logic: who may sign in to it, which sign-in is still good, and the two
actions the API has no admin endpoint for (ending another user's sessions, sending a reset mail).

Everything else the console does is the API's services, called as the API calls them, so every
rule (last admin, self-access, audit) holds in one place.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import select

from app.errors import AccountDisabled, Forbidden, InvalidToken, NotFound
from app.extensions import db
from app.models import ADMIN, Session, User, utcnow
from app.services import accounts, audit, issuing, mfa, recovery, sessions, token_codec, users

NOT_AN_ADMIN = "This console is for administrators; this account is not one."


@dataclass(frozen=True, slots=True)
class SignIn:
    """An admin signed in to the console: the account and the session (a sessions row) it opened."""

    user: User
    sid: uuid.UUID
    signed_in_at: int  # Unix seconds


def sign_in(
    *, password: str, email: str | None = None, username: str | None = None, user_agent: str | None, ip: str | None
) -> SignIn:
    """Check an admin's password as POST /login does (same throttle, same audit) and open a session.

    Raises what accounts.login raises (InvalidCredentials, AccountDisabled, EmailNotVerified,
    TooManyAttempts, MfaRequired with the mfa_token) and Forbidden (not an admin).
    """
    user, pair = accounts.login(email=email, username=username, password=password, user_agent=user_agent, ip=ip)
    return _admitted(user, pair)


def complete_sign_in(
    *,
    mfa_token: str,
    code: str | None = None,
    recovery_code: str | None = None,
    user_agent: str | None,
    ip: str | None,
) -> SignIn:
    """The second step, as POST /login/mfa. Raises what mfa.complete_login raises, and Forbidden (not an admin)."""
    user, pair = mfa.complete_login(
        mfa_token=mfa_token, code=code, recovery_code=recovery_code, user_agent=user_agent, ip=ip
    )
    return _admitted(user, pair)


def _admitted(user: User, pair: issuing.TokenPair) -> SignIn:
    """The console's session is the login's sessions row (its tokens are never sent anywhere).

    So it is listed with the user's sessions, and ended by everything that ends sessions: a
    logout everywhere, a password change or reset, a deactivation, a revocation by an admin.
    A plain user's login is ended at once.
    """
    sid = token_codec.decode_verified(pair.access_token).sid
    if sid is None:  # issuing.issue_pair always names the session; never a sign-in without one
        raise InvalidToken("invalid")
    if user.role != ADMIN:
        sessions.revoke_sessions(user.id, Session.id == sid, reason="logout")
        audit.record("session_revoked", actor_id=user.id, target_id=user.id, session_id=str(sid), reason="not_admin")
        db.session.commit()
        raise Forbidden(NOT_AN_ADMIN)
    return SignIn(user=user, sid=sid, signed_in_at=int(utcnow().timestamp()))


def signed_in_admin(*, user_id: str, sid: str | None, signed_in_at: int | None) -> User | None:
    """The admin behind a console cookie, while its sign-in still holds; else None.

    It holds while the account is an active admin, its session is live (not revoked, not past
    its expiry) and younger than ADMIN_CONSOLE_MAX_LIFETIME. The idle timeout is the cookie
    signature's age (Flask checks it before this runs).
    """
    if sid is None or signed_in_at is None:
        return None
    try:
        user_key, session_key = uuid.UUID(user_id), uuid.UUID(sid)
    except (ValueError, TypeError):
        return None
    now = utcnow()
    if now.timestamp() - signed_in_at > current_app.config["ADMIN_CONSOLE_MAX_LIFETIME"]:
        return None
    user = db.session.get(User, user_key)
    if user is None or not user.is_active or user.role != ADMIN:
        return None
    cutoff = user.tokens_valid_after
    if cutoff is not None and _aware(cutoff).timestamp() > signed_in_at:
        return None
    live = db.session.execute(
        select(Session.id).where(
            Session.id == session_key,
            Session.user_id == user.id,
            Session.revoked_at.is_(None),
            Session.expires_at > now,
        )
    ).first()
    return user if live is not None else None


def _aware(moment: datetime) -> datetime:
    """A stored timestamp as timezone-aware UTC (SQLite gives naive ones back)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def sign_out(user: User, sid: uuid.UUID) -> None:
    """End the console's session (its sessions row), audited as a logout; commits."""
    sessions.revoke_sessions(user.id, Session.id == sid, reason="logout")
    audit.record("logout", actor_id=user.id, target_id=user.id, all=False, via="console")
    db.session.commit()


def revoke_sessions(*, actor: User, target_id: str, session_id: str | None = None) -> int:
    """An admin ends one session of a user (`session_id`) or all of them; audited; commits.

    Raises NotFound (no such user, or no such live session of theirs).
    """
    target = users.get_user(target_id)
    if session_id is None:
        count = sessions.revoke_sessions(target.id, reason="admin_revoked")
        audit.record("session_revoked", actor_id=actor.id, target_id=target.id, all=True, count=count)
    else:
        try:
            sid = uuid.UUID(session_id)
        except ValueError:
            raise NotFound("No such session.") from None
        count = sessions.revoke_sessions(target.id, Session.id == sid, reason="admin_revoked")
        if count != 1:
            db.session.rollback()
            raise NotFound("No such session.")
        audit.record("session_revoked", actor_id=actor.id, target_id=target.id, session_id=str(sid))
    db.session.commit()
    return count


def send_reset_mail(*, actor: User, target_id: str, ip: str | None, user_agent: str | None) -> User:
    """Send a user a password reset mail, as POST /password/forgot would; the mail names no admin.

    Raises NotFound, AccountDisabled (a deactivated account gets no reset mail: reactivate it
    first), MailUnavailable, RateLimited (the per-address budget of /password/forgot).
    """
    target = users.get_user(target_id)
    if not target.is_active:
        raise AccountDisabled("This account is deactivated: reactivate it before sending a reset mail.")
    recovery.request_password_reset(email=target.email, ip=ip, user_agent=user_agent, actor_id=actor.id)
    return target

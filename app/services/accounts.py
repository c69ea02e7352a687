"""Self-service accounts: signup, login, profile, password change, deletion, sessions."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app
from sqlalchemy import select

from app.errors import AccountDisabled, EmailNotVerified, InvalidCredentials, NotFound, TooManyAttempts
from app.extensions import db
from app.models import Session, User, utcnow
from app.services import audit, credentials, issuing, mfa, passwords, recovery, sessions, throttle, users


def signup(
    *,
    email: str,
    password: str,
    name: str,
    username: str | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> tuple[User, issuing.TokenPair]:
    """Create a `user` account and its first session. Raises ValidationFailed, EmailTaken, UsernameTaken."""
    user = users.new_user(email=email, password=password, name=name, username=username)
    users.commit_or_conflict(flush_only=True)  # the user row must exist before its session's
    pair = sessions.open_session(user, user_agent=user_agent, ip=ip, fresh=True)
    audit.record("signup", actor_id=user.id, target_id=user.id)
    recovery.on_signup(user)
    users.commit_or_conflict()
    return user, pair


def find_by_identifier(*, email: str | None, username: str | None) -> User | None:
    """The account with this (normalized) email, or this username by its key (`ａｄｍｉｎ` finds `admin`)."""
    if email is not None:
        return users.by_email(email)
    key = users.username_key(username)
    if key is None:  # no account can have it; never compare with NULL, which users without a username hold
        return None
    return db.session.scalars(select(User).where(User.username_key == key)).first()


def login(
    *,
    password: str,
    email: str | None = None,
    username: str | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> tuple[User, issuing.TokenPair]:
    """Check credentials and open a session.

    Raises InvalidCredentials, AccountDisabled, EmailNotVerified (EMAIL_VERIFICATION=required),
    TooManyAttempts, and MfaRequired (no session yet) for an account with a second factor.

    An unknown account costs one hash verification too, and both failures give the same
    error, so neither the answer nor its timing tells whether the account exists (ASVS 2.2.x).
    """
    user = find_by_identifier(email=email, username=username)
    subject = credentials.subject(user, email or users.username_key(username) or (username or "").lower())
    verified_hash = user.password_hash if user is not None else ""  # read before the lock (credentials.hold)
    try:
        throttle.begin_attempt(subject)
    except TooManyAttempts:
        audit.record_now("login_throttled", target_id=user.id if user is not None else None)
        raise
    credentials.release_connection()
    if user is None:
        passwords.burn_verification(password)
        # What was typed is not recorded: a mistyped identifier is often a password.
        audit.record_now("login_failed", reason="unknown_account")
        raise InvalidCredentials()
    matches, needs_rehash = passwords.verify_password(verified_hash, password)
    if not matches:
        audit.record_now("login_failed", target_id=user.id, reason="wrong_password")
        raise InvalidCredentials()
    # With a second factor the password is half of the login: the attempt stays counted until
    # /login/mfa settles it, or a known password would reset the count between code guesses.
    # (mfa_enabled is a column of the row just loaded: no extra query for anyone.)
    if not user.mfa_enabled:
        throttle.record_success(subject)
    if not user.is_active:
        audit.record_now("login_failed", target_id=user.id, reason="account_disabled")
        raise AccountDisabled()
    if current_app.config["EMAIL_VERIFICATION"] == "required" and not user.email_verified:
        # Told only to whoever knows the password, like account_disabled.
        audit.record_now("login_failed", target_id=user.id, reason="email_not_verified")
        raise EmailNotVerified()
    needs_rehash = credentials.hold(user, verified_hash, password, needs_rehash)
    if needs_rehash:
        user.password_hash = passwords.hash_password(password)
    if user.mfa_enabled:
        mfa.challenge(user)  # raises MfaRequired with the mfa_token
    pair = sessions.open_session(user, user_agent=user_agent, ip=ip, fresh=True)
    audit.record("login_succeeded", actor_id=user.id, target_id=user.id, rehashed=needs_rehash)
    db.session.commit()
    return user, pair


def change_password(user: User, *, current_sid: uuid.UUID, current_password: str, new_password: str) -> None:
    """Change the password and revoke every other session of the user.

    The calling session survives: it has just proven the current password. Raises
    InvalidCredentials, ValidationFailed, TooManyAttempts.
    """
    credentials.require_password(user, current_password)
    passwords.check_policy(new_password, field="new_password", email=user.email, username=user.username)
    new_hash = passwords.hash_password(new_password)
    credentials.lock(user)
    user.password_hash = new_hash
    revoked = sessions.revoke_sessions(user.id, Session.id != current_sid)
    audit.record("password_changed", actor_id=user.id, target_id=user.id, sessions_revoked=revoked)
    recovery.notify_password_changed(user, how="changed")
    db.session.commit()


def update_me(user: User, changes: dict[str, Any]) -> User:
    """Change one's own name, email or username; a new email waits for its confirmation when mail works.

    An admin may take a reserved name here too: PATCH /users/{own id} would allow it anyway.
    Raises UsernameReserved, EmailTaken, UsernameTaken, RateLimited.
    """
    return users.update_own(user, changes)


def delete_me(user: User, *, password: str) -> None:
    """Delete one's own account after re-checking the password (the rule of users.delete_user).

    Raises InvalidCredentials, TooManyAttempts, LastAdmin.
    """
    users.delete_user(actor=user, target_id=str(user.id), password=password)


def list_sessions(user: User, *, current_sid: uuid.UUID) -> list[dict[str, Any]]:
    """The user's live sessions, most recently used first."""
    rows = db.session.scalars(
        select(Session)
        .where(Session.user_id == user.id, Session.revoked_at.is_(None), Session.expires_at > utcnow())
        .order_by(Session.last_used_at.desc())
    ).all()
    return [
        {
            "id": row.id,
            "created_at": row.created_at,
            "last_used_at": row.last_used_at,
            "user_agent": row.user_agent,
            "ip": row.ip,
            "current": row.id == current_sid,
        }
        for row in rows
    ]


def revoke_session(user: User, session_id: str) -> None:
    """Revoke one of the user's own live sessions. Raises NotFound."""
    try:
        sid = uuid.UUID(session_id)
    except ValueError:
        raise NotFound("No such session.") from None
    if sessions.revoke_sessions(user.id, Session.id == sid) != 1:
        raise NotFound("No such session.")
    audit.record("session_revoked", actor_id=user.id, target_id=user.id, session_id=str(sid))
    db.session.commit()

"""Checking and holding credentials: every password check counts against the account's throttle,
and a login's verdict is held against a concurrent password change.

Login, re-authentication (POST /me/password, DELETE /me, deleting one's own account through
/users) and the changes that must void sessions (password change, admin reset, deactivation)
meet here, so the rules are written once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import select, update

from app.errors import AccountBusy, AccountDisabled, InvalidCredentials
from app.extensions import db, execute_dml
from app.models import AuditEvent, User
from app.services import audit, passwords, throttle

# A batch's audit events are stamped when the batch is built and seen once it commits: look back
# far enough that a batch committed during the previous sample is not missed.
IMPORT_COMMIT_MARGIN = timedelta(minutes=10)


def subject(user: User | None, identifier: str) -> str:
    """The throttle subject: the account when it exists, else what was typed (throttled alike)."""
    return f"user:{user.id}" if user is not None else f"identifier:{identifier}"


def hold(user: User, verified_hash: str, password: str, needs_rehash: bool) -> bool:
    """Lock the user's row for the rest of the login, provided the password checked is still theirs.

    The hash was checked (~20 ms) without a lock. A password change, an admin reset or a
    deactivation that committed meanwhile must win: they lock this row before revoking
    sessions (lock below), so either this login's session exists by then and is
    revoked with the others, or this conditional write finds the new hash and the login is
    judged again against it. Returns whether the stored hash needs upgrading. Raises
    InvalidCredentials, AccountDisabled.
    """
    for _ in range(3):
        if _still_holds(user, verified_hash):
            return needs_rehash
        db.session.rollback()
        db.session.refresh(user)
        if not user.is_active:
            audit.record_now("login_failed", target_id=user.id, reason="account_disabled")
            raise AccountDisabled()
        verified_hash = user.password_hash
        matches, needs_rehash = passwords.verify_password(verified_hash, password)
        if not matches:
            audit.record_now("login_failed", target_id=user.id, reason="password_changed")
            raise InvalidCredentials()
    raise AccountBusy()


def _still_holds(user: User, verified_hash: str) -> bool:
    """Lock the user's row if it still holds `verified_hash` and is active; tell whether it did.

    A write that changes nothing: it takes the row lock (every database) and tells whether the
    row still holds the hash that was verified.
    """
    held = execute_dml(
        update(User)
        .where(User.id == user.id, User.password_hash == verified_hash, User.is_active.is_(True))
        .values(password_hash=User.password_hash, updated_at=User.updated_at)
        .execution_options(synchronize_session=False)
    )
    return held == 1


def hold_verified(user: User, verified_hash: str) -> bool:
    """hold() for a login whose password was verified in an earlier request (the two-step login).

    The password itself is gone by then, so a change that committed meanwhile cannot be judged
    again: the login fails instead (False). True: the row is locked until commit.
    """
    if _still_holds(user, verified_hash):
        return True
    db.session.rollback()
    return False


def require_password(user: User, password: str, *, settle: bool = True) -> None:
    """Raise InvalidCredentials unless `password` is the user's current password.

    Every re-authentication (POST /me/password, DELETE /me, deleting one's own account through
    /users, the /me/mfa endpoints) is a password check like a login, so it counts against the
    same per-account throttle (ASVS 2.2.1); the per-IP failure budget is shared with /login too
    (app/ratelimit.py). `settle=False` leaves the attempt counted as a failure for a caller that
    checks a second secret next and settles it (throttle.record_success) only when both were
    right: otherwise a known password would reset the count between guesses of a code.
    Raises TooManyAttempts while the account waits.
    """
    key = subject(user, "")
    stored = user.password_hash
    throttle.begin_attempt(key)
    release_connection()
    matches, _ = passwords.verify_password(stored, password)
    if not matches:
        audit.record_now("reauthentication_failed", actor_id=user.id, target_id=user.id)
        raise InvalidCredentials("The current password is incorrect.")
    if settle:
        throttle.record_success(key)


def release_connection() -> None:
    """End the read-only transaction so no pooled connection is held while a hash is computed.

    A hash takes ~20 ms and queues behind the others on the worker's hashing thread; a request
    holding its connection meanwhile would starve the pool (one connection fewer than threads,
    waits of at most DATABASE_POOL_TIMEOUT) and turn a burst of logins into 503s. Call it only
    when nothing is pending: loaded objects are expired and reload on their next use.

    It also keeps the failure floor of passwords.FailureTiming up to date: before an app's first
    check, and every minute after, a thread reads the stored hashes that are not in the current
    argon2id form and learns what checking each format costs.
    """
    db.session.commit()
    passwords.keep_calibrated(_foreign_hash_sample)


def _foreign_hash_sample(since: datetime | None, limit: int = 200) -> list[str] | None:
    """Up to `limit` stored hashes not in the current argon2id form (imported, or of older parameters).

    With `since` (the last sample found none), None unless an import wrote users after then:
    an indexed look at the audit trail instead of a scan of the users table every minute. Its
    own connection, outside the pool the requests share.
    """
    with _sampling_engine().connect() as connection:
        if since is not None:
            imported = connection.execute(
                select(AuditEvent.id)
                .where(AuditEvent.event == "user_imported", AuditEvent.created_at >= since - IMPORT_COMMIT_MARGIN)
                .limit(1)
            ).first()
            if imported is None:
                return None
        query = select(User.password_hash).where(~User.password_hash.startswith(passwords.current_prefix()))
        return list(connection.scalars(query.limit(limit)))


def _sampling_engine() -> sa.Engine:
    """An engine without a pool for _foreign_hash_sample (the database's own engine for in-memory SQLite)."""
    engine = current_app.extensions.get("hash_sampling_engine")
    if engine is None:
        url = db.engine.url
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            engine = db.engine
        else:
            options = current_app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=options.get("connect_args", {}))
        engine = current_app.extensions.setdefault("hash_sampling_engine", engine)
    return cast(sa.Engine, engine)


def lock(user: User) -> None:
    """Hold the user's row until commit, before a change that must void the sessions opened so far.

    The other half of hold(): a login that verified the old password either holds this lock
    first (then its session exists when the sessions are revoked) or waits for the change and
    finds the new hash. SQLite takes no row locks, but serializes its writers.
    """
    db.session.execute(select(User.id).where(User.id == user.id).with_for_update())

"""Per-account throttling of secret checks: growing delays after repeated failures, never a lockout.

NIST 800-63B 5.2.2 / ASVS 2.2.1: after LOGIN_FREE_FAILURES failed attempts on one account,
each further failure makes the next attempt wait 1, 2, 4, … seconds, up to LOGIN_MAX_DELAY;
the count is forgotten LOGIN_FAILURE_WINDOW seconds after the first failure, or on success.
An unknown account is throttled exactly like a real one, so a 429 tells nothing about
existence. Every place that checks a password (login, /me/password, deleting one's account)
counts against the same budget.

The counts live in the database (table login_throttle): it is the one store every worker and
every instance shares, so the budget is the documented one however the service is scaled.
An attempt is counted *before* its secret is checked, in one short transaction that locks
the account's row: parallel guesses queue on that row, and once the free attempts are used
the next one is refused before any hash is computed. A success clears the count.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite

from app.errors import TooManyAttempts
from app.extensions import db, execute_dml
from app.models import LoginThrottle, utcnow

_TABLE = LoginThrottle.__table__


def subject_key(subject: str) -> str:
    """The row key of a subject (`user:<id>` or `identifier:<email or username>`): a digest, never the text."""
    return hashlib.sha256(subject.encode()).hexdigest()


def _enabled() -> bool:
    return bool(current_app.config["LOGIN_THROTTLE_ENABLED"])


def begin_attempt(subject: str) -> None:
    """Count an attempt on `subject` before its secret is checked; raise TooManyAttempts while it must wait.

    Commits the session at once, so every other worker sees the count before this request
    spends ~20 ms on the hash: call it before the request changes anything. (The session's own
    connection, not a second one: a request never needs two pooled connections, which could
    starve the pool under load.) A database failure propagates (the caller answers 503): an
    unthrottled secret check is never the fallback.
    """
    if not _enabled():
        return
    config = current_app.config
    key = subject_key(subject)
    session = db.session
    try:
        _lock_row(key, utcnow())
        # The clock is read once the row is ours: time spent queueing behind other attempts
        # must not count against the delay the previous attempt started.
        now = utcnow()
        row = session.execute(
            select(_TABLE.c.failures, _TABLE.c.window_ends_at, _TABLE.c.blocked_until)
            .where(_TABLE.c.key == key)
            .with_for_update()
        ).one()
        failures, window_ends_at, blocked_until = row.failures, row.window_ends_at, row.blocked_until
        if window_ends_at <= now:
            failures, window_ends_at = 0, now + timedelta(seconds=config["LOGIN_FAILURE_WINDOW"])
        if failures and blocked_until is not None and blocked_until > now:
            raise TooManyAttempts(math.ceil((blocked_until - now).total_seconds()))
        failures += 1  # counted as a failure until the secret proves right (record_success)
        free = config["LOGIN_FREE_FAILURES"]
        if failures >= free:
            blocked_until = now + timedelta(seconds=min(2 ** (failures - free), config["LOGIN_MAX_DELAY"]))
        else:
            blocked_until = None
        session.execute(
            update(_TABLE)
            .where(_TABLE.c.key == key)
            .values(failures=failures, window_ends_at=window_ends_at, blocked_until=blocked_until)
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise


def record_success(subject: str) -> None:
    """The secret was right: forget the subject's failures (and the delay its attempt started); commits."""
    if not _enabled():
        return
    db.session.execute(delete(_TABLE).where(_TABLE.c.key == subject_key(subject)))
    db.session.commit()


def clear(subject: str) -> None:
    """Forget a subject's failures (e.g. after a completed password reset)."""
    record_success(subject)


def purge_expired(now: datetime | None = None) -> int:
    """Delete counts whose window and delay are both over; commits; return how many."""
    now = now or utcnow()
    deleted = execute_dml(
        delete(_TABLE).where(
            _TABLE.c.window_ends_at < now, (_TABLE.c.blocked_until.is_(None)) | (_TABLE.c.blocked_until < now)
        )
    )
    db.session.commit()
    return deleted


def _lock_row(key: str, now: datetime) -> None:
    """Make sure the subject's row exists and hold its write lock until the transaction ends.

    An upsert that *updates* on conflict locks the existing row on every database (PostgreSQL's
    DO NOTHING and MySQL's INSERT IGNORE would not, and a later FOR UPDATE could deadlock).
    SQLite serializes writers anyway.
    """
    values = {"key": key, "failures": 0, "window_ends_at": now, "blocked_until": None}
    dialect = db.session.get_bind().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(_TABLE).values(values)
        statement = statement.on_conflict_do_update(index_elements=[_TABLE.c.key], set_={"key": statement.excluded.key})
    elif dialect == "mysql":
        statement = mysql.insert(_TABLE).values(values)
        statement = statement.on_duplicate_key_update(key=statement.inserted.key)
    else:
        statement = sqlite.insert(_TABLE).values(values)
        statement = statement.on_conflict_do_update(index_elements=[_TABLE.c.key], set_={"key": statement.excluded.key})
    db.session.execute(statement)

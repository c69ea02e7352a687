"""Events for other services: CloudEvents 1.0 documents written to the outbox with their change.

The services that make a change say what happened (user(), user_created_row(), deleted(),
sessions_revoked()); nothing is written yet. When the transaction commits, the `before_commit`
hook below flushes the change, locks the users concerned and adds one outbox row (kind
"event") per event, serialised from the state being committed: the event exists exactly when
its change does, and a rollback leaves none (the pending list is dropped with it).
app/services/relay.py publishes the rows to RabbitMQ.

Order: each subject's rows are inserted while its users row is locked (the UPDATE of the change,
or the FOR UPDATE here), so one user's events get outbox ids in commit order, and the relay
publishes them in id order.

Without EVENTS_AMQP_URL nothing is recorded (docs/CONTRACT.md: unset, no events).

What goes out: the `user` object exactly as the API shows it (app/schemas/common.py
UserSchema: never a password hash or anything derived from it), only the id for a deletion,
and user_id/session_id/reason for a revoked session. Never a token, a hash or a secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from app.extensions import db
from app.models import User
from app.services import outbox

EVENT = outbox.EVENT
PREFIX = "auth."
CREATED = "auth.user.created"
UPDATED = "auth.user.updated"
EMAIL_VERIFIED = "auth.user.email_verified"
PASSWORD_CHANGED = "auth.user.password_changed"
DEACTIVATED = "auth.user.deactivated"
REACTIVATED = "auth.user.reactivated"
DELETED = "auth.user.deleted"
SESSION_REVOKED = "auth.session.revoked"
TYPES = (CREATED, UPDATED, EMAIL_VERIFIED, PASSWORD_CHANGED, DEACTIVATED, REACTIVATED, DELETED, SESSION_REVOKED)

# Why sessions end (data.reason of auth.session.revoked); docs/CONTRACT.md lists them.
REASONS = (
    "logout",  # POST /logout
    "logout_all",  # POST /logout with all: true
    "token_reused",  # a spent refresh token came back: the session is treated as stolen
    "user_revoked",  # DELETE /me/sessions/{id}
    "admin_revoked",  # an admin ending a user's sessions in the admin console
    "password_changed",  # POST /me/password (every other session)
    "password_reset",  # POST /password/reset, or an admin setting the password
    "deactivated",  # an admin (or an import) deactivating the account
    "imported",  # an import replacing the password hash
    "user_deleted",  # the account deleted (DELETE /me, DELETE /users/{id}, the console), before auth.user.deleted
)

_KEY = "auth_events"


def enabled() -> bool:
    """Events are written only where a broker is configured (EVENTS_AMQP_URL)."""
    return has_app_context() and bool(current_app.config.get("EVENTS_AMQP_URL"))


def routing_key(event_type: str) -> str:
    """The AMQP routing key of a type: the type without `auth.` (`user.deleted`)."""
    return event_type[len(PREFIX) :] if event_type.startswith(PREFIX) else event_type


def _pending(session: OrmSession) -> list[tuple[str, uuid.UUID, Any]]:
    """This transaction's events, in the order they were said: (type, subject, data or a user)."""
    pending: list[tuple[str, uuid.UUID, Any]] = session.info.setdefault(_KEY, [])
    return pending


def user(event_type: str, target: User) -> None:
    """`target` was created/updated/…: an event with its state as committed; the caller commits.

    Said twice in one transaction, one event is written (the state is the committed one anyway).
    """
    if not enabled():
        return
    pending = _pending(db.session())
    if not any(kind == event_type and subject == target.id for kind, subject, _ in pending):
        pending.append((event_type, target.id, target))


def user_created_row(row: dict[str, Any]) -> None:
    """auth.user.created for an account inserted as a row (the import's Core INSERT); the caller commits."""
    if enabled():
        _pending(db.session()).append((CREATED, row["id"], {"pending_email": None, **row}))


def deleted(user_id: uuid.UUID) -> None:
    """auth.user.deleted: `data` is only the id; the caller commits."""
    if enabled():
        _pending(db.session()).append((DELETED, user_id, {"id": str(user_id)}))


def sessions_revoked(user_id: uuid.UUID, session_ids: Iterable[uuid.UUID], reason: str) -> None:
    """One auth.session.revoked per session; the caller commits."""
    if reason not in REASONS:
        raise ValueError(f"unknown session revocation reason {reason!r}")
    if not enabled():
        return
    pending = _pending(db.session())
    for sid in session_ids:
        pending.append((SESSION_REVOKED, user_id, {"user_id": str(user_id), "session_id": str(sid), "reason": reason}))


def cloudevent(
    event_type: str, subject: uuid.UUID, data: dict[str, Any], *, now: datetime | None = None
) -> dict[str, Any]:
    """A CloudEvents 1.0 structured-mode document (https://github.com/cloudevents/spec, v1.0.2).

    `id` is fixed here, once: every redelivery carries the same one, which is what consumers
    deduplicate by.
    """
    now = now or datetime.now(UTC)
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": current_app.config["JWT_ISSUER"],
        "type": event_type,
        "time": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "subject": str(subject),
        "datacontenttype": "application/json",
        "data": data,
    }


def user_data(target: User | dict[str, Any]) -> dict[str, Any]:
    """The `user` object as the API serialises it."""
    from app.schemas.common import UserSchema

    dumped: dict[str, Any] = UserSchema().dump(target)
    return dumped


def _lock_subjects(session: OrmSession, subjects: set[uuid.UUID]) -> None:
    """Hold the users rows until commit, so one user's outbox ids follow commit order."""
    if session.get_bind().dialect.name in ("postgresql", "mysql"):
        session.execute(select(User.id).where(User.id.in_(sorted(subjects))).order_by(User.id).with_for_update())


def _write(session: OrmSession) -> None:
    """before_commit: turn the pending events into outbox rows of this transaction."""
    pending = session.info.pop(_KEY, None)
    if not pending:
        return
    session.flush()  # the change itself first: its UPDATE takes the row lock, its onupdate stamps
    _lock_subjects(session, {subject for _, subject, _ in pending})
    now = datetime.now(UTC)
    for event_type, subject, data in pending:
        body = user_data(data) if isinstance(data, User) or "email" in data else data
        document = cloudevent(event_type, subject, body, now=now)
        outbox.enqueue(EVENT, event_type, document, aggregate_id=subject, session=session)


def _drop(session: OrmSession, *_: Any) -> None:
    """A rollback: the change is gone, and so are its events."""
    session.info.pop(_KEY, None)


sa_event.listen(OrmSession, "before_commit", _write)
sa_event.listen(OrmSession, "after_soft_rollback", _drop)

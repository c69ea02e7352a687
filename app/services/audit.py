"""The audit trail (ASVS 7.1/7.2): record security events in the same transaction as the change.

The controller layer states where a request comes from (set_origin); services record events
with the actor and target they know. Details never hold passwords, tokens or hashes, and a
failed login for an unknown account does not record what was typed (it may be a password).
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select

from app import observability
from app.extensions import db, execute_dml
from app.models import AuditEvent, utcnow
from app.models.audit import EVENTS
from app.services import pages

_origin: ContextVar[tuple[str | None, str | None]] = ContextVar("audit_origin", default=(None, None))


def set_origin(*, ip: str | None, user_agent: str | None) -> None:
    """Remember where the current request comes from (called once per request by the controllers)."""
    _origin.set((ip, (user_agent or "")[:255] or None))


def record(
    event: str, *, actor_id: uuid.UUID | None = None, target_id: uuid.UUID | None = None, **details: Any
) -> None:
    """Add an event to the current transaction; the caller commits with the change it records."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    ip, user_agent = _origin.get()
    observability.count_event(event)
    db.session.add(
        AuditEvent(
            event=event,
            actor_id=actor_id,
            target_id=target_id,
            ip=ip,
            user_agent=user_agent,
            created_at=utcnow(),
            details=details or None,
        )
    )


def record_many(event: str, entries: list[tuple[uuid.UUID, dict[str, Any]]]) -> None:
    """Add one event per (target id, details) to the current transaction in one statement (the import's batches)."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    ip, user_agent = _origin.get()
    now = utcnow()
    rows = [
        {"event": event, "actor_id": None, "target_id": target_id, "ip": ip, "user_agent": user_agent,
         "created_at": now, "details": details or None}
        for target_id, details in entries
    ]  # fmt: skip
    if rows:
        db.session.execute(insert(AuditEvent), rows)


def record_now(event: str, **kwargs: Any) -> None:
    """Record and commit at once: for failures, where no other change will be committed."""
    db.session.rollback()
    record(event, **kwargs)
    db.session.commit()


def list_events(*, page: int, per_page: int, user_id: uuid.UUID | None = None, event: str | None = None) -> pages.Page:
    """A page of events, newest first, filtered by a user (as actor or target) and an event name."""
    query = select(AuditEvent)
    if user_id is not None:
        query = query.where(or_(AuditEvent.actor_id == user_id, AuditEvent.target_id == user_id))
    if event is not None:
        query = query.where(AuditEvent.event == event)
    return pages.page_of(query, AuditEvent.created_at.desc(), AuditEvent.id.desc(), page=page, per_page=per_page)


def purge(*, older_than_days: int) -> int:
    """Delete events older than the given number of days; commits; return how many."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    deleted = execute_dml(delete(AuditEvent).where(AuditEvent.created_at < cutoff))
    db.session.commit()
    return deleted

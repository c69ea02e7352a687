"""The transactional outbox: messages for other systems (mail first, events later), written in
the transaction of the change that causes them and delivered by `flask outbox run`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

PENDING, SENT, DEAD = "pending", "sent", "dead"


class OutboxMessage(Base):
    """One message to deliver: what kind (the handler), its topic, a JSON payload and its delivery state.

    A message is claimed by writing `claim_id` and `claimed_until` (a lease): a worker that dies
    holding it loses it when the lease ends and another takes it, so a crash delays, never
    loses. `aggregate_id` (the user) orders one subject's messages for kinds that need it.
    `last_error` never holds a secret (app/services/outbox.py scrubs it).
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str] = mapped_column(String(100))
    aggregate_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claim_id: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))

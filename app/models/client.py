"""A service client: another service that authenticates as itself (RFC 6749 client credentials)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class Client(Base):
    """One client: its public id (the row's UUID), its name, and a hash of its one current secret."""

    __tablename__ = "clients"

    # The client_id clients send (RFC 6749 2.2): public, unique, and the key its tokens are
    # invalidated by in every worker's revocation view (app/services/revocation_view.py).
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # HMAC-SHA256 of the secret (hex); the secret itself is shown once and never stored.
    secret_hash: Mapped[str] = mapped_column(String(64))
    # Goes up by one on every rotation; tokens carry the version they were issued under (`cv`).
    secret_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

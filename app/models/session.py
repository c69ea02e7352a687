"""A login session: one refresh-token family."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class Session(Base):
    """One login: the refresh family, the jti of its one unspent refresh token, and its metadata."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Only the jti is kept, never the token itself (DESIGN: refresh tokens are never stored in clear).
    refresh_jti: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The expiry of the newest refresh token: no token of this session outlives it.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    user_agent: Mapped[str | None] = mapped_column(String(255))
    ip: Mapped[str | None] = mapped_column(String(45))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How the login proved itself (RFC 8176 values, comma-separated: "pwd" or "pwd,otp"): every
    # access token of the session carries it as `amr`, refreshed ones too.
    amr: Mapped[str] = mapped_column(String(32), default="pwd", server_default="pwd")

"""Single-use tokens sent by mail: password reset, email verification, email change."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

PASSWORD_RESET, EMAIL_VERIFY, EMAIL_CHANGE = "password_reset", "email_verify", "email_change"


class AccountToken(Base):
    """One token mailed to a user, kept only as its SHA-256 digest (ASVS 2.5.x: never in clear).

    Bound to its purpose, to the address it was mailed to, and to the password it was issued
    under (`password_fingerprint`, a digest of the password hash): a password change voids it.
    `used_at` is set when it is spent, or when a newer token of the same purpose voids it.
    """

    __tablename__ = "account_tokens"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    email: Mapped[str] = mapped_column(String(254))
    password_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

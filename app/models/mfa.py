"""The second factor: a user's TOTP secret, their recovery codes, and pending two-step logins."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class TotpCredential(Base):
    """One user's TOTP secret: pending until confirmed with a first code, then the second factor."""

    __tablename__ = "mfa_totp"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # Fernet ciphertext under ENCRYPTION_KEY (app/services/secretbox.py), never the seed in clear.
    secret: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last RFC 6238 time step accepted: only a later one is (RFC 6238 5.2, no replay).
    last_step: Mapped[int | None] = mapped_column(BigInteger)


class RecoveryCode(Base):
    """One single-use recovery code: a lookup id in clear and argon2 of its secret part (NIST 800-63B 5.1.2.2)."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "lookup", name="uq_mfa_recovery_codes_user_id_lookup"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    lookup: Mapped[str] = mapped_column(String(8))
    secret_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MfaChallenge(Base):
    """A login whose password was right and whose second factor is awaited (the `mfa_token`)."""

    __tablename__ = "mfa_challenges"

    # SHA-256 of the mfa_token: 256 random bits need no slow hash, and the table never holds a usable token.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the password hash the login verified: a password change voids the challenge.
    password_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

"""The user account."""

from __future__ import annotations

import uuid
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, CheckConstraint, String, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

USER, ADMIN = "user", "admin"
ROLES = (USER, ADMIN)


class User(UserMixin, Base):
    """An account: identity, credentials, role and the cut-off before which its tokens are void."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('user', 'admin')", name="role"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Stored normalized (trimmed, lower-cased), so the unique constraint is case-insensitive.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    username: Mapped[str | None] = mapped_column(String(32))
    # Lower-cased copy of username: uniqueness is case-insensitive on every database.
    username_key: Mapped[str | None] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    # A new address asked for through PATCH /me, until its confirmation link is followed.
    pending_email: Mapped[str | None] = mapped_column(String(254))
    # A confirmed second factor (app/services/mfa.py). On the row itself so that /login learns it
    # from the user it loads anyway: no extra query for the accounts without one.
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Tokens issued before this instant are void (password reset by an admin, deactivation).
    tokens_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def get_id(self) -> str:
        """Flask-Login's identifier: the user id as a string."""
        return str(self.id)

    @property
    def roles(self) -> list[str]:
        """The roles claim: a user has exactly one role."""
        return [self.role]

    def __repr__(self) -> str:
        """Never include the password hash."""
        return f"<User {self.id} {self.role}>"

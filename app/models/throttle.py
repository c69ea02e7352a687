"""Failed-attempt counts per account: the state behind the login throttle."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime


class LoginThrottle(Base):
    """One account's (or unknown identifier's) recent failures and when its next attempt may come.

    Kept in the database, the one store every worker and instance shares, so the documented
    budget holds however the service is scaled (ASVS 2.2.1). `key` is a digest of the subject,
    never the identifier in clear.
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    # The count is forgotten at this instant (LOGIN_FAILURE_WINDOW after the first failure).
    window_ends_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # No attempt is admitted before this instant.
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

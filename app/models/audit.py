"""The audit trail: who did what to whom, from where, when. Never a secret."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

# The events the trail records (the `event` column), the one list the service and the API's filter share.
EVENTS = (
    "signup",
    "login_succeeded",
    "login_failed",
    "login_throttled",
    "reauthentication_failed",
    "logout",
    "refresh_reuse_detected",
    "password_changed",
    "password_reset",
    "profile_updated",
    "role_changed",
    "user_activated",
    "user_deactivated",
    "user_created",
    "user_deleted",
    "account_deleted",
    "session_revoked",
    "admin_created",
    "admin_promoted",
    "password_reset_requested",
    "password_reset_completed",
    "email_verification_sent",
    "email_verified",
    "email_change_requested",
    "email_changed",
    "mfa_enrolment_started",
    "mfa_enabled",
    "mfa_disabled",
    "mfa_removed_by_admin",
    "mfa_challenge_issued",
    "mfa_failed",
    "recovery_code_used",
    "recovery_codes_regenerated",
    "user_imported",
    "users_imported",
    "users_exported",
    # Service clients (app/services/clients.py): the CLI's changes, each token issued, each failed authentication.
    "client_created",
    "client_rotated",
    "client_deleted",
    "client_token_issued",
    "client_auth_failed",
)


class AuditEvent(Base):
    """One security-relevant event. Actor and target are plain ids: the trail outlives the accounts."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(40), index=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    target_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

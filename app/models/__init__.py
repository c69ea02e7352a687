"""The SQLAlchemy models; importing this package registers every table on the metadata."""

from app.models.account_token import AccountToken
from app.models.audit import AuditEvent
from app.models.base import Base, UTCDateTime, utcnow
from app.models.client import Client
from app.models.mfa import MfaChallenge, RecoveryCode, TotpCredential
from app.models.outbox import OutboxMessage
from app.models.revocation import RevokedToken
from app.models.session import Session
from app.models.throttle import LoginThrottle
from app.models.user import ADMIN, ROLES, USER, User

__all__ = [
    "ADMIN",
    "ROLES",
    "USER",
    "AccountToken",
    "AuditEvent",
    "Base",
    "Client",
    "LoginThrottle",
    "MfaChallenge",
    "OutboxMessage",
    "RecoveryCode",
    "RevokedToken",
    "Session",
    "TotpCredential",
    "UTCDateTime",
    "User",
    "utcnow",
]

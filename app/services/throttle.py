"""Per-account login throttling: growing delays after repeated failures, never a permanent lockout.

NIST 800-63B 5.2.2 / ASVS 2.2.1: after LOGIN_FREE_FAILURES failed attempts on one account,
each further failure makes the next attempt wait 1, 2, 4, … seconds, up to LOGIN_MAX_DELAY;
the count is forgotten LOGIN_FAILURE_WINDOW seconds after the first failure, or on success.
An unknown account is throttled exactly like a real one, so a 429 tells nothing about
existence. Counts live in Redis when REDIS_URL is set (shared by every worker and instance).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from flask import Flask, current_app
from limits.storage import Storage, storage_from_string

from app.errors import AppError

log = logging.getLogger(__name__)


class TooManyAttempts(AppError):
    """Too many failed logins for this account; try again after Retry-After seconds."""

    status = 429
    code = "too_many_attempts"
    detail = "Too many failed attempts for this account; try again later."

    def __init__(self, retry_after: int) -> None:
        """Say when to come back."""
        super().__init__(headers={"Retry-After": str(max(1, retry_after))})


def init_throttle(app: Flask) -> None:
    """Give the app its throttle storage (Redis when REDIS_URL is set, else in-process)."""
    app.extensions["login_throttle"] = storage_from_string(app.config["REDIS_URL"] or "memory://")


def _storage() -> Storage | None:
    """The current app's storage, or None when throttling is off."""
    if not current_app.config["LOGIN_THROTTLE_ENABLED"]:
        return None
    return current_app.extensions["login_throttle"]


def _keys(subject: str) -> tuple[str, str]:
    """Storage keys for one account; identifiers are hashed, never kept in clear."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    prefix = current_app.config["RATELIMIT_KEY_PREFIX"]
    return f"{prefix}:login-failures:{digest}", f"{prefix}:login-blocked:{digest}"


def ensure_allowed(subject: str) -> None:
    """Raise TooManyAttempts while the account is in a delay. A storage outage lets the login through."""
    storage = _storage()
    if storage is None:
        return
    _, blocked = _keys(subject)
    try:
        if storage.get(blocked) > 0:
            raise TooManyAttempts(math.ceil(storage.get_expiry(blocked) - time.time()))
    except TooManyAttempts:
        raise
    except Exception:  # the per-IP limits still apply; availability beats a hard failure here
        log.warning("login throttle storage unavailable; not throttling", exc_info=True)


def record_failure(subject: str) -> None:
    """Count a failed login; past the free attempts, start the next delay."""
    storage = _storage()
    if storage is None:
        return
    config = current_app.config
    failures, blocked = _keys(subject)
    try:
        count = storage.incr(failures, config["LOGIN_FAILURE_WINDOW"])
        if count >= config["LOGIN_FREE_FAILURES"]:
            delay = min(2 ** (count - config["LOGIN_FREE_FAILURES"]), config["LOGIN_MAX_DELAY"])
            storage.clear(blocked)
            storage.incr(blocked, delay)
    except Exception:
        log.warning("login throttle storage unavailable; failure not counted", exc_info=True)


def record_success(subject: str) -> None:
    """A successful login clears the account's failures."""
    storage = _storage()
    if storage is None:
        return
    failures, blocked = _keys(subject)
    try:
        storage.clear(failures)
        storage.clear(blocked)
    except Exception:
        log.warning("login throttle storage unavailable", exc_info=True)

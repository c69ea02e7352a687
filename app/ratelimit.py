"""Per-IP rate limits (Flask-Limiter) on the endpoints worth abusing.

One Limiter per app (its state is per instance), with storage in Redis when REDIS_URL is set,
so every worker and instance shares the counts; in-process otherwise. Each limited endpoint
has a ceiling on all requests and, where failures are the signal (credential stuffing, account
enumeration, token guessing), a tighter budget that only failed answers use up
(ASVS 2.2.1, NIST 800-63B 5.2.2).
"""

from __future__ import annotations

import math
import time

from flask import Flask, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.errors import AppError

FAILURE_STATUSES = frozenset({401, 403, 409})
# A wrong second factor is a 400 (invalid input, API.md) but a failed secret check all the same.
FAILED_SECRET_CODES = frozenset({"invalid_mfa_code"})
# A 401 that is no failure: the password was right and the second factor is asked for next.
NOT_FAILURES = frozenset({"mfa_required"})

# endpoint → (config key of the limit on every request, config key of the failure budget)
LIMITED_ENDPOINTS = {
    "auth.login": ("RATELIMIT_LOGIN", None),
    "auth.login_mfa": ("RATELIMIT_LOGIN", None),
    "auth.signup": ("RATELIMIT_SIGNUP", "RATELIMIT_SIGNUP_FAILURES"),
    "auth.refresh": ("RATELIMIT_REFRESH", "RATELIMIT_REFRESH_FAILURES"),
}
# Every endpoint that checks a password spends one per-IP failure budget (RATELIMIT_LOGIN_FAILURES):
# a stolen access token must not turn /me/password or DELETE /me into a faster password oracle
# than /login (ASVS 2.2.1). The endpoints that check a second factor spend it too.
PASSWORD_CHECKS = (
    "auth.login",
    "auth.login_mfa",
    "me.change_password",
    "me.delete_me",
    "users.delete_user",
    "mfa.enrol",
    "mfa.confirm",
    "mfa.disable",
    "mfa.regenerate_codes",
)


def _failed(response) -> bool:
    """Whether a response counts against a failure budget (the problem's code, set by app/errors.py)."""
    code = g.get("problem_code")
    if code in NOT_FAILURES:
        return False
    return response.status_code in FAILURE_STATUSES or code in FAILED_SECRET_CODES


def init_rate_limits(app: Flask) -> Limiter:
    """Make the app's Limiter and wrap the limited views with their limits."""
    config = app.config
    config.setdefault("RATELIMIT_STORAGE_URI", config["REDIS_URL"] or "memory://")
    limiter = Limiter(
        key_func=get_remote_address,  # REMOTE_ADDR, rewritten only for TRUSTED_PROXIES (app/proxy.py)
        app=app,
        headers_enabled=True,
        strategy="fixed-window",
        key_prefix=config["RATELIMIT_KEY_PREFIX"],
        # Redis down: count in-process rather than refuse every login.
        in_memory_fallback_enabled=True,
    )
    credential_failures = limiter.shared_limit(
        config["RATELIMIT_LOGIN_FAILURES"], scope="password-failures", deduct_when=_failed
    )
    for endpoint in PASSWORD_CHECKS:
        app.view_functions[endpoint] = credential_failures(app.view_functions[endpoint])
    for endpoint, (limit_key, failures_key) in LIMITED_ENDPOINTS.items():
        view = app.view_functions[endpoint]
        if failures_key:
            view = limiter.limit(config[failures_key], deduct_when=_failed, scope=f"{endpoint}:failures")(view)
        view = limiter.limit(config[limit_key], scope=endpoint)(view)
        app.view_functions[endpoint] = view
    app.extensions["auth_limiter"] = limiter
    app.extensions["checktoken_limit"] = AddressLimit(
        "checktoken",
        config["RATELIMIT_CHECKTOKEN"],
        storage_uri=config["RATELIMIT_STORAGE_URI"],
        prefix=config["RATELIMIT_KEY_PREFIX"],
        enabled=config["RATELIMIT_ENABLED"],
    )
    return limiter


class RateLimited(AppError):
    """Too many requests from this address."""

    status = 429
    code = "rate_limited"
    detail = "Too many requests; slow down."

    def __init__(self, retry_after: int) -> None:
        """Say when to come back."""
        super().__init__(headers={"Retry-After": str(max(1, retry_after))})


class AddressLimit:
    """A per-address limit checked with `limits` itself (Flask-Limiter's engine), for /checkToken.

    /checkToken is answered by the hot path (app/hotpath.py) without Flask's request machinery,
    so its limit cannot ride on Flask-Limiter's hooks; this one object serves both that path and
    the Flask view, with the same storage (Redis when REDIS_URL is set) and the same budget.
    """

    def __init__(self, name: str, limits: str, *, storage_uri: str, prefix: str, enabled: bool) -> None:
        """Parse the limits and open the storage."""
        self.name = f"{prefix}:{name}"
        self.items: list[RateLimitItem] = parse_many(limits)
        self.enabled = enabled
        self.strategy = FixedWindowRateLimiter(storage_from_string(storage_uri)) if enabled else None

    def retry_after(self, address: str | None) -> int | None:
        """Count a request from `address`; None if allowed, else seconds until it would be."""
        if self.strategy is None:
            return None
        key = address or "unknown"
        for item in self.items:
            if not self.strategy.hit(item, self.name, key):
                reset = self.strategy.get_window_stats(item, self.name, key).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def check(self, address: str | None) -> None:
        """Raise RateLimited when over the limit."""
        wait = self.retry_after(address)
        if wait is not None:
            raise RateLimited(wait)

"""Per-IP rate limits (Flask-Limiter) on the endpoints worth abusing.

One Limiter per app (its state is per instance), with storage in Redis when REDIS_URL is set,
so every worker and instance shares the counts; in-process otherwise. Each limited endpoint
has a ceiling on all requests and, where failures are the signal (credential stuffing, account
enumeration, token guessing), a tighter budget that only failed answers use up
(ASVS 2.2.1, NIST 800-63B 5.2.2).
"""

from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

FAILURE_STATUSES = frozenset({401, 403, 409})

# endpoint → (config key of the limit on every request, config key of the failure budget)
LIMITED_ENDPOINTS = {
    "auth.login": ("RATELIMIT_LOGIN", "RATELIMIT_LOGIN_FAILURES"),
    "auth.signup": ("RATELIMIT_SIGNUP", "RATELIMIT_SIGNUP_FAILURES"),
    "auth.refresh": ("RATELIMIT_REFRESH", "RATELIMIT_REFRESH_FAILURES"),
    "auth.check_token": ("RATELIMIT_CHECKTOKEN", None),
}


def _failed(response) -> bool:
    """Whether a response counts against a failure budget."""
    return response.status_code in FAILURE_STATUSES


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
    for endpoint, (limit_key, failures_key) in LIMITED_ENDPOINTS.items():
        view = app.view_functions[endpoint]
        if failures_key:
            view = limiter.limit(config[failures_key], deduct_when=_failed, scope=f"{endpoint}:failures")(view)
        view = limiter.limit(config[limit_key], scope=endpoint)(view)
        app.view_functions[endpoint] = view
    app.extensions["auth_limiter"] = limiter
    return limiter

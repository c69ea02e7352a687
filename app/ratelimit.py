"""Per-IP rate limits (Flask-Limiter) on the endpoints worth abusing.

One Limiter per app (its state is per instance), with storage in Redis when REDIS_URL is set,
so every worker and instance shares the counts; in-process otherwise. Each limited endpoint
has a ceiling on all requests and, where failures are the signal (credential stuffing, account
enumeration, token guessing), a tighter budget that only failed answers use up
(ASVS 2.2.1, NIST 800-63B 5.2.2).

Redis down: every limit counts in-process until Redis answers again (the same budgets, per
worker), so an outage of the limit storage never refuses a request. StorageFallback says so
once per outage and per process, and keeps the auth_rate_limit_storage_fallback gauge at 1
meanwhile. An answer of 500 or more (a database outage) uses up no budget: the caller did
nothing wrong, and must not find every login refused once the database is back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.errors import RateLimited
from app.observability import RATE_LIMIT_FALLBACK

log = logging.getLogger(__name__)
RECHECK_SECONDS = 1.0  # while in fallback, ask the storage at most this often whether it is back
# Leases (AddressLimit): a worker takes several hits of a large limit from the shared storage at
# once and spends them locally for at most LEASE_SECONDS. A lease is at most one hit in
# LEASE_PER_HITS of the limit, so a small limit (under 2,000 a window) is counted one request at a
# time, exactly. The first lease of an address is LEASE_START hits; one spent before it ended is
# followed by one twice its size (the address sends faster than its lease lasts), one that ended
# with hits left by one half its size, never below LEASE_START: the storage is asked about once a
# second per worker and address however fast they send (issue 10, bench/PROFILE.md).
LEASE_START = 20
LEASE_PER_HITS = 1000
LEASE_SECONDS = 1.0
LEASES_KEPT = 10_000  # addresses with a lease, per limit and worker, before expired ones are dropped
BLOCKS_KEPT = 10_000  # addresses this worker knows blocked (AddressLimit.spend), per limit, likewise

FAILURE_STATUSES = frozenset({401, 403, 409})
# A wrong second factor is a 400 (invalid input, docs/CONTRACT.md) but a failed secret check all the same.
FAILED_SECRET_CODES = frozenset({"invalid_mfa_code"})
# A 401 that is no failure: the password was right and the second factor is asked for next.
NOT_FAILURES = frozenset({"mfa_required"})

# endpoint → (config key of the limit on every request, config key of the failure budget)
LIMITED_ENDPOINTS = {
    "auth.login": ("RATELIMIT_LOGIN", None),
    "auth.login_mfa": ("RATELIMIT_LOGIN", None),
    "auth.signup": ("RATELIMIT_SIGNUP", "RATELIMIT_SIGNUP_FAILURES"),
    "auth.refresh": ("RATELIMIT_REFRESH", "RATELIMIT_REFRESH_FAILURES"),
    "oauth.token": ("RATELIMIT_OAUTH_TOKEN", None),
    # Mail endpoints: a ceiling per IP; the per-address budget of mails is mail_address_limit below.
    "recovery.forgot_password": ("RATELIMIT_PASSWORD_FORGOT", None),
    "recovery.reset_password": ("RATELIMIT_PASSWORD_RESET", None),
    "recovery.verify_email": ("RATELIMIT_EMAIL_VERIFY", None),
    "recovery.send_verification": ("RATELIMIT_PASSWORD_FORGOT", None),
    # The admin console's sign-in (app/console/): the login's budgets, the same per-account throttle.
    "console.sign_in": ("RATELIMIT_LOGIN", None),
    "console.sign_in_code": ("RATELIMIT_LOGIN", None),
}
# Endpoints that exist only when their part is on (ADMIN_CONSOLE).
OPTIONAL_ENDPOINTS = frozenset({"console.sign_in", "console.sign_in_code"})
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
    # A client secret is a credential too: its wrong guesses spend the same budget (app/api/oauth.py).
    # /introspect's too, counted after the check instead (the hot path: app/services/introspection.py).
    "oauth.token",
    "console.sign_in",
    "console.sign_in_code",
)


def _failed(response) -> bool:
    """Whether a response counts against a failure budget (the problem's code, set by app/errors.py)."""
    code = g.get("problem_code")
    if code in NOT_FAILURES:
        return False
    return response.status_code in FAILURE_STATUSES or code in FAILED_SECRET_CODES


def _answered(response) -> bool:
    """Whether a response counts against the ceiling: not when the service itself failed (5xx)."""
    return response.status_code < 500


def storage_options(uri: str, timeout: float) -> dict[str, Any]:
    """Socket timeouts for a Redis storage, so a hung Redis costs a request `timeout`, not forever."""
    if uri.startswith(("redis", "valkey")):
        return {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    return {}


class StorageFallback:
    """The state of one process's limit storage: one line when it fails, one when it is back."""

    def __init__(self, name: str) -> None:
        """Start healthy."""
        self.name = name
        self.since: float | None = None
        self.lock = threading.Lock()
        self.gauge = RATE_LIMIT_FALLBACK.labels(name)
        self.gauge.set(0)

    @property
    def active(self) -> bool:
        """Whether this limiter counts in-process now."""
        return self.since is not None

    def failed(self, error: BaseException | None = None) -> None:
        """The storage failed: count in-process; log once per outage."""
        with self.lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
        self.gauge.set(1)
        cause = type(error).__name__ if error is not None else "reported by Flask-Limiter"
        log.warning("rate limit storage unreachable (%s: %s); counting in-process until it answers", self.name, cause)

    def recovered(self) -> None:
        """The storage answers again: back to shared counts; log once."""
        with self.lock:
            if self.since is None:
                return
            lasted, self.since = time.monotonic() - self.since, None
        self.gauge.set(0)
        log.warning("rate limit storage answers again (%s) after %.0f s; counts are shared again", self.name, lasted)


def _watch_flask_limiter(app: Flask, limiter: Limiter) -> None:
    """Mirror Flask-Limiter's own fallback state (it has no hook) into a StorageFallback."""
    state = StorageFallback("endpoints")
    # Flask-Limiter logs its own line per outage too, in another format; ours is the one to read.
    logging.getLogger("flask-limiter").setLevel(logging.ERROR)

    @app.after_request
    def _mirror(response):
        """After each request: has Flask-Limiter switched storage?"""
        if getattr(limiter, "_storage_dead", False):
            state.failed()
        elif state.active:
            state.recovered()
        return response

    app.extensions["ratelimit_fallback"] = state


def _drop_idle_middleware(app: Flask, limiter: Limiter) -> None:
    """Unhook Flask-Limiter's before_request check: with no default or application limits it counts nothing.

    Every limit here decorates its view (above), and a decorated limit is checked by its
    decorator, never by the hook; the hook only resolved an empty list on every request of
    every endpoint (~8% of GET /me's CPU, bench/PROFILE.md "/me"). Should default or
    application limits ever be configured, the hook stays.
    """
    manager = limiter.limit_manager
    if manager.default_limits or manager.application_limits:
        return
    hooks = app.before_request_funcs.get(None, [])
    if limiter._check_request_limit in hooks:
        hooks.remove(limiter._check_request_limit)


def init_rate_limits(app: Flask) -> Limiter:
    """Make the app's Limiter and wrap the limited views with their limits."""
    config = app.config
    config.setdefault("RATELIMIT_STORAGE_URI", config["REDIS_URL"] or "memory://")
    config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", storage_options(config["RATELIMIT_STORAGE_URI"], config["REDIS_TIMEOUT"])
    )
    limiter = Limiter(
        key_func=get_remote_address,  # REMOTE_ADDR, rewritten only for TRUSTED_PROXIES (app/proxy.py)
        app=app,
        # Off: Flask-Limiter would put its window's Retry-After (and X-RateLimit-*) on every answer of
        # a limited endpoint, overriding the account throttle's and a 503's own. Its 429s get the
        # exact wait from app/errors.py.
        headers_enabled=False,
        strategy="fixed-window",
        key_prefix=config["RATELIMIT_KEY_PREFIX"],
        # Redis down: count in-process rather than refuse every login.
        in_memory_fallback_enabled=True,
    )
    _reserve_password_failures(app)
    # Flask-Limiter's decorators are typed for async views too; these views are synchronous.
    views: dict[str, Any] = app.view_functions

    def mounted(endpoint: str) -> bool:
        """Whether the endpoint is there (an unknown name that is not optional still fails loudly below)."""
        return endpoint not in OPTIONAL_ENDPOINTS or endpoint in views

    for endpoint, (limit_key, failures_key) in LIMITED_ENDPOINTS.items():
        if not mounted(endpoint):
            continue
        view = views[endpoint]
        if failures_key:
            view = limiter.limit(config[failures_key], deduct_when=_failed, scope=f"{endpoint}:failures")(view)
        view = limiter.limit(config[limit_key], deduct_when=_answered, scope=endpoint)(view)
        views[endpoint] = view
    app.extensions["auth_limiter"] = limiter
    _drop_idle_middleware(app, limiter)
    _watch_flask_limiter(app, limiter)
    app.extensions["checktoken_limit"] = AddressLimit(
        "checktoken",
        config["RATELIMIT_CHECKTOKEN"],
        leases=True,
        storage_uri=config["RATELIMIT_STORAGE_URI"],
        storage_options=config["RATELIMIT_STORAGE_OPTIONS"],
        prefix=config["RATELIMIT_KEY_PREFIX"],
        enabled=config["RATELIMIT_ENABLED"],
    )
    # Mails asked for one address (/password/forgot) or one account (/me/email/verify, a new
    # email): so nobody can flood a mailbox through the service (OWASP Forgot Password Cheat Sheet).
    app.extensions["mail_address_limit"] = AddressLimit(
        "mail-address",
        config["RATELIMIT_MAIL_PER_ADDRESS"],
        storage_uri=config["RATELIMIT_STORAGE_URI"],
        prefix=config["RATELIMIT_KEY_PREFIX"],
        enabled=config["RATELIMIT_ENABLED"],
    )
    return limiter


def _reserve_password_failures(app: Flask) -> None:
    """The per-IP budget of failed password (and second-factor) checks: reserved first, given back on success.

    Counting a failure after its answer (Flask-Limiter's deduct_when) lets every request in flight
    pass the check before any of them is counted: 40 parallel wrong passwords got 37 checks from
    a budget of 30 (issue 9). So each request to an endpoint that checks a secret spends one
    before the check, exactly as the account throttle counts before the hash, and a request that
    did not fail (a right password, an mfa_required step, a 503 of an outage) gives it back.
    In-flight requests therefore hold their share: the budget is never exceeded (ASVS 2.2.1).
    """
    config = app.config
    budget = AddressLimit(
        "password-failures",
        config["RATELIMIT_LOGIN_FAILURES"],
        storage_uri=config["RATELIMIT_STORAGE_URI"],
        storage_options=config["RATELIMIT_STORAGE_OPTIONS"],
        prefix=config["RATELIMIT_KEY_PREFIX"],
        enabled=config["RATELIMIT_ENABLED"],
    )
    app.extensions["password_failure_budget"] = budget
    checks = frozenset(PASSWORD_CHECKS)

    @app.before_request
    def _reserve() -> None:
        """Spend one of the caller's failures before its secret is checked; 429 when none is left."""
        if request.endpoint in checks:
            address = get_remote_address()
            budget.check(address)
            g.password_failure_reserved = address

    @app.after_request
    def _settle(response: Response) -> Response:
        """Give the failure back unless the answer was one."""
        address = g.pop("password_failure_reserved", None)
        if address is not None and not _failed(response):
            budget.refund(address)
        return response


class AddressLimit:
    """A per-address limit checked with `limits` itself (Flask-Limiter's engine), for /checkToken.

    /checkToken is answered by the hot path (app/hotpath.py) without Flask's request machinery,
    so its limit cannot ride on Flask-Limiter's hooks; this one object serves both that path and
    the Flask view, with the same storage (Redis when REDIS_URL is set) and the same budget.
    The failure budget of password checks is one too: reserved (check, refund) by the Flask
    endpoints, spent after the fact (spend, blocked) by /introspect.
    When the storage fails it counts in-process, as Flask-Limiter's in_memory_fallback does, and
    asks the storage again at most every RECHECK_SECONDS.
    """

    def __init__(
        self,
        name: str,
        limits: str,
        *,
        storage_uri: str,
        prefix: str,
        enabled: bool,
        storage_options: dict[str, Any] | None = None,
        leases: bool = False,
    ) -> None:
        """Parse the limits and open the storage (and the in-process one it falls back to).

        `leases`: count large limits in leases (see _count); only for a limit nothing refunds.
        """
        self.name = f"{prefix}:{name}"
        self.items: list[RateLimitItem] = parse_many(limits)
        self.enabled = enabled
        self.storage: Storage | None = None
        self.strategy: FixedWindowRateLimiter | None = None
        self.memory = FixedWindowRateLimiter(MemoryStorage())
        if enabled:
            # A synchronous URI (redis://, memory://) gives a synchronous storage.
            self.storage = cast(Storage, storage_from_string(storage_uri, **(storage_options or {})))
            self.strategy = FixedWindowRateLimiter(self.storage)
        self.errors = self.storage.base_exceptions if self.storage is not None else ()
        self.fallback = StorageFallback(name)
        self.next_check = 0.0
        # The largest lease of each limit (1: counted one by one).
        self.lease_bounds = [max(1, item.amount // LEASE_PER_HITS) if leases else 1 for item in self.items]
        # (item, key) -> (hits left, until, the lease's size)
        self.leases: dict[tuple[int, str], tuple[int, float, int]] = {}
        self.lease_lock = threading.Lock()
        self.blocks: dict[str, float] = {}  # key -> until (epoch seconds): budgets spend() found used up
        self.block_lock = threading.Lock()

    def _current(self, strategy: FixedWindowRateLimiter, storage: Storage) -> FixedWindowRateLimiter:
        """The shared storage, or the in-process one while it is down (re-asked now and then)."""
        if not self.fallback.active:
            return strategy
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + RECHECK_SECONDS
            if storage.check():  # never raises: False when unreachable
                self.fallback.recovered()
                return strategy
        return self.memory

    def retry_after(self, address: str | None) -> int | None:
        """Count a request from `address`; None if allowed, else seconds until it would be."""
        if self.strategy is None or self.storage is None:
            return None
        return self._counted(self._count, address or "unknown")

    def _counted(self, count: Callable[[FixedWindowRateLimiter, str], int | None], key: str) -> int | None:
        """`count(strategy, key)` in the shared storage, or in-process while it is down (said once)."""
        assert self.strategy is not None and self.storage is not None  # the callers return first when off
        strategy = self._current(self.strategy, self.storage)
        try:
            return count(strategy, key)
        except self.errors as error:
            if strategy is self.memory:
                raise
            self.fallback.failed(error)
            self.next_check = time.monotonic() + RECHECK_SECONDS
            return count(self.memory, key)

    def _count(self, strategy: FixedWindowRateLimiter, key: str) -> int | None:
        """Hit every limit in `strategy`; the wait of the first one exceeded, if any.

        A large limit is hit through a lease: the shared count rises by the lease's size before any
        of it is spent, so every worker together never exceeds the limit. The hits of a lease that
        fit under the limit are this worker's to spend; those beyond it (the lease that reached
        the end of the window's budget) are refused, as every request after them is until the
        window resets. A lease left unspent when it ends is counted all the same: the caller loses
        at most one lease, 0.1% of the limit, a second per worker, and only while it sends more
        slowly than its leases last. The /checkToken ceiling so costs a Redis round trip about once a
        second per worker and address instead of one in each request (it was 45% of /checkToken's CPU,
        then 30% at one call in twenty: bench/PROFILE.md).
        """
        for index, item in enumerate(self.items):
            if self.lease_bounds[index] > 1 and strategy is not self.memory:
                size = self._spend_lease(index, key)
                if size is None:
                    continue
                counted = strategy.storage.incr(item.key_for(self.name, key), item.get_expiry(), amount=size)
                granted = min(size, item.amount - (counted - size))  # the lease's hits under the limit
                if granted > 0:
                    self._keep_lease(index, key, granted - 1, size)
                    continue
            elif strategy.hit(item, self.name, key):
                continue
            reset = strategy.get_window_stats(item, self.name, key).reset_time
            return max(1, math.ceil(reset - time.time()))
        return None

    def _spend_lease(self, index: int, key: str) -> int | None:
        """Take one hit from this worker's live lease of item `index` for `key`: None, or the next lease's size."""
        now = time.monotonic()
        with self.lease_lock:
            left, until, size = self.leases.get((index, key), (0, 0.0, 0))
            if left > 0 and until > now:
                self.leases[(index, key)] = (left - 1, until, size)
                return None
        start = min(LEASE_START, self.lease_bounds[index])
        if size == 0:
            return start
        return min(self.lease_bounds[index], size * 2) if left <= 0 else max(start, size // 2)

    def _keep_lease(self, index: int, key: str, hits: int, size: int) -> None:
        """Remember `hits` of a lease of `size` taken from the storage for this worker to spend within LEASE_SECONDS."""
        now = time.monotonic()
        with self.lease_lock:
            if len(self.leases) >= LEASES_KEPT:
                self.leases = {k: v for k, v in self.leases.items() if v[1] > now and v[0] > 0}
            left, until, _ = self.leases.get((index, key), (0, 0.0, 0))
            if left > 0 and until > now:
                hits += left  # another thread's lease, taken at the same moment: both are counted, both spent
            self.leases[(index, key)] = (hits, now + LEASE_SECONDS, size)

    def spend(self, address: str | None) -> int | None:
        """Count one failure that has happened, after the fact: None if the budget had room for it, else the
        seconds until it has room again.

        For a caller that did not reserve (check()) before its secret check, so that a success costs
        no storage call (/introspect, app/services/introspection.py). Once the budget is used up, by
        this failure or before it, this worker remembers the address blocked until the window
        resets (blocked()), and refuses it from then on without asking the storage.
        """
        if self.strategy is None or self.storage is None:
            return None
        return self._counted(self._spend, address or "unknown")

    def _spend(self, strategy: FixedWindowRateLimiter, key: str) -> int | None:
        """One failure on every limit in `strategy`; remember a block when one of them is used up."""
        over, until = False, 0.0
        for item in self.items:
            window = item.key_for(self.name, key)
            count = strategy.storage.incr(window, item.get_expiry())
            if count >= item.amount:  # the last one is gone: this worker's next attempt would be refused
                over = over or count > item.amount
                until = max(until, strategy.storage.get_expiry(window))
        if until:
            self._block(key, until)
        return max(1, math.ceil(until - time.time())) if over else None

    def _block(self, key: str, until: float) -> None:
        """Remember that `key` has no budget left until `until` (epoch seconds)."""
        now = time.time()
        with self.block_lock:
            if len(self.blocks) >= BLOCKS_KEPT:
                self.blocks = {k: v for k, v in self.blocks.items() if v > now}
                while len(self.blocks) >= BLOCKS_KEPT:  # all live: forget the oldest (it costs one more check)
                    del self.blocks[next(iter(self.blocks))]
            self.blocks[key] = max(until, self.blocks.get(key, 0.0))

    def blocked(self, address: str | None) -> int | None:
        """Seconds until `address` has budget again, if spend() found it used up in this worker; else None.

        No storage call: a block another worker (or /login) found is not known here until this
        worker's own next failure from that address.
        """
        if not self.blocks:
            return None
        key = address or "unknown"
        until = self.blocks.get(key)
        if until is None:
            return None
        left = until - time.time()
        if left <= 0:
            with self.block_lock:  # _block may be copying the table meanwhile
                if self.blocks.get(key) == until:
                    del self.blocks[key]
            return None
        return max(1, math.ceil(left))

    def check(self, address: str | None) -> None:
        """Raise RateLimited when over the limit."""
        wait = self.retry_after(address)
        if wait is not None:
            raise RateLimited(wait)

    def refund(self, address: str | None) -> None:
        """Give back a request that check() let through but the service could not serve (a 503).

        Only after a check that passed, which hit every limit once. An outage must not spend a
        caller's budget (the request did nothing), or every caller is refused once it ends.
        """
        if self.strategy is None or self.storage is None:
            return
        key = address or "unknown"
        strategy = self._current(self.strategy, self.storage)
        try:
            for item in self.items:
                strategy.storage.incr(item.key_for(self.name, key), item.get_expiry(), amount=-1)
        except self.errors:
            pass  # the storage failed meanwhile: the next check falls back and says so

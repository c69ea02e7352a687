"""Per-IP rate limits (Flask-Limiter), answered with 429 (the account throttle: tests/services/test_throttle.py)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from app import ratelimit
from app.ratelimit import AddressLimit
from tests.helpers import PASSWORD, Auth, assert_429, login_from
from tests.servers import SHARED_REDIS_URL as REDIS_URL
from tests.servers import redis_client  # noqa: F401  (fixture)


@pytest.fixture
def limited(make_app):
    """Build an app with rate limiting on and a key prefix of its own."""

    def build(**overrides):
        settings = {"RATELIMIT_ENABLED": "true", "RATELIMIT_KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}"}
        return make_app(**{**settings, **overrides})

    return build


def test_login_failures_per_ip_are_limited(limited):
    client = limited(RATELIMIT_LOGIN_FAILURES="3/minute").test_client()
    for n in range(3):
        assert login_from(client, f"nobody{n}@example.com").status_code == 401
    assert_429(login_from(client, "nobody9@example.com"), "rate_limited")
    # Another address has its own budget.
    assert login_from(client, "nobody@example.com", ip="10.8.8.8").status_code == 401


def test_parallel_failures_never_exceed_the_budget(limited):
    """40 wrong passwords at once from one address against a budget of 30: exactly 30 are checked (issue 9).

    Each costs a hash, so they are all in flight together; counting only after the answer let
    37 through. Unknown accounts, so the per-account throttle plays no part.
    """
    app = limited(RATELIMIT_LOGIN_FAILURES="30/minute")

    def attempt(n: int) -> int:
        return login_from(app.test_client(), f"parallel{n}@example.com").status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(attempt, range(40)))
    assert sorted(statuses) == [401] * 30 + [429] * 10


def test_successful_logins_do_not_use_the_failure_budget(limited, auth):
    app = limited(RATELIMIT_LOGIN_FAILURES="2/minute")
    client = app.test_client()
    email = auth.signup()["user"]["email"]
    for _ in range(5):
        assert login_from(client, email, PASSWORD).status_code == 200
    assert login_from(client, "x1@example.com").status_code == 401
    assert login_from(client, "x2@example.com").status_code == 401
    assert_429(login_from(client, "x3@example.com"), "rate_limited")


def test_no_app_wide_limiter_hook_runs_while_every_limit_decorates_its_view(limited):
    """Flask-Limiter's before_request check counted nothing (no default limits) on every request."""
    app = limited(RATELIMIT_LOGIN="2/minute")
    limiter = app.extensions["auth_limiter"]
    assert limiter._check_request_limit not in app.before_request_funcs[None]
    client = app.test_client()
    statuses = [login_from(client, "nobody@example.com").status_code for _ in range(3)]
    assert statuses[-1] == 429  # the decorated limits still count


def test_login_total_limit(limited, auth):
    client = limited(RATELIMIT_LOGIN="2/minute").test_client()
    email = auth.signup()["user"]["email"]
    assert login_from(client, email, PASSWORD).status_code == 200
    assert login_from(client, email, PASSWORD).status_code == 200
    assert_429(login_from(client, email, PASSWORD), "rate_limited")


def test_signup_conflicts_per_ip_are_limited(limited, auth):
    client = limited(RATELIMIT_SIGNUP_FAILURES="2/minute").test_client()
    email = auth.signup()["user"]["email"]
    body = {"email": email, "password": PASSWORD, "name": "Dup"}
    assert client.post("/signup", json=body).status_code == 409
    assert client.post("/signup", json=body).status_code == 409
    assert_429(client.post("/signup", json=body), "rate_limited")


def test_check_token_per_ip_limit(limited):
    client = limited(RATELIMIT_CHECKTOKEN="3/minute").test_client()
    for _ in range(3):
        assert client.post("/checkToken", json={"token": "x.y.z"}).status_code == 200
    assert_429(client.post("/checkToken", json={"token": "x.y.z"}), "rate_limited")


def test_refresh_failures_per_ip_are_limited(limited):
    client = limited(RATELIMIT_REFRESH_FAILURES="2/minute").test_client()
    for _ in range(2):
        assert client.post("/refresh", json={"refresh_token": "x.y.z"}).status_code == 401
    assert_429(client.post("/refresh", json={"refresh_token": "x.y.z"}), "rate_limited")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/me/password", {"current_password": "wrong password!", "new_password": "a fresh passphrase"}),
        ("delete", "/me", {"password": "wrong password!"}),
        ("delete", "/users/{id}", {"password": "wrong password!"}),
    ],
)
def test_password_checks_share_the_login_failure_budget(limited, auth, method, path, body):
    """A stolen token gets no more password guesses per address than /login allows (issue: oracles)."""
    app = limited(RATELIMIT_LOGIN_FAILURES="3/minute")
    client = app.test_client()
    me = Auth(client, app).signup()
    url = path.format(id=me["user_id"])
    headers = {"Authorization": f"Bearer {me['access_token']}"}
    send = getattr(client, method)
    ip = {"REMOTE_ADDR": "10.7.7.7"}
    assert send(url, json=body, headers=headers, environ_base=ip).status_code == 401
    assert send(url, json=body, headers=headers, environ_base=ip).status_code == 401
    assert login_from(client, "nobody@example.com", ip="10.7.7.7").status_code == 401
    assert_429(send(url, json=body, headers=headers, environ_base=ip), "rate_limited")
    assert_429(login_from(client, me["user"]["email"], PASSWORD, ip="10.7.7.7"), "rate_limited")


def test_retry_after_is_the_real_wait_and_only_on_refusals(limited, auth):
    """Flask-Limiter's headers once put its window's Retry-After (60) on every /login answer, and over the
    account throttle's own 1 s."""
    app = limited(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="2", RATELIMIT_LOGIN_FAILURES="3/minute")
    client = app.test_client()
    email = Auth(client, app).signup()["user"]["email"]
    first = login_from(client, email)
    assert first.status_code == 401 and "Retry-After" not in first.headers
    assert not [name for name in first.headers.keys() if name.lower().startswith("x-ratelimit")]
    assert login_from(client, email).status_code == 401
    assert assert_429(login_from(client, email), "too_many_attempts") == 1  # the account's delay, not the window
    assert login_from(client, "other@example.com").status_code == 401  # the third failure of this address
    assert 1 <= assert_429(login_from(client, "another@example.com"), "rate_limited") <= 60


@pytest.fixture
def shared_redis(redis_client):  # noqa: F811
    """A key prefix of this test's in the machine's Redis, removed after it."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    for key in redis_client.scan_iter(f"*{prefix}*"):
        redis_client.delete(key)


def two_workers(prefix: str, limits: str) -> list[AddressLimit]:
    """The /checkToken ceiling as two workers hold it: two objects, one Redis count."""
    return [
        AddressLimit("checktoken", limits, storage_uri=REDIS_URL, prefix=prefix, enabled=True, leases=True)
        for _ in range(2)
    ]


def test_a_leased_ceiling_is_never_exceeded_by_the_workers_together(shared_redis):
    """A limit of 2,000 is leased 2 at a time: the two workers together get exactly 2,000 (issue 18)."""
    workers = two_workers(shared_redis, "2000/minute")
    assert workers[0].lease_bounds == [2]
    allowed = 0
    for _ in range(1100):
        for worker in workers:
            allowed += worker.retry_after("10.5.5.5") is None
    assert allowed == 2000


def test_leases_grow_with_the_traffic_up_to_a_thousandth_of_the_limit(shared_redis, monkeypatch):
    """20 hits, then 40, 80, and 100 (0.1% of 100,000) at a time: 4 Redis calls for 240 requests (issue 10)."""
    first, _ = two_workers(shared_redis, "100000/minute")
    calls = []
    incr = first.storage.incr
    monkeypatch.setattr(
        first.storage, "incr", lambda *args, **kwargs: calls.append(kwargs["amount"]) or incr(*args, **kwargs)
    )
    assert all(first.retry_after("10.6.6.6") is None for _ in range(240))
    assert calls == [20, 40, 80, 100]
    assert first.retry_after("10.6.6.6") is None
    assert calls[-1] == 100  # the bound: no larger lease however fast the address sends


def test_the_last_lease_of_a_window_grants_exactly_what_is_left(shared_redis):
    """With 5 hits left under the limit, a lease of 20 gives those 5 and refuses the rest: none is lost."""
    worker, other = two_workers(shared_redis, "30000/minute")
    item = other.items[0]
    other.storage.incr(item.key_for(other.name, "10.8.8.8"), item.get_expiry(), amount=29995)
    answers = [worker.retry_after("10.8.8.8") for _ in range(8)]
    assert answers[:5] == [None] * 5
    assert all(wait is not None and 1 <= wait <= 60 for wait in answers[5:])
    assert other.retry_after("10.8.8.8") is not None  # and the other worker is refused too


def test_two_threads_renewing_at_once_keep_both_leases(shared_redis):
    """Threads that find the lease spent at the same moment each take one: neither's hits are dropped."""
    worker, _ = two_workers(shared_redis, "100000/minute")
    worker._keep_lease(0, "10.9.9.9", 19, 20)
    worker._keep_lease(0, "10.9.9.9", 19, 20)
    assert worker.leases[(0, "10.9.9.9")][0] == 38


def test_a_small_ceiling_and_the_other_budgets_count_every_request(shared_redis):
    assert two_workers(shared_redis, "60/minute;1999/hour")[0].lease_bounds == [1, 1]
    budget = AddressLimit(
        "password-failures", "100000/minute", storage_uri=REDIS_URL, prefix=shared_redis, enabled=True
    )
    assert budget.lease_bounds == [1]  # refunded budgets are never leased


def test_a_lease_ends_after_a_second_and_the_next_is_smaller(shared_redis, monkeypatch):
    worker, _ = two_workers(shared_redis, "100000/minute")
    assert all(worker.retry_after("10.7.7.1") is None for _ in range(21))  # the first lease, and a second of 40
    assert worker.leases[(0, "10.7.7.1")][0::2] == (39, 40)
    now = time.monotonic()
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now + ratelimit.LEASE_SECONDS + 0.1)
    assert worker.retry_after("10.7.7.1") is None
    # A new lease, half the size: the old one's hits were not spent in time (and are lost).
    assert worker.leases[(0, "10.7.7.1")][0::2] == (19, 20)


def test_a_spent_budget_is_remembered_in_this_worker_until_its_window_resets(shared_redis, monkeypatch):
    """AddressLimit.spend (/introspect's failures): counted after the fact; the block known without Redis."""
    budget = AddressLimit("password-failures", "2/minute", storage_uri=REDIS_URL, prefix=shared_redis, enabled=True)
    assert budget.blocked("10.4.4.4") is None
    assert budget.spend("10.4.4.4") is None  # one left
    assert budget.blocked("10.4.4.4") is None
    assert budget.spend("10.4.4.4") is None  # within the budget, and the last of it
    assert 1 <= budget.blocked("10.4.4.4") <= 60
    assert 1 <= budget.spend("10.4.4.4") <= 60  # past it: the caller answers 429
    assert budget.blocked("10.4.4.5") is None  # another address has its own
    now = time.time()
    monkeypatch.setattr(ratelimit.time, "time", lambda: now + 61)
    assert budget.blocked("10.4.4.4") is None and "10.4.4.4" not in budget.blocks


def test_spend_counts_in_process_while_redis_is_down():
    uri = "redis://127.0.0.1:1/0"  # nothing listens there
    budget = AddressLimit("password-failures", "2/minute", storage_uri=uri, prefix="down", enabled=True,
                          storage_options=ratelimit.storage_options(uri, 0.2))  # fmt: skip
    assert [budget.spend("10.4.4.6") for _ in range(2)] == [None, None]
    assert budget.fallback.active
    assert budget.blocked("10.4.4.6") is not None and budget.spend("10.4.4.6") is not None


def test_the_blocks_a_worker_remembers_are_bounded(monkeypatch):
    monkeypatch.setattr(ratelimit, "BLOCKS_KEPT", 2)
    budget = AddressLimit("password-failures", "1/minute", storage_uri="memory://", prefix="p", enabled=True)
    for address in ("10.4.4.7", "10.4.4.8", "10.4.4.9"):
        budget.spend(address)
    assert list(budget.blocks) == ["10.4.4.8", "10.4.4.9"]  # the oldest live one went

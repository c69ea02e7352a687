"""Throttling: per-IP limits (Flask-Limiter) and per-account growing delays, answered with 429."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import PASSWORD
from tests.helpers import assert_problem


@pytest.fixture
def limited(make_app):
    """Build an app with rate limiting on and a key prefix of its own."""

    def build(**overrides):
        settings = {"RATELIMIT_ENABLED": "true", "RATELIMIT_KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}"}
        return make_app(**{**settings, **overrides})

    return build


def login(client, email, password="wrong password!", ip="10.9.9.9"):
    """POST /login from `ip`."""
    return client.post("/login", json={"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip})


def assert_429(response, code: str) -> int:
    """A 429 problem with a sane Retry-After; return it."""
    assert_problem(response, 429, code)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 3600
    return retry_after


def test_login_failures_per_ip_are_limited(limited):
    client = limited(RATELIMIT_LOGIN_FAILURES="3/minute").test_client()
    for n in range(3):
        assert login(client, f"nobody{n}@example.com").status_code == 401
    assert_429(login(client, "nobody9@example.com"), "rate_limited")
    # Another address has its own budget.
    assert login(client, "nobody@example.com", ip="10.8.8.8").status_code == 401


def test_successful_logins_do_not_use_the_failure_budget(limited, auth):
    app = limited(RATELIMIT_LOGIN_FAILURES="2/minute")
    client = app.test_client()
    email = auth.signup()["user"]["email"]
    for _ in range(5):
        assert login(client, email, PASSWORD).status_code == 200
    assert login(client, "x1@example.com").status_code == 401
    assert login(client, "x2@example.com").status_code == 401
    assert_429(login(client, "x3@example.com"), "rate_limited")


def test_login_total_limit(limited, auth):
    client = limited(RATELIMIT_LOGIN="2/minute").test_client()
    email = auth.signup()["user"]["email"]
    assert login(client, email, PASSWORD).status_code == 200
    assert login(client, email, PASSWORD).status_code == 200
    assert_429(login(client, email, PASSWORD), "rate_limited")


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


@pytest.fixture
def sqlite_only(backend):
    """The account throttle keeps its counts outside the database: one backend is enough."""
    if backend != "sqlite":
        pytest.skip("throttle state is not in the database; exercised on SQLite")


@pytest.mark.parametrize("exists", [True, False])
@pytest.mark.usefixtures("sqlite_only")
def test_account_throttle_grows_and_expires(make_app, auth, exists):
    app = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="3", RATELIMIT_KEY_PREFIX=uuid.uuid4().hex)
    client = app.test_client()
    email = auth.signup()["user"]["email"] if exists else "ghost@example.com"
    statuses = [login(client, email, ip=f"10.0.0.{n}").status_code for n in range(2)]
    assert statuses == [401, 401]
    # The third failure starts a 1 s delay; every address sees it (the account is the key).
    assert login(client, email, ip="10.0.1.1").status_code == 401
    assert assert_429(login(client, email, ip="10.0.1.2"), "too_many_attempts") == 1
    # Even the right password waits: the answer must not tell whether it was right.
    assert_429(login(client, email, PASSWORD, ip="10.0.1.3"), "too_many_attempts")
    time.sleep(1.1)
    assert login(client, email, ip="10.0.2.1").status_code == 401
    assert assert_429(login(client, email, ip="10.0.2.2"), "too_many_attempts") == 2  # growing
    time.sleep(2.1)
    if exists:
        assert login(client, email, PASSWORD).status_code == 200  # no permanent lockout
        assert login(client, email).status_code == 401  # and success reset the count
        assert login(client, email).status_code == 401


@pytest.mark.usefixtures("sqlite_only")
def test_account_throttle_delay_is_capped(make_app):
    app = make_app(
        LOGIN_THROTTLE_ENABLED="true",
        LOGIN_FREE_FAILURES="1",
        LOGIN_MAX_DELAY="1",
        RATELIMIT_KEY_PREFIX=uuid.uuid4().hex,
    )
    client = app.test_client()
    for _ in range(6):
        response = login(client, "capped@example.com")
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) <= 1
            time.sleep(1.05)
    assert login(client, "capped@example.com").status_code == 401


def test_throttle_answers_alike_for_known_and_unknown_accounts(make_app, auth):
    app = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="1", RATELIMIT_KEY_PREFIX=uuid.uuid4().hex)
    client = app.test_client()
    known = auth.signup()["user"]["email"]
    for email in (known, "unknown@example.com"):
        assert login(client, email).status_code == 401
    blocked = [login(client, email) for email in (known, "unknown@example.com")]
    assert [r.get_json() for r in blocked][0] == [r.get_json() for r in blocked][1]
    assert {r.status_code for r in blocked} == {429}

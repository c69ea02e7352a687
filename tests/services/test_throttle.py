"""The per-account throttle: growing delays shared by every worker and instance, counted before the hash.

Its counts live in the database, so these run on every backend.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from app.extensions import db
from app.models import LoginThrottle
from tests.helpers import PASSWORD, Auth, assert_429, bearer, login_from, run_together


@pytest.mark.parametrize("exists", [True, False])
def test_account_throttle_grows_and_expires(make_app, auth, exists):
    app = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="3")
    client = app.test_client()
    email = auth.signup()["user"]["email"] if exists else "ghost@example.com"
    statuses = [login_from(client, email, ip=f"10.0.0.{n}").status_code for n in range(2)]
    assert statuses == [401, 401]
    # The third failure starts a 1 s delay; every address sees it (the account is the key).
    assert login_from(client, email, ip="10.0.1.1").status_code == 401
    assert assert_429(login_from(client, email, ip="10.0.1.2"), "too_many_attempts") == 1
    # Even the right password waits: the answer must not tell whether it was right.
    assert_429(login_from(client, email, PASSWORD, ip="10.0.1.3"), "too_many_attempts")
    time.sleep(1.1)
    assert login_from(client, email, ip="10.0.2.1").status_code == 401
    assert assert_429(login_from(client, email, ip="10.0.2.2"), "too_many_attempts") == 2  # growing
    time.sleep(2.1)
    if exists:
        assert login_from(client, email, PASSWORD).status_code == 200  # no permanent lockout
        assert login_from(client, email).status_code == 401  # and success reset the count
        assert login_from(client, email).status_code == 401


def test_account_throttle_delay_is_capped(make_app):
    app = make_app(
        LOGIN_THROTTLE_ENABLED="true",
        LOGIN_FREE_FAILURES="1",
        LOGIN_MAX_DELAY="1",
    )
    client = app.test_client()
    for _ in range(6):
        response = login_from(client, "capped@example.com")
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) <= 1
            time.sleep(1.05)
    assert login_from(client, "capped@example.com").status_code == 401


def test_throttle_answers_alike_for_known_and_unknown_accounts(make_app, auth):
    app = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="1")
    client = app.test_client()
    known = auth.signup()["user"]["email"]
    for email in (known, "unknown@example.com"):
        assert login_from(client, email).status_code == 401
    blocked = [login_from(client, email) for email in (known, "unknown@example.com")]
    assert [r.get_json() for r in blocked][0] == [r.get_json() for r in blocked][1]
    assert {r.status_code for r in blocked} == {429}


@pytest.mark.parametrize("exists", [True, False])
def test_parallel_guesses_get_only_the_free_attempts(make_app, auth, exists):
    """20 wrong passwords at once: exactly the free attempts reach the hash, every other one is a 429.

    Checking before hashing and recording after let 26 of 40 through; the count is now taken
    (and committed) before the hash, on the account's locked row. (The first delay is 1 s; the
    burst queues on the row for far less than that.)
    """
    app = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="5", DATABASE_POOL_SIZE="20")
    email = auth.signup()["user"]["email"] if exists else "ghost@example.com"
    started = time.monotonic()
    responses = run_together(app, 20, lambda client: login_from(client, email))
    statuses = [getattr(response, "status_code", repr(response)) for response in responses]
    elapsed = time.monotonic() - started
    assert Counter(statuses) == {401: 5, 429: 15}, (Counter(statuses), f"{elapsed:.2f} s")


def test_instances_share_the_account_count(make_app, auth):
    """Two apps on one database (two workers or instances): failures on one count on the other."""
    first = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="2").test_client()
    second = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="2").test_client()
    email = auth.signup()["user"]["email"]
    assert login_from(first, email).status_code == 401
    assert login_from(second, email).status_code == 401
    assert_429(login_from(first, email), "too_many_attempts")
    assert_429(login_from(second, email), "too_many_attempts")


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("post", "/me/password", "current_password"),
        ("delete", "/me", "password"),
        ("delete", "/users/{id}", "password"),
    ],
)
def test_reauthentication_counts_against_the_account(make_app, auth, method, path, field):
    """Wrong passwords at /me/password, DELETE /me and DELETE /users/{own id} spend the login throttle."""
    app = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="2")
    client = app.test_client()
    me = Auth(client, app).signup()
    body = {field: "wrong password!"}
    if field == "current_password":
        body["new_password"] = "a fresh passphrase"
    send = getattr(client, method)
    url = path.format(id=me["user_id"])
    assert send(url, json=body, headers=bearer(me["access_token"])).status_code == 401
    assert send(url, json=body, headers=bearer(me["access_token"])).status_code == 401
    assert_429(send(url, json=body, headers=bearer(me["access_token"])), "too_many_attempts")
    # …and the same account's login waits too: one budget per account.
    assert_429(login_from(client, me["user"]["email"], PASSWORD), "too_many_attempts")


def test_success_clears_the_count_and_rows_hold_no_identifier(make_app, auth):
    app = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="3")
    client = app.test_client()
    email = auth.signup()["user"]["email"]
    assert login_from(client, "typo@example.com").status_code == 401
    assert login_from(client, email).status_code == 401
    with app.app_context():
        keys = db.session.scalars(db.select(LoginThrottle.key)).all()
    assert len(keys) == 2 and not any("example" in key for key in keys)
    assert login_from(client, email, PASSWORD).status_code == 200
    with app.app_context():
        assert len(db.session.scalars(db.select(LoginThrottle.key)).all()) == 1  # the typo's stays


def test_purge_tokens_removes_stale_counts(make_app, runner):
    from datetime import timedelta

    from app.models import utcnow
    from app.services import throttle

    app = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FAILURE_WINDOW="60")
    client = app.test_client()
    assert login_from(client, "old@example.com").status_code == 401
    with app.app_context():
        assert throttle.purge_expired() == 0
        assert throttle.purge_expired(utcnow() + timedelta(seconds=61)) == 1

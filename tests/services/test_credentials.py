"""Credentials: no login that verified the old password outlives a password change, reset or deactivation.

Real threads against the real database (every backend): logins keep arriving while the
password changes; once the change has answered, every token any of those logins got must be
void. A login checks its hash without a lock (~20 ms with production argon2 parameters, used
here to keep that window as wide as in production), so without the row lock that holds its
verdict (app/services/credentials.py) some of them kept working sessions.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers import PASSWORD, Auth, assert_ok, bearer, check_token

NEW_PASSWORD = "a wholly different passphrase"
# One pooled connection per thread, as gunicorn sizes it (DATABASE_POOL_SIZE = threads).
PRODUCTION_HASH = {"ARGON2_TIME_COST": "2", "ARGON2_MEMORY_COST": "19456", "DATABASE_POOL_SIZE": "8"}


def _logins_during(app, email: str, change) -> list[dict]:
    """Log in with the old password from 6 threads until `change()` has returned; the 200 bodies."""
    stop = threading.Event()
    bodies: list[dict] = []
    errors: list[BaseException] = []

    def keep_logging_in() -> None:
        client = app.test_client()
        while not stop.is_set():
            try:
                response = client.post("/login", json={"email": email, "password": PASSWORD})
                assert response.status_code in (200, 401, 403), response.get_json()
                if response.status_code == 200:
                    bodies.append(response.get_json())
            except BaseException as error:  # surfaced below
                errors.append(error)
                return

    threads = [threading.Thread(target=keep_logging_in) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(bodies) < 2 and not errors and time.monotonic() < deadline:
        time.sleep(0.01)  # until logins are through, and others in flight behind them
    change()
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return bodies


def _assert_all_void(client, bodies: list[dict]) -> None:
    """Every token of these logins is refused: access by /checkToken, refresh by /refresh."""
    assert bodies, "no login got through before the change: the race was not exercised"
    for body in bodies:
        assert check_token(client, body["access_token"])["valid"] is False, body["user"]
        assert client.post("/refresh", json={"refresh_token": body["refresh_token"]}).status_code == 401


@pytest.mark.parametrize("rounds", [3])
def test_no_login_survives_a_password_change(make_app, rounds):
    app = make_app(**PRODUCTION_HASH)
    client = app.test_client()
    auth = Auth(client, app)
    for _ in range(rounds):
        me = auth.signup()
        email = me["user"]["email"]

        def change(me=me) -> None:
            response = client.post(
                "/me/password",
                json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                headers=bearer(me["access_token"]),
            )
            assert_ok(response)

        bodies = _logins_during(app, email, change)
        _assert_all_void(client, bodies)
        assert check_token(client, me["access_token"])["valid"] is True  # the changing session stays
        auth.login(email, NEW_PASSWORD)


@pytest.mark.parametrize("change", ["password", "is_active"])
def test_no_login_survives_an_admin_reset_or_deactivation(make_app, change):
    app = make_app(**PRODUCTION_HASH)
    client = app.test_client()
    auth = Auth(client, app)
    admin = auth.make_admin()
    for _ in range(3):
        target = auth.signup()
        value = NEW_PASSWORD if change == "password" else False

        def act(target=target, value=value) -> None:
            response = client.patch(
                f"/users/{target['user_id']}", json={change: value}, headers=bearer(admin["access_token"])
            )
            assert_ok(response)

        bodies = _logins_during(app, target["user"]["email"], act)
        _assert_all_void(client, bodies)


# --- the sample of stored hashes behind the failure floor (passwords.FailureTiming) ---------------


def test_the_hash_sample_scans_users_only_when_an_import_may_have_added_foreign_hashes(app, auth, runner, tmp_path):
    import json
    from datetime import UTC, datetime

    import bcrypt

    from app.services import credentials

    auth.signup()  # a hash in the current argon2id form: never in the sample
    with app.app_context():
        assert credentials._foreign_hash_sample(None) == []  # the first look reads the table
        assert credentials._foreign_hash_sample(datetime.now(UTC)) is None  # later ones ask the audit trail
    stored = bcrypt.hashpw(b"imported", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "one.jsonl").write_text(json.dumps({"email": "one@example.com", "password_hash": stored}) + "\n")
    assert runner.invoke(args=["users", "import", str(tmp_path / "one.jsonl")]).exit_code == 0
    with app.app_context():
        assert credentials._foreign_hash_sample(datetime.now(UTC)) == [stored]

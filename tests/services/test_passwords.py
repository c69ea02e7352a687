"""Password hashing, verification, upgrade and policy (app/services/passwords.py).

The pure functions are tested inside the app context of a database-less app built from the
real config classes; what only shows through HTTP (hash upgrade on login, 400 not 500, no
account enumeration) goes through the real stack on every backend.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import threading
import time
import uuid

import argon2
import pytest
from flask import Flask
from werkzeug.security import generate_password_hash

import config
from app.errors import ValidationFailed
from app.extensions import db
from app.models import User
from app.services import passwords
from tests.helpers import PASSWORD

LIGATURE = "\ufb01"  # "ﬁ", which NFKC turns into "fi"


def config_app(settings: config.BaseConfig) -> Flask:
    """A bare Flask app carrying `settings`: all the password functions need is current_app.config."""
    app = Flask(__name__)
    app.config.from_mapping(settings.as_dict())
    return app


@pytest.fixture
def testing_app():
    """The testing settings (cheap argon2 parameters), in an app context."""
    app = config_app(config.TestingConfig({"DATABASE_URL": "sqlite://"}))
    with app.app_context():
        yield app


@pytest.fixture
def production_app():
    """The production settings with their default argon2 parameters, in an app context."""
    settings = config.ProductionConfig({"DATABASE_URL": "sqlite://", "JWT_SECRET_KEY": secrets.token_urlsafe(48)})
    app = config_app(settings)
    with app.app_context():
        yield app


def stored_hash(app, email: str) -> str:
    """The password hash in the database for this email."""
    with app.app_context():
        return db.session.query(User).filter_by(email=email).one().password_hash


def set_hash(app, user_id: str, value: str) -> None:
    """Overwrite a user's password hash directly in the database."""
    with app.app_context():
        db.session.get(User, uuid.UUID(user_id)).password_hash = value
        db.session.commit()


# --- hashing ---------------------------------------------------------------------------------


def test_hash_password_is_argon2id_with_configured_parameters(testing_app):
    hashed = passwords.hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$")
    params = argon2.extract_parameters(hashed)
    assert params.type is argon2.Type.ID
    assert params.time_cost == testing_app.config["ARGON2_TIME_COST"]
    assert params.memory_cost == testing_app.config["ARGON2_MEMORY_COST"]
    assert params.parallelism == testing_app.config["ARGON2_PARALLELISM"]


def test_hash_password_with_production_defaults_meets_owasp(production_app):
    hashed = passwords.hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$")
    params = argon2.extract_parameters(hashed)
    assert params.memory_cost >= 19456
    assert params.time_cost >= 2
    assert params.parallelism >= 1


def test_hash_password_salts_every_hash(testing_app):
    assert passwords.hash_password(PASSWORD) != passwords.hash_password(PASSWORD)


def test_base_config_defaults_meet_owasp():
    settings = config.BaseConfig({"JWT_SECRET_KEY": secrets.token_urlsafe(48), "DATABASE_URL": "sqlite://"})
    assert settings.ARGON2_MEMORY_COST >= 19456
    assert settings.ARGON2_TIME_COST >= 2
    assert settings.ARGON2_PARALLELISM >= 1


# --- verification ----------------------------------------------------------------------------


def test_verify_fresh_hash_matches_without_rehash(testing_app):
    assert passwords.verify_password(passwords.hash_password(PASSWORD), PASSWORD) == (True, False)


def test_verify_wrong_password_does_not_match(testing_app):
    assert passwords.verify_password(passwords.hash_password(PASSWORD), PASSWORD + "!") == (False, False)


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=64,t=1,p=1$broken", "$2b$12$abcdefghijkl"])
def test_verify_malformed_hash_does_not_match(testing_app, stored):
    assert passwords.verify_password(stored, PASSWORD)[0] is False


@pytest.mark.parametrize("method", ["pbkdf2:sha256", "scrypt"])
def test_verify_werkzeug_hash_matches_and_needs_rehash(testing_app, method):
    legacy = generate_password_hash(PASSWORD, method=method)
    assert legacy.startswith(method.split(":")[0] + ":")
    assert passwords.verify_password(legacy, PASSWORD) == (True, True)
    assert passwords.verify_password(legacy, PASSWORD + "!")[0] is False


def test_verify_werkzeug_hash_of_unnormalized_password_matches(testing_app):
    password = f"{LIGATURE}sh and chips forever"
    legacy = generate_password_hash(password, method="pbkdf2:sha256:1000")
    assert passwords.verify_password(legacy, password)[0] is True


def test_verify_argon2_hash_with_weaker_parameters_needs_rehash(production_app):
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(PASSWORD)
    assert passwords.verify_password(weak, PASSWORD) == (True, True)


def test_verify_long_passwords_are_not_truncated(testing_app):
    first, second = "x" * 199 + "a", "x" * 199 + "b"
    hashed = passwords.hash_password(first)
    assert passwords.verify_password(hashed, first) == (True, False)
    assert passwords.verify_password(hashed, second)[0] is False


@pytest.mark.parametrize(
    "typed, stored",
    [
        (f"{LIGATURE}ve little ducks", "five little ducks"),
        ("five little ducks", f"{LIGATURE}ve little ducks"),
        ("cafe\u0301 au lait", "caf\u00e9 au lait"),
        ("\uff21\uff22\uff23defghij", "ABCdefghij"),
    ],
    ids=["ligature-typed", "ligature-stored", "combining-accent", "fullwidth"],
)
def test_verify_nfkc_equivalent_passwords_match(testing_app, typed, stored):
    assert passwords.verify_password(passwords.hash_password(stored), typed)[0] is True


# --- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["", "short", "1234567"])
def test_check_policy_too_short_names_the_field(testing_app, password):
    with pytest.raises(ValidationFailed) as caught:
        passwords.check_policy(password, field="new_password")
    assert caught.value.status == 400
    assert caught.value.code == "validation_error"
    assert set(caught.value.errors) == {"new_password"}
    assert caught.value.errors["new_password"]


def test_check_policy_too_long_is_refused(testing_app):
    limit = testing_app.config["PASSWORD_MAX_LENGTH"]
    with pytest.raises(ValidationFailed) as caught:
        passwords.check_policy("x" * (limit + 1))
    assert set(caught.value.errors) == {"password"}


def test_check_policy_accepts_bounds(testing_app):
    # Random text, so that only the length is on trial (not the common-password list).
    material = "k3#Vq9!zRw" * 500
    passwords.check_policy(material[: testing_app.config["PASSWORD_MIN_LENGTH"]])
    passwords.check_policy(material[: testing_app.config["PASSWORD_MAX_LENGTH"]])


# --- through the HTTP API --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pbkdf2:sha256", "scrypt"])
def test_login_with_werkzeug_hash_upgrades_to_argon2id(app, auth, client, user, method):
    email = user["user"]["email"]
    set_hash(app, user["user_id"], generate_password_hash(PASSWORD, method=method))
    auth.login(email)
    assert stored_hash(app, email).startswith("$argon2id$")
    auth.login(email)
    wrong = client.post("/login", json={"email": email, "password": PASSWORD + "!"})
    assert wrong.status_code == 401
    assert wrong.get_json()["code"] == "invalid_credentials"


def test_login_with_wrong_password_keeps_werkzeug_hash(app, client, user):
    legacy = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
    set_hash(app, user["user_id"], legacy)
    email = user["user"]["email"]
    assert client.post("/login", json={"email": email, "password": "not the password"}).status_code == 401
    assert stored_hash(app, email) == legacy


def test_login_with_nfkc_equivalent_password_succeeds(auth):
    body = auth.signup(password=f"{LIGATURE}ve little ducks swim")
    auth.login(body["user"]["email"], "five little ducks swim")


def test_login_with_long_password_differing_at_the_end_fails(auth, client):
    body = auth.signup(password="y" * 127 + "a")  # the longest allowed (PASSWORD_MAX_LENGTH, 128)
    response = client.post("/login", json={"email": body["user"]["email"], "password": "y" * 127 + "b"})
    assert response.status_code == 401
    auth.login(body["user"]["email"], "y" * 127 + "a")


def test_signup_short_password_is_validation_error(client):
    response = client.post("/signup", json={"email": "short@example.com", "password": "1234567", "name": "S"})
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "validation_error"
    assert "password" in body["errors"]


@pytest.mark.parametrize(
    "password",
    ["p" * 129, "p" * 5000, "\ufdfa" * 20],
    ids=["one-over", "far-over", "expands-under-nfkc"],
)
def test_signup_overlong_password_is_400(client, password):
    response = client.post("/signup", json={"email": "long@example.com", "password": password, "name": "L"})
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == "validation_error"
    assert "password" in body["errors"]


@pytest.mark.parametrize("password", ["p" * 129, "p" * 5000], ids=["one-over", "far-over"])
def test_login_overlong_password_is_400(client, user, password):
    response = client.post("/login", json={"email": user["user"]["email"], "password": password})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["code"] == "validation_error"


@pytest.fixture
def verification_counts(monkeypatch):
    """Count calls of verify_password and of argon2's own verify."""
    counts = {"verify_password": 0, "argon2": 0}
    real_verify_password = passwords.verify_password
    real_argon2_verify = argon2.PasswordHasher.verify

    def verify_password(stored, password):
        counts["verify_password"] += 1
        return real_verify_password(stored, password)

    def argon2_verify(self, hash, password):
        counts["argon2"] += 1
        return real_argon2_verify(self, hash, password)

    monkeypatch.setattr(passwords, "verify_password", verify_password)
    monkeypatch.setattr(argon2.PasswordHasher, "verify", argon2_verify)
    return counts


@pytest.mark.parametrize(
    "body",
    [
        {"email": "nobody@example.com", "password": PASSWORD},
        {"username": "nobody", "password": PASSWORD},
        {"email": "KNOWN", "password": "wrong password"},
    ],
    ids=["unknown-email", "unknown-username", "wrong-password"],
)
def test_login_failure_costs_one_argon2_verification(client, user, verification_counts, body):
    if body.get("email") == "KNOWN":
        body = {**body, "email": user["user"]["email"]}
    response = client.post("/login", json=body)
    assert response.status_code == 401
    assert verification_counts == {"verify_password": 1, "argon2": 1}


def test_login_unknown_user_and_wrong_password_answer_alike(client, user):
    unknown = client.post("/login", json={"email": "nobody@example.com", "password": PASSWORD})
    wrong = client.post("/login", json={"email": user["user"]["email"], "password": "wrong password"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.get_json() == wrong.get_json()
    assert unknown.get_json()["code"] == "invalid_credentials"
    assert unknown.headers["Content-Type"] == wrong.headers["Content-Type"]


def test_login_disabled_account_with_wrong_password_is_invalid_credentials(app, client, user):
    with app.app_context():
        db.session.get(User, uuid.UUID(user["user_id"])).is_active = False
        db.session.commit()
    wrong = client.post("/login", json={"email": user["user"]["email"], "password": "wrong password"})
    assert wrong.status_code == 401
    assert wrong.get_json()["code"] == "invalid_credentials"
    right = client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD})
    assert right.status_code == 403
    assert right.get_json()["code"] == "account_disabled"


def test_hashing_uses_at_most_the_configured_threads(testing_app, monkeypatch):
    """PASSWORD_HASH_CONCURRENCY bounds the argon2 computations of a process; other callers queue."""
    testing_app.config["PASSWORD_HASH_CONCURRENCY"] = 2
    pool = passwords._hashing_threads(2, os.getpid()).executor
    lock = threading.Lock()
    seen = {"active": 0, "peak": 0, "threads": set()}
    real_hash = argon2.PasswordHasher.hash

    def slow_hash(self, password, *, salt=None):
        if threading.current_thread() not in pool._threads:
            return real_hash(self, password)  # another pool's work (another app of this process)
        with lock:
            seen["active"] += 1
            seen["peak"] = max(seen["peak"], seen["active"])
            seen["threads"].add(threading.current_thread().name)
        time.sleep(0.2)  # long enough that every caller has queued before the first one ends
        try:
            return real_hash(self, password)
        finally:
            with lock:
                seen["active"] -= 1

    monkeypatch.setattr(argon2.PasswordHasher, "hash", slow_hash)
    results = []
    together = threading.Barrier(6)

    def caller():
        with testing_app.app_context():
            together.wait()  # submitted at once: a staggered start under load let one thread do all
            results.append(passwords.hash_password(PASSWORD))

    callers = [threading.Thread(target=caller) for _ in range(6)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=30)
    assert len(results) == 6 and all(passwords.verify_password(stored, PASSWORD)[0] for stored in results)
    assert seen["peak"] == 2
    assert len(seen["threads"]) == 2 and all(name.startswith("argon2") for name in seen["threads"])


MEMORY_PROBE = r"""
import json, os, secrets, threading, time
from flask import Flask
import config
from app.services import passwords

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

settings = config.ProductionConfig({"DATABASE_URL": "sqlite://", "JWT_SECRET_KEY": secrets.token_urlsafe(48)})
app = Flask("probe")
app.config.from_mapping(settings.as_dict())
with app.app_context():
    stored = passwords.hash_password("correct horse battery")
    time.sleep(0.3)
    idle_before = rss_mb()
    peak, running = [idle_before], True

    def sample():
        while running:
            peak.append(rss_mb())
            time.sleep(0.002)

    def caller():
        with app.app_context():
            for _ in range(3):
                assert passwords.verify_password(stored, "correct horse battery")[0]

    sampler = threading.Thread(target=sample)
    sampler.start()
    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    running = False
    sampler.join()
    time.sleep(0.3)
    print(json.dumps({"idle_before": idle_before, "peak": max(peak), "idle_after": rss_mb()}))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's allocator"
)
def test_hashing_memory_is_one_block_under_load_and_returned_when_idle():
    """Four callers share one 19 MiB argon2 block (production parameters), and an idle worker returns it.

    Issue 5: at most 100 MB per worker. Without the dedicated thread each caller's arena would
    keep a block; without the release an idle worker would keep one.
    """
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE],
        cwd=config.BASE_DIR,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "APP_ENV": "production"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    block = 19 * 1.048576  # MB
    assert memory["peak"] - memory["idle_before"] >= 0.8 * block, memory  # the probe saw the block
    assert memory["peak"] - memory["idle_before"] < 1.6 * block, memory  # but only one
    assert memory["idle_after"] - memory["idle_before"] < 3, memory  # and it went back

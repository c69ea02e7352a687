"""The second factor's rules below HTTP: the TOTP window, single use, encryption at rest and key rotation."""

from __future__ import annotations

import threading

import pyotp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from app.errors import AppError, MfaUnavailable
from app.extensions import db
from app.models import TotpCredential
from app.services import mfa, secretbox
from config import ConfigError, get_config
from tests.api.test_mfa import T0, code_at, enable, finish, mfa_token
from tests.helpers import assert_ok, assert_problem

SECRET = pyotp.random_base32()


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-60, False), (-31, False), (-30, True), (-1, True), (0, True), (29, True), (30, True), (59, True), (60, False)],
)
def test_codes_one_step_either_side_are_accepted(offset, accepted):
    """T0 is a step boundary: a code of the previous or next step works, two steps away does not."""
    step = mfa.matching_step(SECRET, code_at(SECRET, T0 + offset), now=T0 + 15)
    assert (step is not None) == accepted
    if accepted:
        assert step == (T0 + offset) // 30


def test_the_step_is_judged_at_the_service_clock(monkeypatch):
    monkeypatch.setattr(mfa, "clock", lambda: T0 + 300)
    assert mfa.matching_step(SECRET, code_at(SECRET, T0 + 300)) == (T0 + 300) // 30
    assert mfa.matching_step(SECRET, code_at(SECRET, T0)) is None


def test_comparisons_are_constant_time():
    """pyotp compares with hmac.compare_digest, and so does matching_step (no == on codes)."""
    import inspect

    from pyotp import utils

    assert "compare_digest" in inspect.getsource(utils.strings_equal)
    source = inspect.getsource(mfa.matching_step)
    assert "compare_digest" in source and "== code" not in source


def test_simultaneous_uses_of_one_code_let_one_through(app, client, user, monkeypatch, backend):
    """The conditional UPDATE on the last step: of parallel logins with the same code, exactly one wins."""
    if backend == "sqlite":
        pytest.skip("SQLite serializes writers; the race needs a server database")
    now = {"t": float(T0)}
    monkeypatch.setattr(mfa, "clock", lambda: now["t"])
    secret, _ = enable(client, user, now)
    now["t"] += 30
    code = code_at(secret, now["t"])
    tokens = [mfa_token(client, user["user"]["email"]) for _ in range(6)]
    statuses: list[int] = []
    barrier = threading.Barrier(len(tokens))

    def attempt(token: str) -> None:
        own = app.test_client()
        barrier.wait()
        statuses.append(finish(own, token, code=code).status_code)

    threads = [threading.Thread(target=attempt, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200] + [400] * 5


# --- encryption at rest and key rotation -----------------------------------------------------


def _stored_secret(app) -> str:
    with app.app_context():
        return db.session.scalars(select(TotpCredential.secret)).one()


def test_the_seed_is_stored_encrypted_with_the_first_key(app, client, user, monkeypatch):
    now = {"t": float(T0)}
    monkeypatch.setattr(mfa, "clock", lambda: now["t"])
    secret, _ = enable(client, user, now)
    stored = _stored_secret(app)
    assert secret not in stored
    first = app.config["ENCRYPTION_KEY"][0]
    assert Fernet(first.encode()).decrypt(stored.encode()).decode() == secret


def test_rotating_the_encryption_key_locks_nobody_out(app, client, make_app, user, monkeypatch):
    """Old key still decrypts behind a new first key; after `flask mfa reencrypt` the old key can go."""
    now = {"t": float(T0)}
    monkeypatch.setattr(mfa, "clock", lambda: now["t"])
    secret, _ = enable(client, user, now)  # encrypted with the old key
    old = app.config["ENCRYPTION_KEY"][0]
    new = Fernet.generate_key().decode()
    email = user["user"]["email"]

    rotated = make_app(ENCRYPTION_KEY=f"{new},{old}")
    rotated_client = rotated.test_client()
    now["t"] += 30
    assert_ok(finish(rotated_client, mfa_token(rotated_client, email), code=code_at(secret, now["t"])))

    result = rotated.test_cli_runner().invoke(args=["mfa", "reencrypt"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypted 1 TOTP secret" in result.output
    assert Fernet(new.encode()).decrypt(_stored_secret(app).encode()).decode() == secret

    only_new = make_app(ENCRYPTION_KEY=new).test_client()
    now["t"] += 30
    assert_ok(finish(only_new, mfa_token(only_new, email), code=code_at(secret, now["t"])))

    only_old = make_app(ENCRYPTION_KEY=old).test_client()
    now["t"] += 30
    response = finish(only_old, mfa_token(only_old, email), code=code_at(secret, now["t"]))
    assert_problem(response, 503, "mfa_unavailable")


def test_reencrypt_without_the_old_key_changes_nothing(app, client, make_app, user, monkeypatch):
    now = {"t": float(T0)}
    monkeypatch.setattr(mfa, "clock", lambda: now["t"])
    enable(client, user, now)
    before = _stored_secret(app)
    stranger = make_app(ENCRYPTION_KEY=Fernet.generate_key().decode())
    result = stranger.test_cli_runner().invoke(args=["mfa", "reencrypt"])
    assert result.exit_code == 1
    assert "Nothing was changed" in result.output
    assert _stored_secret(app) == before


def test_generate_key_prints_a_fernet_key(runner):
    result = runner.invoke(args=["mfa", "generate-key"])
    assert result.exit_code == 0
    Fernet(result.output.strip().encode())


def test_secretbox_without_a_key_is_unavailable(app):
    with app.app_context():
        kept = app.extensions["secretbox"]
        app.extensions["secretbox"] = None
        try:
            assert secretbox.available() is False
            with pytest.raises(MfaUnavailable):
                secretbox.encrypt("x")
        finally:
            app.extensions["secretbox"] = kept


def test_mfa_unavailable_is_a_503_app_error():
    error = MfaUnavailable()
    assert isinstance(error, AppError)
    assert (error.status, error.code) == (503, "mfa_unavailable")
    assert error.headers["Retry-After"]


# --- configuration ---------------------------------------------------------------------------

PRODUCTION = {"APP_ENV": "production", "DATABASE_URL": "postgresql://u:p@db/auth", "JWT_SECRET_KEY": "k" * 48}


def test_production_without_encryption_key_has_none():
    assert get_config(PRODUCTION).ENCRYPTION_KEY == []


def test_encryption_key_lists_several_keys():
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    config = get_config({**PRODUCTION, "ENCRYPTION_KEY": f" {first} , {second} "})
    assert config.ENCRYPTION_KEY == [first, second]


@pytest.mark.parametrize("value", ["not-a-key", "k" * 48, f"{Fernet.generate_key().decode()},short"])
def test_a_bad_encryption_key_stops_start_up_without_echoing_it(value):
    with pytest.raises(ConfigError) as raised:
        get_config({**PRODUCTION, "ENCRYPTION_KEY": value, "JWT_SECRET_KEY": "j" * 48})
    assert "ENCRYPTION_KEY" in str(raised.value) and value not in str(raised.value)


def test_the_encryption_key_is_not_the_jwt_secret():
    key = Fernet.generate_key().decode()
    with pytest.raises(ConfigError, match="JWT secret"):
        get_config({**PRODUCTION, "ENCRYPTION_KEY": key, "JWT_SECRET_KEY": key})


def test_development_generates_and_keeps_a_key_in_instance(tmp_path):
    env = {"APP_ENV": "development", "INSTANCE_DIR": str(tmp_path)}
    first = get_config(env).ENCRYPTION_KEY
    assert get_config(env).ENCRYPTION_KEY == first
    Fernet(first[0].encode())
    assert (tmp_path / "encryption.key").stat().st_mode & 0o777 == 0o600

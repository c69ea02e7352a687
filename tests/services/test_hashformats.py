"""The hash formats of the services users move from (app/services/hashformats.py), and how
passwords.verify_password checks them.

Every hash here is made by its own library: werkzeug, bcrypt, Django's PBKDF2PasswordHasher,
argon2-cffi. The pure functions need no database; verify_password needs an app context for its
configuration (tests/services/test_passwords.py's bare testing app).
"""

from __future__ import annotations

import base64
import hashlib
import json

import argon2
import bcrypt
import pytest
from werkzeug.security import generate_password_hash

import config
from app.schemas.fields import normalize_email
from app.services import hashformats, passwords
from tests.data import make_moving_in
from tests.services.test_passwords import LIGATURE, config_app

PASSWORD = "moving in from elsewhere"


@pytest.fixture
def testing_app():
    """The testing settings in a bare app context: all verify_password needs."""
    app = config_app(config.TestingConfig({"DATABASE_URL": "sqlite://"}))
    with app.app_context():
        yield app


def django_default_hash(password: str) -> str:
    """Django's make_password with its default hasher and iterations, as a Django project stores it."""
    make_moving_in.django_hash("configure settings")  # configures Django once
    from django.contrib.auth.hashers import make_password

    return make_password(password)


def fixture_records() -> list[dict]:
    """The records of tests/data/moving-in.jsonl."""
    return [json.loads(line) for line in make_moving_in.FILE.read_text(encoding="utf-8").splitlines()]


# --- recognised and parsed -------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, name, cost",
    [
        (lambda pw: generate_password_hash(pw, method="pbkdf2:sha256"), "werkzeug", "pbkdf2:sha256:1000000"),
        (lambda pw: generate_password_hash(pw, method="pbkdf2:sha512:5000"), "werkzeug", "pbkdf2:sha512:5000"),
        (lambda pw: generate_password_hash(pw), "werkzeug", "scrypt:32768:8:1"),
        (lambda pw: bcrypt.hashpw(pw.encode(), bcrypt.gensalt()).decode(), "bcrypt", "bcrypt:12"),
        (lambda pw: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(5, b"2a")).decode(), "bcrypt", "bcrypt:5"),
        (django_default_hash, "django", "django-pbkdf2_sha256:1000000"),
        (lambda pw: argon2.PasswordHasher().hash(pw), "argon2id", "argon2id:m=65536,t=3,p=4"),
    ],
    ids=["werkzeug-pbkdf2-default", "werkzeug-pbkdf2-sha512", "werkzeug-scrypt-default", "bcrypt-default",
         "bcrypt-2a", "django-default", "argon2-cffi-default"],
)  # fmt: skip
def test_hashes_made_by_each_library_with_its_defaults_are_accepted_and_verify(testing_app, make, name, cost):
    stored = make(PASSWORD)
    found, cost_class = hashformats.describe(stored)
    assert (found.name, cost_class) == (name, cost)
    assert found.check(stored, PASSWORD) is True
    assert found.check(stored, PASSWORD + "!") is False
    assert passwords.verify_password(stored, PASSWORD) == (True, True)
    assert passwords.verify_password(stored, PASSWORD + "!") == (False, False)


def test_the_fixture_file_holds_each_format_made_by_its_library():
    names = {hashformats.describe(r["password_hash"])[0].name for r in fixture_records() if "password_hash" in r}
    assert names == {"werkzeug", "bcrypt", "django", "argon2id"}
    prefixes = {r["password_hash"][:4] for r in fixture_records() if r.get("password_hash", "").startswith("$2")}
    assert prefixes == {"$2a$", "$2b$", "$2y$"}


@pytest.mark.parametrize("email", sorted(make_moving_in.PASSWORDS))
def test_every_fixture_hash_verifies_with_its_password(testing_app, email):
    record = next(r for r in fixture_records() if normalize_email(r["email"]) == email)
    assert passwords.verify_password(record["password_hash"], make_moving_in.PASSWORDS[email]) == (True, True)
    assert passwords.verify_password(record["password_hash"], "not the password")[0] is False


def test_django_accepts_what_this_service_checks_and_the_other_way_round(testing_app):
    """Both directions through Django's own check_password, so our PBKDF2 is Django's, not a look-alike."""
    stored = make_moving_in.django_hash(PASSWORD)
    from django.contrib.auth.hashers import check_password

    assert check_password(PASSWORD, stored) is True
    assert hashformats.describe(stored)[0].check(stored, PASSWORD) is True
    # Our check over a hash computed by hashlib the way Django documents it.
    salt, iterations = "abcdefghijklmnopqrstuv", 2000
    digest = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt.encode(), iterations)
    by_hand = f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"
    assert check_password(PASSWORD, by_hand) is True
    assert hashformats.describe(by_hand)[0].check(by_hand, PASSWORD) is True


# --- refused at import, with the reason --------------------------------------------------------


@pytest.mark.parametrize(
    "stored, reason",
    [
        ("md5$abc$def", "Unknown hash format"),
        ("sha1$salt$0123abcd", "Unknown hash format"),
        ("$1$saltsalt$hashhashhashhashhash", "Unknown hash format"),
        ("$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "Only argon2id"),
        ("$argon2id$v=19$m=1024,t=1,p=1$broken", "Not a valid argon2id"),
        ("$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "too costly"),
        ("$2b$12$short", "Not a valid bcrypt"),
        ("$2b$31$" + "a" * 53, "bcrypt cost"),
        ("$2x$12$" + "a" * 53, "Unknown hash format"),
        ("pbkdf2:sha256:1000$salt", "Not a valid werkzeug"),
        ("pbkdf2:sha256:1000$salt$nothex", "Not a valid werkzeug"),
        ("pbkdf2:md4:1000$salt$abcd", "pbkdf2:<sha256"),
        ("pbkdf2:sha256:many$salt$abcd", "not numbers"),
        ("pbkdf2:sha256:100000000$salt$abcd", "iteration count"),
        ("pbkdf2:sha256$salt$abcd", "pbkdf2:<sha256"),
        ("scrypt:1000:8:1$salt$abcd", "scrypt parameters"),
        ("scrypt:1048576:64:16$salt$abcd", "scrypt parameters"),
        ("scrypt$salt$abcd", "Unknown hash format"),
        ("scrypt:16384$salt$abcd", "scrypt:<n>"),
        ("pbkdf2_sha256$1000$salt", "Not a valid Django"),
        ("pbkdf2_sha256$x$salt$AAAA", "bad iteration count"),
        ("pbkdf2_sha256$1000$salt$AAAA", "digest length"),
        ("pbkdf2_sha256$1000$salt$***", "bad iteration count or digest"),
        ("pbkdf2_sha1$1000$salt$AAAA", "Unknown hash format"),
    ],
)
def test_unverifiable_hashes_are_refused_with_a_reason_that_never_repeats_them(stored, reason):
    with pytest.raises(hashformats.UnsupportedHash) as caught:
        hashformats.describe(stored)
    assert reason in str(caught.value)
    assert stored not in str(caught.value)


# --- checking ----------------------------------------------------------------------------------


def test_bcrypt_checks_the_first_72_bytes_as_the_other_service_did(testing_app):
    """The bcrypt package refuses more than 72 bytes; the other service's bcrypt ignored them."""
    long_password = "é" * 40  # 80 bytes of UTF-8
    stored = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4)).decode()
    assert passwords.verify_password(stored, long_password) == (True, True)
    assert passwords.verify_password(stored, "x" + long_password)[0] is False


def test_a_foreign_hash_of_the_typed_password_verifies_and_is_upgraded(testing_app):
    """Other services hashed what was typed, not its NFKC form: the typed form is tried too."""
    typed = f"{LIGATURE}sh and chips forever"
    for stored in (
        bcrypt.hashpw(typed.encode(), bcrypt.gensalt(4)).decode(),
        make_moving_in.django_hash(typed),
        argon2.PasswordHasher(time_cost=1, memory_cost=64).hash(typed),
    ):
        assert passwords.verify_password(stored, typed) == (True, True), stored[:12]
        assert passwords.verify_password(stored, "fish and chips forever")[0] is False


def test_an_own_argon2id_hash_matching_only_the_typed_form_is_upgraded(testing_app):
    typed = f"{LIGATURE}sh and chips forever"
    config = testing_app.config
    unnormalized = argon2.PasswordHasher(
        time_cost=config["ARGON2_TIME_COST"], memory_cost=config["ARGON2_MEMORY_COST"], parallelism=1
    ).hash(typed)
    assert passwords.verify_password(unnormalized, typed) == (True, True)
    assert passwords.verify_password(passwords.hash_password(typed), typed) == (True, False)


@pytest.mark.parametrize("password", [PASSWORD, passwords.hashformats.UNUSABLE_PREFIX, ""])
def test_the_unusable_marker_never_verifies(testing_app, password):
    stored = passwords.unusable_hash()
    assert stored.startswith("!") and len(stored) > 40
    assert not hashformats.is_usable(stored)
    assert passwords.verify_password(stored, password) == (False, False)
    assert passwords.verify_password(stored, stored[1:]) == (False, False)


def test_the_unusable_marker_costs_one_argon2id_check_like_an_unknown_account(testing_app, monkeypatch):
    calls = []
    real = argon2.PasswordHasher.verify
    monkeypatch.setattr(argon2.PasswordHasher, "verify", lambda self, h, p: calls.append(h) or real(self, h, p))
    passwords.verify_password(passwords.unusable_hash(), PASSWORD)
    passwords.burn_verification(PASSWORD)
    assert len(calls) == 2 and calls[0] == calls[1]  # the same dummy hash both times

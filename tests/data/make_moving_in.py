"""Write tests/data/moving-in.jsonl: users as the services they come from stored them.

Every hash is made by the library of its source, at small costs so the tests stay fast:
werkzeug's generate_password_hash (Flask), bcrypt.hashpw (FastAPI with passlib or bcrypt),
Django's own PBKDF2PasswordHasher, argon2-cffi. `$2y$` is PHP's name for bcrypt's `$2b$` (the
same algorithm and output), made here by renaming a `$2b$` hash. Run it again only to change the
file: `python -m tests.data.make_moving_in`. The passwords are in PASSWORDS, by email.
"""

from __future__ import annotations

import json
from pathlib import Path

import argon2
import bcrypt
from werkzeug.security import generate_password_hash

FILE = Path(__file__).with_name("moving-in.jsonl")
LIGATURE_PASSWORD = "\ufb01sh and chips forever"  # "ﬁ": NFKC makes it "fi"
PASSWORDS = {
    "flask-pbkdf2@example.com": "flask pbkdf2 password",
    "flask-scrypt@example.com": "flask scrypt password",
    "fastapi-bcrypt@example.com": "fastapi bcrypt password",
    "bcrypt-2a@example.com": "bcrypt 2a password",
    "php-bcrypt-2y@example.com": "php bcrypt 2y password",
    "django@example.com": "django pbkdf2 password",
    "django-admin@example.com": "django admin password",
    "argon2-elsewhere@example.com": "argon2 from elsewhere",
    "ligature@example.com": LIGATURE_PASSWORD,
    "jürgen@xn--bcher-kva.example": "jürgens passwort",
    "inactive@example.com": "inactive bcrypt password",
}
NO_HASH = "must-reset@example.com"


def django_hash(password: str) -> str:
    """Django's PBKDF2PasswordHasher, with fewer iterations than its default."""
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    class FewerIterations(PBKDF2PasswordHasher):
        iterations = 1000

    hasher = FewerIterations()
    return hasher.encode(password, hasher.salt())


def bcrypt_hash(password: str, prefix: bytes = b"2b") -> str:
    """bcrypt.hashpw at cost 4."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=prefix)).decode()


def users() -> list[dict]:
    """The records, in the import's format."""
    pw = PASSWORDS
    b2b = bcrypt_hash(pw["php-bcrypt-2y@example.com"])
    return [
        {"email": "Flask-PBKDF2@Example.com", "username": "flask_pbkdf2", "name": "Flask PBKDF2",
         "created_at": "2019-03-04T05:06:07+00:00",
         "password_hash": generate_password_hash(pw["flask-pbkdf2@example.com"], method="pbkdf2:sha256:1000")},
        {"email": "flask-scrypt@example.com", "username": "flask.scrypt", "name": "Flask scrypt",
         "password_hash": generate_password_hash(pw["flask-scrypt@example.com"], method="scrypt:1024:8:1")},
        {"email": "fastapi-bcrypt@example.com", "name": "FastAPI bcrypt", "email_verified": True,
         "created_at": "2021-06-07T08:09:10.123456+02:00",
         "password_hash": bcrypt_hash(pw["fastapi-bcrypt@example.com"])},
        {"email": "bcrypt-2a@example.com", "username": "bcrypt-2a",
         "password_hash": bcrypt_hash(pw["bcrypt-2a@example.com"], b"2a")},
        {"email": "php-bcrypt-2y@example.com", "password_hash": "$2y$" + b2b[4:]},
        {"email": "django@example.com", "username": "django_user", "name": "Django User", "is_active": True,
         "password_hash": django_hash(pw["django@example.com"])},
        {"email": "django-admin@example.com", "username": "django_admin", "name": "Django Admin", "role": "admin",
         "email_verified": True, "password_hash": django_hash(pw["django-admin@example.com"])},
        {"email": "argon2-elsewhere@example.com", "name": "Argon2 Elsewhere",
         "password_hash": argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=2).hash(
             pw["argon2-elsewhere@example.com"])},
        {"email": "ligature@example.com", "name": "Ligature",
         "password_hash": generate_password_hash(LIGATURE_PASSWORD, method="pbkdf2:sha256:1000")},
        {"email": "Jürgen@Bücher.Example", "username": "jürgen", "name": "Jürgen Müller",
         "password_hash": django_hash(pw["jürgen@xn--bcher-kva.example"])},
        {"email": "inactive@example.com", "is_active": False,
         "password_hash": bcrypt_hash(pw["inactive@example.com"])},
        {"email": NO_HASH, "name": "Must Reset"},
    ]  # fmt: skip


if __name__ == "__main__":
    FILE.write_text("".join(json.dumps(user, ensure_ascii=False) + "\n" for user in users()), encoding="utf-8")
    print(f"wrote {FILE}")

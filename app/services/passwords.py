"""Password hashing and policy: pure functions over the app's configured parameters.

argon2id at OWASP parameters (m=19 MiB, t=2, p=1 or stronger); werkzeug's own pbkdf2/scrypt
hashes still verify so accounts can be migrated from older Flask services, and any hash that
is not current argon2id is flagged for an upgrade on the next successful login.
"""

from __future__ import annotations

import gzip
import threading
import unicodedata
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app
from werkzeug.security import check_password_hash

from app.errors import ValidationFailed

WERKZEUG_PREFIXES = ("pbkdf2:", "scrypt:")
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt.gz"
MIN_IDENTIFIER_PART = 4  # shorter local parts ("al", "bob") would refuse too many good passwords


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (app/data/README.md says where it comes from)."""
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip() for line in handle if line.strip())


@lru_cache(maxsize=8)
def _hasher(time_cost: int, memory_cost: int, parallelism: int) -> PasswordHasher:
    """One PasswordHasher per parameter set."""
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)


def hasher() -> PasswordHasher:
    """The hasher for the current app's configuration."""
    config = current_app.config
    return _hasher(config["ARGON2_TIME_COST"], config["ARGON2_MEMORY_COST"], config["ARGON2_PARALLELISM"])


def normalize(password: str) -> str:
    """NFKC-normalize, so the same password typed on two keyboards hashes the same (NIST 800-63B 5.1.1.2)."""
    return unicodedata.normalize("NFKC", password)


@lru_cache(maxsize=4)
def _hash_slots(count: int) -> threading.BoundedSemaphore:
    """The per-process limit on simultaneous argon2 computations."""
    return threading.BoundedSemaphore(count)


def _slot() -> threading.BoundedSemaphore:
    """argon2id is CPU-bound and takes 19 MiB while it runs: a worker computes at most
    PASSWORD_HASH_CONCURRENCY at once (more threads would only share the same cores and
    multiply the memory), the others wait their turn."""
    return _hash_slots(current_app.config["PASSWORD_HASH_CONCURRENCY"])


def hash_password(password: str) -> str:
    """Hash a password with argon2id; the whole password, never truncated."""
    with _slot():
        return hasher().hash(normalize(password))


def verify_password(stored_hash: str, password: str) -> tuple[bool, bool]:
    """Check a password against a stored hash; return (matches, needs_rehash)."""
    candidate = normalize(password)
    if stored_hash.startswith(WERKZEUG_PREFIXES):
        # Hashed by another service without normalization: the raw form is what was hashed.
        matches = check_password_hash(stored_hash, password) or check_password_hash(stored_hash, candidate)
        return matches, True
    try:
        with _slot():
            hasher().verify(stored_hash, candidate)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return True, hasher().check_needs_rehash(stored_hash)


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int) -> str:
    """A hash of a random value with the current parameters, made once per parameter set."""
    return _hasher(time_cost, memory_cost, parallelism).hash("dummy password for timing")


def burn_verification(password: str) -> None:
    """Spend one verification when there is no account, so timing does not reveal that (ASVS 2.2.x)."""
    config = current_app.config
    stored = _dummy_hash(config["ARGON2_TIME_COST"], config["ARGON2_MEMORY_COST"], config["ARGON2_PARALLELISM"])
    verify_password(stored, password)


def is_trivial(password: str) -> bool:
    """Only whitespace, one short unit repeated ('abababab'), or a run of consecutive characters
    ('12345678', 'hgfedcba'): NIST 800-63B 5.1.1.2 names repetitive and sequential passwords."""
    text = password.strip()
    if not text:
        return True
    for size in range(1, len(text) // 2 + 1):
        if len(text) % size == 0 and text[:size] * (len(text) // size) == text:
            return True
    steps = {ord(b) - ord(a) for a, b in zip(text, text[1:], strict=False)}
    if text.isdigit():  # '34567890' and '21098765' wrap around like a keypad row
        steps = {step % 10 for step in steps}
        return steps in ({1}, {9})
    return steps in ({1}, {-1})


def check_policy(
    password: str, *, field: str = "password", email: str | None = None, username: str | None = None
) -> None:
    """Enforce the password policy on a new password; raise ValidationFailed naming each reason.

    NIST 800-63B 5.1.1.2 / ASVS 2.1: a length range, no composition rules, and no password
    from a list of common ones or built on the account's own identifiers.
    """
    config = current_app.config
    normalized = normalize(password)
    problems: list[str] = []
    if len(normalized) < config["PASSWORD_MIN_LENGTH"]:
        problems.append(f"Must be at least {config['PASSWORD_MIN_LENGTH']} characters long.")
    if len(normalized) > config["PASSWORD_MAX_LENGTH"]:
        problems.append(f"Must be at most {config['PASSWORD_MAX_LENGTH']} characters long.")
    folded = normalized.casefold()
    if folded in common_passwords() or folded.strip() in common_passwords():
        problems.append("Is one of the most common passwords; choose another.")
    elif is_trivial(folded):
        problems.append("Is a repeated or sequential pattern (like 'aaaaaaaa' or '12345678'); choose another.")
    for label, identifier in (("email address", (email or "").split("@")[0]), ("username", username or "")):
        part = normalize(identifier).casefold()
        if len(part) >= MIN_IDENTIFIER_PART and part in folded:
            problems.append(f"Must not contain your {label}.")
    if problems:
        raise ValidationFailed(errors={field: problems})

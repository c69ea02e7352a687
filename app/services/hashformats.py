"""The password hash formats the service can verify: its own argon2id, and those of the services users move from.

Each format knows how to recognise a stored hash (its prefix), how to check it strictly (`parse`,
for the import: a hash that would never verify is refused, with the reason) and how to check a
password against it (`check`, through the library made for it: argon2-cffi, werkzeug, bcrypt;
Django's PBKDF2 is hashlib.pbkdf2_hmac with a constant-time comparison, which is what Django does).
`parse` also names the hash's cost class ("bcrypt:12"): hashes of one class cost the same to
check, which is what passwords.FailureTiming needs to know.

Pure functions: no app, no database. passwords.verify_password is the only caller of `check`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from werkzeug.security import check_password_hash

# Django marks an account without a usable password with "!" (UNUSABLE_PASSWORD_PREFIX); so does
# this service: nothing verifies against it, and such an account must reset its password.
UNUSABLE_PREFIX = "!"
BCRYPT_MAX_BYTES = 72  # bcrypt ignores everything after the 72nd byte; the bcrypt package refuses more

# Costs beyond these would make one login take seconds or gigabytes: an import file carrying one
# is a mistake (or an attempt to tie up the service), not a real user.
MAX_PBKDF2_ITERATIONS = 10_000_000
MAX_BCRYPT_COST = 16
MAX_SCRYPT_MEMORY = 1024**3  # bytes: 128 * n * r * p
MAX_ARGON2_MEMORY_KIB = 1024 * 1024
MAX_ARGON2_TIME_COST = 20
PBKDF2_DIGESTS = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})

ACCEPTED = "werkzeug pbkdf2:/scrypt:, bcrypt $2a$/$2b$/$2y$, Django pbkdf2_sha256$ or argon2 $argon2id$"
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_HEX = re.compile(r"[0-9a-f]+")


class UnsupportedHash(ValueError):
    """A stored hash the service cannot verify; the message says why, never the hash itself."""


@dataclass(frozen=True)
class HashFormat:
    """One family of stored hashes."""

    name: str
    prefixes: tuple[str, ...]
    parse: Callable[[str], str]  # the cost class; raises UnsupportedHash
    check: Callable[[str, str], bool]  # (stored, password): a malformed hash never matches
    own: bool = False  # hashed by this service, from the NFKC-normalized password


def _parse_argon2(stored: str) -> str:
    """argon2id (another service's, or this one's) with bounded parameters."""
    try:
        params = argon2.extract_parameters(stored)
    except (InvalidHashError, ValueError):
        raise UnsupportedHash("Not a valid argon2id hash.") from None
    if params.type is not argon2.Type.ID:
        raise UnsupportedHash("Only argon2id is accepted among the argon2 variants.")
    if params.memory_cost > MAX_ARGON2_MEMORY_KIB or params.time_cost > MAX_ARGON2_TIME_COST:
        raise UnsupportedHash("The argon2id parameters are too costly to check at login.")
    return f"argon2id:m={params.memory_cost},t={params.time_cost},p={params.parallelism}"


def _check_argon2(stored: str, password: str) -> bool:
    """argon2-cffi reads the parameters from the hash itself."""
    try:
        return argon2.PasswordHasher().verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _parse_werkzeug(stored: str) -> str:
    """`pbkdf2:<digest>:<iterations>$salt$hex` or `scrypt:<n>:<r>:<p>$salt$hex`, as werkzeug writes them."""
    method, _, rest = stored.partition("$")
    salt, _, digest = rest.partition("$")
    if not salt or not digest or not _HEX.fullmatch(digest):
        raise UnsupportedHash("Not a valid werkzeug hash (method$salt$hex).")
    kind, *args = method.split(":")
    try:
        numbers = [int(arg) for arg in args[1:]] if kind == "pbkdf2" else [int(arg) for arg in args]
    except ValueError:
        raise UnsupportedHash("Not a valid werkzeug hash: its parameters are not numbers.") from None
    if kind == "pbkdf2":
        if len(args) != 2 or args[0] not in PBKDF2_DIGESTS:
            raise UnsupportedHash("Not a valid werkzeug pbkdf2 hash (pbkdf2:<sha256|sha512|…>:<iterations>).")
        if not 1 <= numbers[0] <= MAX_PBKDF2_ITERATIONS:
            raise UnsupportedHash("The pbkdf2 iteration count is out of range.")
        return f"pbkdf2:{args[0]}:{numbers[0]}"
    if len(numbers) != 3:
        raise UnsupportedHash("Not a valid werkzeug scrypt hash (scrypt:<n>:<r>:<p>).")
    n, r, p = numbers
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * n * r * p > MAX_SCRYPT_MEMORY:
        raise UnsupportedHash("The scrypt parameters are out of range.")
    return f"scrypt:{n}:{r}:{p}"


def _check_werkzeug(stored: str, password: str) -> bool:
    """werkzeug.security.check_password_hash; a hash it cannot read does not match."""
    try:
        return check_password_hash(stored, password)
    except (ValueError, TypeError):
        return False


def _parse_bcrypt(stored: str) -> str:
    """`$2a$`, `$2b$` or `$2y$`, a two-digit cost, 22 characters of salt and 31 of hash."""
    match = _BCRYPT.fullmatch(stored)
    if match is None:
        raise UnsupportedHash("Not a valid bcrypt hash ($2b$<cost>$ and 53 characters).")
    cost = int(match.group(1))
    if not 4 <= cost <= MAX_BCRYPT_COST:
        raise UnsupportedHash(f"The bcrypt cost must be between 4 and {MAX_BCRYPT_COST}.")
    return f"bcrypt:{cost}"


def _check_bcrypt(stored: str, password: str) -> bool:
    """bcrypt.checkpw on the first 72 bytes: all that the other service's bcrypt ever hashed."""
    try:
        return bcrypt.checkpw(password.encode("utf-8")[:BCRYPT_MAX_BYTES], stored.encode("ascii"))
    except ValueError:
        return False


def _django_parts(stored: str) -> tuple[int, str, bytes]:
    """Iterations, salt and digest of `pbkdf2_sha256$<iterations>$<salt>$<base64 digest>`."""
    parts = stored.split("$")
    if len(parts) != 4 or not parts[2]:
        raise UnsupportedHash("Not a valid Django hash (pbkdf2_sha256$iterations$salt$digest).")
    try:
        iterations = int(parts[1])
        digest = base64.b64decode(parts[3], validate=True)
    except (ValueError, binascii.Error):
        raise UnsupportedHash("Not a valid Django hash: bad iteration count or digest.") from None
    if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS or len(digest) != hashlib.sha256().digest_size:
        raise UnsupportedHash("Not a valid Django hash: iteration count or digest length out of range.")
    return iterations, parts[2], digest


def _parse_django(stored: str) -> str:
    """Django's default PBKDF2PasswordHasher."""
    iterations, _, _ = _django_parts(stored)
    return f"django-pbkdf2_sha256:{iterations}"


def _check_django(stored: str, password: str) -> bool:
    """Django's PBKDF2PasswordHasher.verify: PBKDF2-SHA256 of the UTF-8 password and salt, compared in constant time."""
    try:
        iterations, salt, digest = _django_parts(stored)
    except UnsupportedHash:
        return False
    computed = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations)
    return hmac.compare_digest(computed, digest)


ARGON2 = HashFormat("argon2id", ("$argon2",), _parse_argon2, _check_argon2, own=True)
FORMATS = (
    ARGON2,
    HashFormat("werkzeug", ("pbkdf2:", "scrypt:"), _parse_werkzeug, _check_werkzeug),
    HashFormat("bcrypt", ("$2a$", "$2b$", "$2y$"), _parse_bcrypt, _check_bcrypt),
    HashFormat("django", ("pbkdf2_sha256$",), _parse_django, _check_django),
)


def format_of(stored: str) -> HashFormat | None:
    """The format a stored hash claims by its prefix; None for an unusable or unknown one."""
    for candidate in FORMATS:
        if stored.startswith(candidate.prefixes):
            return candidate
    return None


def describe(stored: str) -> tuple[HashFormat, str]:
    """The format and cost class of a hash that can verify. Raises UnsupportedHash naming the reason."""
    found = format_of(stored)
    if found is None:
        raise UnsupportedHash(f"Unknown hash format; accepted: {ACCEPTED}.")
    return found, found.parse(stored)


def cost_class(stored: str) -> str | None:
    """The cost class of a stored hash, or None when it cannot verify."""
    try:
        return describe(stored)[1]
    except UnsupportedHash:
        return None


def is_usable(stored: str) -> bool:
    """False for the marker of an account that must reset its password."""
    return not stored.startswith(UNUSABLE_PREFIX)

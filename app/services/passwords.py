"""Password hashing and policy: pure functions over the app's configured parameters.

argon2id at OWASP parameters (m=19 MiB, t=2, p=1 or stronger); werkzeug's own pbkdf2/scrypt
hashes still verify so accounts can be migrated from older Flask services, and any hash that
is not current argon2id is flagged for an upgrade on the next successful login.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app
from werkzeug.security import check_password_hash

from app.errors import ValidationFailed

WERKZEUG_PREFIXES = ("pbkdf2:", "scrypt:")
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt.gz"
MIN_IDENTIFIER_PART = 4  # shorter local parts ("al", "bob") would refuse too many good passwords
T = TypeVar("T")


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


class HashingThreads:
    """The threads of one process that compute argon2, PASSWORD_HASH_CONCURRENCY of them.

    argon2id is CPU-bound and needs 19 MiB while it runs, so a worker computes at most
    PASSWORD_HASH_CONCURRENCY at once (more would only share the same cores and multiply the
    memory); other requests queue. Always the same thread(s), each with its own glibc arena that
    nothing else allocates from, so every computation gets the same 19 MiB block back: a fresh
    block costs ~13 ms of page faults per login on this machine (bench/PROFILE.md). When the
    queue runs empty the block goes back to the kernel (`Malloc.release`), so an idle worker
    does not keep it (issue 5: at most 100 MB per worker).
    """

    def __init__(self, count: int) -> None:
        """Threads start on first use."""
        MALLOC.keep_blocks()
        self.executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="argon2")
        self.lock = threading.Lock()
        self.pending = 0

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on a hashing thread; the caller waits for its result."""
        with self.lock:
            self.pending += 1
        return self.executor.submit(self._compute, function, args).result()

    def _compute(self, function: Callable[..., T], args: tuple) -> T:
        try:
            return function(*args)
        finally:
            with self.lock:
                self.pending -= 1
                idle = not self.pending
            if idle:  # queued after this result is handed over, so no login waits for the release
                self.executor.submit(self._release_if_idle)

    def _release_if_idle(self) -> None:
        with self.lock:
            if self.pending:
                return
        MALLOC.release()


class Malloc:
    """glibc's allocator tuned for argon2's big blocks; on another C library, nothing happens.

    By default glibc mmaps a 19 MiB block afresh for every hash (page faults each time), or,
    once it has raised its thresholds, keeps freed blocks in each thread's arena for good.
    `keep_blocks` fixes the thresholds so that blocks up to 32 MiB stay in the arena of the
    thread that frees them. `release` hands the calling thread's free arena top back to the
    kernel (a free of at least 64 KiB makes glibc trim its arena down to the trim threshold,
    lowered for that moment), then malloc_trim does the same for the main arena and for free
    pages anywhere else.
    """

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    MMAP_THRESHOLD = 32 * 1024 * 1024
    TRIM_THRESHOLD = 64 * 1024 * 1024
    TRIGGER = 256 * 1024

    def __init__(self) -> None:
        """Bind libc, if it is glibc."""
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.malloc.restype = ctypes.c_void_p
            libc.malloc.argtypes = [ctypes.c_size_t]
            libc.free.argtypes = [ctypes.c_void_p]
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            self.libc = libc
        except (OSError, AttributeError):  # not glibc
            self.libc = None
        self.lock = threading.Lock()

    def keep_blocks(self) -> None:
        """Serve blocks below MMAP_THRESHOLD from arenas; keep up to TRIM_THRESHOLD free at an arena's top."""
        if self.libc is not None:
            self.libc.mallopt(self.M_MMAP_THRESHOLD, self.MMAP_THRESHOLD)
            self.libc.mallopt(self.M_TRIM_THRESHOLD, self.TRIM_THRESHOLD)

    def release(self) -> None:
        """Return the calling thread's free arena top, and other free pages, to the kernel."""
        if self.libc is None:
            return
        with self.lock:
            self.libc.mallopt(self.M_TRIM_THRESHOLD, 0)
            try:
                self.libc.free(self.libc.malloc(self.TRIGGER))
            finally:
                self.libc.mallopt(self.M_TRIM_THRESHOLD, self.TRIM_THRESHOLD)
            self.libc.malloc_trim(0)


MALLOC = Malloc()


@lru_cache(maxsize=4)
def _hashing_threads(count: int, pid: int) -> HashingThreads:
    """This process's hashing threads (keyed by pid: threads do not survive a fork)."""
    return HashingThreads(count)


def _on_hashing_thread(function: Callable[..., T], *args: Any) -> T:
    """Run an argon2 computation on this process's hashing threads."""
    return _hashing_threads(current_app.config["PASSWORD_HASH_CONCURRENCY"], os.getpid()).run(function, *args)


def hash_password(password: str) -> str:
    """Hash a password with argon2id; the whole password, never truncated."""
    return _on_hashing_thread(hasher().hash, normalize(password))


def verify_password(stored_hash: str, password: str) -> tuple[bool, bool]:
    """Check a password against a stored hash; return (matches, needs_rehash)."""
    candidate = normalize(password)
    if stored_hash.startswith(WERKZEUG_PREFIXES):
        # Hashed by another service without normalization: the raw form is what was hashed.
        matches = check_password_hash(stored_hash, password) or check_password_hash(stored_hash, candidate)
        return matches, True
    try:
        _on_hashing_thread(hasher().verify, stored_hash, candidate)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return True, hasher().check_needs_rehash(stored_hash)


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int) -> str:
    """A hash of a random value with the current parameters, made once per parameter set."""
    return _on_hashing_thread(_hasher(time_cost, memory_cost, parallelism).hash, "dummy password for timing")


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

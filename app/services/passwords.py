"""Password hashing and policy: pure functions over the app's configured parameters.

argon2id at OWASP parameters (m=19 MiB, t=2, p=1 or stronger). The hashes of the services users
move from (werkzeug pbkdf2/scrypt, bcrypt, Django PBKDF2, argon2id of other parameters:
app/services/hashformats.py) still verify, and any hash that is not current argon2id is flagged
for an upgrade on the next successful login. A failed check lasts as long as one of the costliest
format stored (FailureTiming), so timing does not tell which accounts were imported.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher
from flask import current_app

from app.errors import ValidationFailed
from app.services import hashformats

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

    def _compute(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
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
            self.libc: ctypes.CDLL | None = libc
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
    """Run a password-hash computation (argon2id, or a check of another format) on this process's hashing threads."""
    return _hashing_threads(current_app.config["PASSWORD_HASH_CONCURRENCY"], os.getpid()).run(function, *args)


def hash_password(password: str) -> str:
    """Hash a password with argon2id; the whole password, never truncated."""
    return _on_hashing_thread(hasher().hash, normalize(password))


def verify_password(stored_hash: str, password: str) -> tuple[bool, bool]:
    """Check a password against a stored hash of any accepted format; return (matches, needs_rehash).

    The format is told by the hash's prefix (app/services/hashformats.py). The service's own
    argon2id hashes are of the NFKC-normalized password (`normalize`); the other services hashed
    what was typed. So the normalized form is tried first, and the typed form too when it differs,
    whatever the format: the number of checks then depends on the password alone, never on the
    account, and a hash that matched only the typed form is upgraded. Every hash not in the
    current argon2id form (another format, weaker parameters) needs a rehash: the caller stores
    hash_password(password) once the login succeeds. An unusable or unreadable hash costs the same
    as an unknown account's check and never matches. A failure lasts at least FailureTiming's floor.
    """
    started = time.monotonic()
    forms = _forms(password)
    found = hashformats.format_of(stored_hash)
    if found is None:  # the "!" of an account that must reset, or a hash that cannot verify
        for form in forms:
            _check(hashformats.ARGON2, _current_dummy(), form)
        _pad_failure(started, len(forms))
        return False, False
    for index, form in enumerate(forms):
        if _check(found, stored_hash, form):
            if not found.own or index > 0:
                return True, True
            return True, hasher().check_needs_rehash(stored_hash)
    _pad_failure(started, len(forms))
    return False, False


def _forms(password: str) -> tuple[str, ...]:
    """The normalized password, then the typed one when it differs (see verify_password)."""
    candidate = normalize(password)
    return (candidate,) if candidate == password else (candidate, password)


def _check(found: hashformats.HashFormat, stored_hash: str, password: str) -> bool:
    """One check on a hashing thread, its cost remembered by FailureTiming."""
    return _on_hashing_thread(_timed_check, _timing(), found, stored_hash, password)


def _timed_check(timing: FailureTiming, found: hashformats.HashFormat, stored_hash: str, password: str) -> bool:
    """Run on the hashing thread: the check and what it cost, queueing left out."""
    started = time.perf_counter()
    try:
        return found.check(stored_hash, password)
    finally:
        timing.observe(hashformats.cost_class(stored_hash), time.perf_counter() - started)


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int) -> str:
    """A hash of a random value with the current parameters, made once per parameter set."""
    return _on_hashing_thread(_hasher(time_cost, memory_cost, parallelism).hash, secrets.token_urlsafe(24))


def _current_dummy() -> str:
    """The dummy hash of the current parameters."""
    config = current_app.config
    return _dummy_hash(config["ARGON2_TIME_COST"], config["ARGON2_MEMORY_COST"], config["ARGON2_PARALLELISM"])


def burn_verification(password: str) -> None:
    """Spend one verification when there is no account, so timing does not reveal that (ASVS 2.2.x).

    The same argon2id check as an account of the service's own, whatever formats are stored; a
    foreign format that costs more is answered by the failure floor (FailureTiming), not here.
    """
    verify_password(_current_dummy(), password)


def unusable_hash() -> str:
    """The stored hash of an account without a password: it never verifies; a reset gives one."""
    return hashformats.UNUSABLE_PREFIX + secrets.token_urlsafe(32)


def current_prefix() -> str:
    """The start of every hash in the current argon2id form: any other stored hash is upgraded at login."""
    config = current_app.config
    return (
        f"$argon2id$v=19$m={config['ARGON2_MEMORY_COST']},t={config['ARGON2_TIME_COST']},"
        f"p={config['ARGON2_PARALLELISM']}$"
    )


class FailureTiming:
    """What one check of each cost class takes in this app, so that every failed check takes as long
    as a failed check of the costliest class stored.

    Why: a login for an unknown account checks a dummy argon2id hash (burn_verification), while
    an imported account not yet upgraded checks its bcrypt, PBKDF2 or scrypt hash: typically
    3 to 10 times the cost of argon2id at OWASP parameters (bcrypt cost 12 ~270 ms, werkzeug's
    PBKDF2 with 1,000,000 iterations ~160 ms, argon2id m=19 MiB ~40 ms on this machine). Unpadded,
    the answer's time would tell an attacker which addresses hold a migrated account (ASVS 5.0
    V6.3.8, "valid users cannot be deduced from ... different response times"; OWASP Authentication
    Cheat Sheet, "Authentication Responses"; Django fixed the same leak of a work-factor upgrade as
    CVE-2016-2513). A faster dummy cannot be made slower per account without knowing the account,
    and a foreign hash cannot be checked faster, so failures are padded instead: every failed check
    (wrong password of any format, unknown account, account without a password) returns no
    earlier than the slowest class's mean check time, per form checked. Successes are not padded:
    they reveal the account anyway, to whoever knows its password, and most logins stay fast.
    The padding is a sleep on the request's thread, not CPU, and applies only while a hash of
    another class than the current argon2id is known to be stored: a service of argon2id alone
    behaves exactly as before. Costs are learnt from every check (a moving mean), and from the
    database before any is answered (passwords.calibrate, credentials.release_connection), again
    every RESAMPLE_SECONDS: an import into a running service is padded within that time
    (passwords.keep_calibrated, called by credentials.release_connection before every check).
    """

    RESAMPLE_SECONDS = 60.0
    WEIGHT = 0.2  # of the newest sample in the moving mean
    MAX_CLASSES = 8  # checked by one calibration; more classes than that in one service is unheard of

    def __init__(self) -> None:
        """Nothing known yet."""
        self.lock = threading.Lock()
        self.costs: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.sampled_at: float | None = None
        self.sampled_wall: datetime | None = None  # when the last full read of the stored hashes began
        self.foreign_stored = False  # whether it found any hash not in the current argon2id form
        self.calibrating = False
        self.idle = threading.Event()  # cleared while a calibration runs
        self.idle.set()

    def observe(self, cost_class: str | None, seconds: float) -> None:
        """One check of `cost_class` took `seconds`."""
        if cost_class is None:
            return
        with self.lock:
            old = self.costs.get(cost_class)
            self.costs[cost_class] = seconds if old is None else old + self.WEIGHT * (seconds - old)
            self.seen[cost_class] = time.monotonic()

    def floor(self, current: str) -> float:
        """The seconds a failed check must last: the costliest class's, or 0 while only `current` is known."""
        # While the database is sampled, failures wait for what it holds: right after an import,
        # the first answers for unknown accounts must already last as long as the new format's.
        self.idle.wait(10)
        with self.lock:
            if not any(cost_class != current for cost_class in self.costs):
                return 0.0
            return max(self.costs.values())

    def claim(self) -> bool:
        """True for the one caller that should sample the database now."""
        with self.lock:
            due = self.sampled_at is None or time.monotonic() - self.sampled_at > self.RESAMPLE_SECONDS
            if not due or self.calibrating:
                return False
            self.calibrating = True
            self.idle.clear()
            return True

    def forget_except(self, present: set[str], current: str) -> None:
        """Drop the classes neither in the latest sample nor checked since the sample before it."""
        with self.lock:
            previous = self.sampled_at or 0.0
            for cost_class in list(self.costs):
                if cost_class not in present and cost_class != current and self.seen[cost_class] < previous:
                    del self.costs[cost_class], self.seen[cost_class]
            self.sampled_at = time.monotonic()
            self.calibrating = False
        self.idle.set()

    def abandon(self) -> None:
        """A calibration that could not read the database: the next caller tries again."""
        with self.lock:
            self.calibrating = False
        self.idle.set()


def _timing() -> FailureTiming:
    """This app's FailureTiming."""
    timing: FailureTiming = current_app.extensions.setdefault("password_timing", FailureTiming())
    return timing


def _current_class() -> str:
    """The cost class of the hashes this service makes now."""
    config = current_app.config
    return f"argon2id:m={config['ARGON2_MEMORY_COST']},t={config['ARGON2_TIME_COST']},p={config['ARGON2_PARALLELISM']}"


def _pad_failure(started: float, checks: int) -> None:
    """Sleep until a failure that began at `started` has lasted the floor, `checks` times."""
    floor = _timing().floor(_current_class())
    if floor:
        remaining = started + floor * checks - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)


def keep_calibrated(read_hashes: Callable[[datetime | None], list[str] | None]) -> None:
    """When due, learn on a thread what checking each format among the stored hashes costs (FailureTiming).

    `read_hashes(since)` reads a sample of the stored hashes not in the current form; with a
    `since`, it may answer None instead: nothing was imported since then, so the last sample,
    which found no such hash, still holds (and no table scan is needed). A thread, so no request
    waits for the read or the checks, except the failures answered meanwhile (FailureTiming.floor).
    """
    timing = _timing()
    if not timing.claim():
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    threading.Thread(
        target=_calibrate_in_background, args=(app, timing, read_hashes), name="hash-calibration", daemon=True
    ).start()


def _calibrate_in_background(
    app: Any, timing: FailureTiming, read_hashes: Callable[[datetime | None], list[str] | None]
) -> None:
    """keep_calibrated's thread; a failed read is retried at the next due time."""
    with app.app_context():
        started = datetime.now(UTC)
        since = None if timing.sampled_wall is None or timing.foreign_stored else timing.sampled_wall
        try:
            stored_hashes = read_hashes(since)
        except Exception:  # the database is away: the padding keeps what it knew
            app.logger.warning("password timing: the stored hashes could not be read", exc_info=True)
            timing.abandon()
            return
        if stored_hashes is not None:
            timing.sampled_wall = started
            timing.foreign_stored = any(not stored.startswith(hashformats.UNUSABLE_PREFIX) for stored in stored_hashes)
        calibrate(stored_hashes or [])


def calibrate(stored_hashes: list[str]) -> None:
    """Learn what a check of each cost class among `stored_hashes` takes, before one is timed by an attacker.

    One check with a random password per class not yet known (and one of the current argon2id).
    """
    timing = _timing()
    current = _current_class()
    samples: dict[str, tuple[hashformats.HashFormat, str]] = {}
    try:
        for stored in stored_hashes:
            found = hashformats.format_of(stored)
            cost_class = hashformats.cost_class(stored) if found is not None else None
            if (
                found is not None
                and cost_class is not None
                and cost_class != current
                and len(samples) < timing.MAX_CLASSES
            ):
                samples.setdefault(cost_class, (found, stored))
        unknown = [pair for cost_class, pair in samples.items() if cost_class not in timing.costs]
        if unknown and current not in timing.costs:
            unknown.append((hashformats.ARGON2, _current_dummy()))
        for found, stored in unknown:
            _check(found, stored, secrets.token_urlsafe(16))
    finally:
        timing.forget_except(set(samples), current)


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

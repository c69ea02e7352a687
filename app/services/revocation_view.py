"""The in-process revocation view: what the database says about a token, remembered per worker.

The database stays the source of truth. verify_token asks this cache first; on a miss it asks
the database and remembers the answer. Every change that can affect a token (a revoked
session or jti, a user updated, deactivated or deleted) invalidates that user's entries:
locally at once after the commit, and in every other worker and instance through PostgreSQL
LISTEN/NOTIFY, sent inside the same transaction so listeners hear of it only once it is
committed.

It fails closed: the cache is used only while this worker's listener is connected. When the
listener is down (or the database is not PostgreSQL) every check goes to the database; when it
reconnects the cache starts empty, because notifications sent meanwhile were missed. A fill
that raced an invalidation is dropped (the epoch moved). docs/DESIGN.md: a revocation is visible to
every worker within a bounded, tested time (issue 5: one second).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session as OrmSession

log = logging.getLogger(__name__)

CHANNEL = "auth_revocations"
PENDING_KEY = "revocation_view.pending_users"
HEARTBEAT_SECONDS = 0.5  # a silent, broken listener is noticed within about this long
# ~1 KiB of Python objects per entry (a TokenState, its key's UUIDs and jti, the LRU and per-user
# links: bench/PROFILE.md, "Memory"), so this bound is ~10 MiB per worker. 100,000 was ~100 MiB
# per worker once that many distinct tokens came within ENTRY_TTL_SECONDS. Least recently used
# goes first, so the tokens presented most stay; a token pushed out costs one query again.
MAX_ENTRIES = 10_000
ENTRY_TTL_SECONDS = 60.0  # belt and braces: no entry outlives this even if all else failed
# What an entry is found by: the token's jti, user and session together. The state read from the
# database is about all three (STATE_QUERY), so a token that shares only the jti with a cached
# one (forged with a leaked key, or a jti reused) is read on its own (defence in depth, ASVS 3.5.3).
TokenKey = tuple[str, uuid.UUID, uuid.UUID]


@dataclass(frozen=True, slots=True)
class TokenState:
    """What the database says about a token's user and session.

    The user's other columns that every response shows (app/schemas/common.py UserSchema) come
    along: they change only with the row, and every change of the row invalidates the entry,
    so GET /me answers from the same state that verified the token, without another query.
    """

    user_exists: bool
    email: str | None = None
    username: str | None = None
    role: str | None = None
    is_active: bool = False
    tokens_valid_after: datetime | None = None
    session_live: bool = False
    jti_revoked: bool = False
    name: str | None = None
    email_verified: bool = False
    pending_email: str | None = None
    mfa_enabled: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RevocationCache:
    """A bounded LRU of TokenState by (jti, user, session), with per-user invalidation and a listener health flag.

    It holds a service client's row too (app/services/clients.py, ClientState under
    ("client", id, id)): values are typed `object`, and each reader checks the kind it reads.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = ENTRY_TTL_SECONDS) -> None:
        """An empty cache, unusable until a listener says it is connected."""
        self._entries: OrderedDict[TokenKey, tuple[object, float]] = OrderedDict()
        self._by_user: dict[uuid.UUID, set[TokenKey]] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._ttl = ttl
        self.epoch = 0
        self.listening = False

    def get(self, key: TokenKey) -> object | None:
        """The remembered state, if the cache may be trusted and has it."""
        if not self.listening:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            state, stored = found
            if time.monotonic() - stored > self._ttl:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return state

    def put(self, key: TokenKey, state: object, epoch: int) -> None:
        """Remember a state read from the database, unless anything was invalidated since `epoch`."""
        with self._lock:
            if not self.listening or epoch != self.epoch:
                return
            self._entries[key] = (state, time.monotonic())
            self._entries.move_to_end(key)
            self._by_user.setdefault(key[1], set()).add(key)
            while len(self._entries) > self._max:
                old_key, _ = self._entries.popitem(last=False)
                self._forget_user_entry(old_key)

    def invalidate_user(self, user_id: uuid.UUID) -> None:
        """Forget every entry of one user."""
        with self._lock:
            self.epoch += 1
            for key in self._by_user.pop(user_id, ()):
                self._entries.pop(key, None)

    def clear(self, *, listening: bool) -> None:
        """Forget everything and set whether the cache may be used."""
        with self._lock:
            self.epoch += 1
            self._entries.clear()
            self._by_user.clear()
            self.listening = listening

    def __len__(self) -> int:
        """How many entries are held."""
        return len(self._entries)

    def _drop(self, key: TokenKey) -> None:
        """Remove one entry (lock held)."""
        self._entries.pop(key, None)
        self._forget_user_entry(key)

    def _forget_user_entry(self, key: TokenKey) -> None:
        """Unlink an entry from its user (lock held)."""
        keys = self._by_user.get(key[1])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[key[1]]


class Listener:
    """A thread holding a LISTEN connection; it invalidates the cache on every notification."""

    def __init__(self, cache: RevocationCache, dsn: str) -> None:
        """Prepare; start() runs it."""
        self.cache = cache
        self.dsn = dsn
        self.pid = os.getpid()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="revocation-listener", daemon=True)

    def start(self) -> None:
        """Run in the background."""
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to end."""
        self.stopping.set()

    def _run(self) -> None:
        """Listen; on any failure fall back to direct lookups, and reconnect with a backoff."""
        import psycopg2
        from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT

        backoff = 0.2
        lost = False  # said once per outage: a reconnect attempt every few seconds is not news
        while not self.stopping.is_set():
            connection = None
            try:
                connection = psycopg2.connect(
                    self.dsn, connect_timeout=3, keepalives=1, keepalives_idle=5, keepalives_interval=2,
                    keepalives_count=2, application_name="auth-revocation-listener",
                )  # fmt: skip
                connection.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
                with connection.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
                # Anything revoked while we were not listening is unknown: start empty.
                self.cache.clear(listening=True)
                backoff = 0.2
                if lost:
                    log.warning("revocation listener back; the revocation view is in use again")
                    lost = False
                self._listen(connection)
            except Exception as error:
                if not self.stopping.is_set() and not lost:
                    # An expected failure (the database went away): one line, no traceback.
                    cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    log.warning(
                        "revocation listener lost (%s: %s); checking the database directly until it is back",
                        type(error).__name__,
                        cause,
                    )
                    lost = True
            finally:
                self.cache.clear(listening=False)
                if connection is not None:
                    try:
                        connection.close()
                    except Exception:  # already broken
                        pass
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _listen(self, connection: Any) -> None:
        """Apply notifications until the connection fails or we are stopped."""
        while not self.stopping.is_set():
            readable, _, _ = select.select([connection], [], [], HEARTBEAT_SECONDS)
            if readable:
                connection.poll()
            else:
                with connection.cursor() as cursor:  # heartbeat: a dead link raises here
                    cursor.execute("SELECT 1")
                connection.poll()
            while connection.notifies:
                self._apply(connection.notifies.pop(0).payload)

    def _apply(self, payload: str) -> None:
        """Invalidate what a notification names."""
        try:
            self.cache.invalidate_user(uuid.UUID(payload))
        except ValueError:
            self.cache.clear(listening=True)  # unknown payload: be safe


class RevocationView:
    """The app's cache and its listener (started lazily in each worker process, after any fork)."""

    def __init__(self, *, dsn: str | None) -> None:
        """dsn is a libpq connection string for PostgreSQL, or None to never cache."""
        self.cache = RevocationCache()
        self.dsn = dsn
        self.listener: Listener | None = None
        self._lock = threading.Lock()

    def ensure_listening(self) -> None:
        """Start this process's listener if there should be one and there is none."""
        if self.dsn is None:
            return
        listener = self.listener
        if listener is not None and listener.pid == os.getpid() and listener.thread.is_alive():
            return
        with self._lock:
            listener = self.listener
            if listener is None or listener.pid != os.getpid() or not listener.thread.is_alive():
                self.cache.clear(listening=False)  # a forked copy knows nothing it can trust
                self.listener = Listener(self.cache, self.dsn)
                self.listener.start()

    def stop(self) -> None:
        """Stop the listener (tests, shutdown)."""
        if self.listener is not None:
            self.listener.stop()


def libpq_dsn(url: Any) -> str | None:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL; None for other databases."""
    if url.get_backend_name() != "postgresql":
        return None
    parts = {
        "host": url.host,
        "port": url.port,
        "dbname": url.database,
        "user": url.username,
        "password": url.password,
    }
    parts.update({key: value for key, value in url.query.items() if isinstance(value, str)})
    return " ".join(f"{key}='{str(value)}'" for key, value in parts.items() if value is not None)


def invalidate_user(session: OrmSession, user_id: uuid.UUID) -> None:
    """Mark a user's tokens as changed in this transaction: announced at commit, dropped after it."""
    session.info.setdefault(PENDING_KEY, set()).add(user_id)


def _view() -> RevocationView | None:
    """The current app's view (None outside an app, e.g. a bare script)."""
    from flask import current_app, has_app_context

    return current_app.extensions.get("revocations") if has_app_context() else None


def _before_commit(session: OrmSession) -> None:
    """Announce the pending invalidations inside the transaction (delivered on commit)."""
    session.flush()  # the flush hook may add pending users; commit would flush after this hook
    pending = session.info.get(PENDING_KEY)
    if pending and session.get_bind().dialect.name == "postgresql":
        for user_id in pending:
            session.execute(_NOTIFY, {"channel": CHANNEL, "payload": str(user_id)})


def _after_commit(session: OrmSession) -> None:
    """Drop this worker's entries at once; the others hear it through the notification."""
    pending = session.info.pop(PENDING_KEY, ())
    view = _view()
    if view is not None:
        for user_id in pending:
            view.cache.invalidate_user(user_id)


def _after_rollback(session: OrmSession, _transaction: Any) -> None:
    """A rolled-back change announces nothing."""
    session.info.pop(PENDING_KEY, None)


def _after_flush(session: OrmSession, _context: Any) -> None:
    """Any user, session or revocation row written through the ORM invalidates its user."""
    from app.models import RevokedToken, Session, User

    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, User) and obj.id is not None:
            invalidate_user(session, obj.id)
        elif isinstance(obj, (Session, RevokedToken)) and obj.user_id is not None:
            invalidate_user(session, obj.user_id)


def install_hooks() -> None:
    """Wire the transaction hooks once per process."""
    if not event.contains(OrmSession, "before_commit", _before_commit):
        event.listen(OrmSession, "after_flush", _after_flush)
        event.listen(OrmSession, "before_commit", _before_commit)
        event.listen(OrmSession, "after_commit", _after_commit)
        event.listen(OrmSession, "after_soft_rollback", _after_rollback)


_NOTIFY = text("SELECT pg_notify(:channel, :payload)")

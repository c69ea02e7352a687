"""The benchmark's own PostgreSQL database: create, migrate, bulk-load with COPY, sign real tokens, drop."""

from __future__ import annotations

import inspect
import io
import os
import random
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg2
import pyotp
from sqlalchemy.engine import make_url

from bench.server import BIN, ROOT

PASSWORD = "bench password for every seeded user"
EMAIL = "user{}@bench.example"
CHUNK_ROWS = 200_000
TABLES = ("users", "revoked_tokens", "sessions")
MFA_EMAIL = "mfa{}@bench.example"


class BenchDatabase:
    """A throwaway database auth_bench_<random> on the given PostgreSQL server."""

    def __init__(self, server_url: str) -> None:
        """Pick a name; nothing is created until create()."""
        self.server = make_url(server_url).set(drivername="postgresql")
        self.name = f"auth_bench_{secrets.token_hex(5)}"
        self.url = self.server.set(database=self.name).render_as_string(hide_password=False)
        self.created = False

    def _admin(self):
        """An autocommit connection to the server's maintenance database."""
        conn = psycopg2.connect(self.server.render_as_string(hide_password=False), connect_timeout=5)
        conn.autocommit = True
        return conn

    def _admin_execute(self, sql: str) -> tuple | None:
        """One statement outside any transaction (CREATE/DROP DATABASE need that); its first row."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone() if cur.description else None
        finally:
            conn.close()

    def create(self) -> None:
        """CREATE DATABASE."""
        self._admin_execute(f'CREATE DATABASE "{self.name}"')
        self.created = True

    def drop(self) -> None:
        """DROP DATABASE … WITH (FORCE), so a server still connected cannot keep it alive."""
        if not self.created:
            return
        self._admin_execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.created = False

    def connect(self):
        """A connection to the bench database."""
        return psycopg2.connect(self.url, connect_timeout=5)

    def server_version(self) -> str:
        """The server's version string."""
        return f"PostgreSQL {self._admin_execute('SHOW server_version')[0]}"

    def migrate(self, env: dict[str, str]) -> None:
        """`flask db upgrade`, the only way the schema is created."""
        done = subprocess.run(
            [str(BIN / "flask"), "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"flask db upgrade failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")


def uuid_strings(count: int) -> list[str]:
    """`count` random version-4 UUIDs as text, several times faster than str(uuid.uuid4()) in a loop."""
    raw = os.urandom(16 * count).hex()
    variant = "89ab"
    out = []
    for start in range(0, 32 * count, 32):
        h = raw[start : start + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}")
    return out


def copy_rows(cur, table: str, columns: str, rows: Iterable[str]) -> None:
    """COPY text-format rows into `table`, CHUNK_ROWS at a time."""
    chunk: list[str] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK_ROWS:
            cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", io.StringIO("".join(chunk)))
            chunk = []
    if chunk:
        cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", io.StringIO("".join(chunk)))


def drop_keys(cur, tables: tuple[str, ...]) -> list[str]:
    """Drop the keys and indexes of `tables` (and foreign keys into them); return the SQL that restores them.

    A bulk load into bare tables and one index build afterwards is several times faster than
    maintaining every index row by row; the definitions are read back from the catalog, so what is
    rebuilt is exactly what the migrations made.
    """
    cur.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype
        FROM pg_constraint c
        WHERE c.contype IN ('p', 'u', 'f')
          AND (c.conrelid = ANY(%(t)s::regclass[]) OR (c.contype = 'f' AND c.confrelid = ANY(%(t)s::regclass[])))
        ORDER BY c.contype = 'f' DESC
        """,
        {"t": list(tables)},
    )
    constraints = cur.fetchall()
    cur.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid = ANY(%(t)s::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u'))
        """,
        {"t": list(tables)},
    )
    indexes = cur.fetchall()
    for table, name, _, _ in constraints:  # foreign keys first: they depend on the primary keys
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cur.execute(f"DROP INDEX {name}")
    restore = [
        f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {ddl}' for table, name, ddl, kind in constraints if kind != "f"
    ]
    restore += [ddl for _, ddl in indexes]
    restore += [
        f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {ddl}' for table, name, ddl, kind in constraints if kind == "f"
    ]
    return restore


def issue(**claims):
    """The app's own issue_pair, given only the arguments its signature takes (it has grown over time)."""
    from app.services.issuing import issue_pair

    accepted = inspect.signature(issue_pair).parameters
    return issue_pair(**{name: value for name, value in claims.items() if name in accepted})


@dataclass
class Seeded:
    """What the load needs to know about a seeded scale."""

    scale: int
    sample: list[tuple[str, str]]  # (user id, session id) of the users whose access tokens are benchmarked
    started: datetime  # created_at of every seeded session
    login_emails: list[str]
    refresh_tokens: list[str]  # single-use, one per pool session
    spare_refresh_token: str  # spent by the pre-flight check, never by the load
    churn_sessions: list[tuple[str, str]]  # (user id, session id): more sessions of sample users, to revoke
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    mfa_users: list[tuple[str, str]] = field(default_factory=list)  # (user id, TOTP seed) of users with TOTP on


def seed(
    database: BenchDatabase,
    app,
    *,
    scale: int,
    sample_size: int,
    refresh_pool: int,
    password_hash: str,
    churn_pool: int = 0,
    mfa_pool: int = 0,
) -> Seeded:
    """Empty the tables, then load `scale` users, `scale` revocations and a session per user with COPY.

    Every user shares one real argon2id hash of PASSWORD made with the production parameters, so any
    of them can log in. Refresh tokens for the pool are signed by the app's own issue_pair, each with
    its own session row holding its jti, so each can be spent exactly once. `churn_pool` more
    sessions of the sample's users (none of them a session a benchmarked token belongs to) are
    there for bench/churn.py to revoke. `mfa_pool` more users (mfa<i>@bench.example, on top of
    `scale`) have TOTP enrolled and confirmed, each seed encrypted by the app's own secretbox, for
    /login/mfa: a TOTP step is accepted once per user, so each of them completes one login.
    """
    started = time.monotonic()
    rng = random.Random()
    now = datetime.now(UTC)
    now_text = now.isoformat()
    user_ids = uuid_strings(scale)
    session_ids = uuid_strings(scale)
    # Revocations carry the expiry of what they revoke: spread over the next 30 days, all in the future.
    expiries = [(now + timedelta(seconds=rng.randint(3600, 30 * 86400))).isoformat() for _ in range(1000)]
    refresh_expiry = (now + timedelta(days=30)).isoformat()

    picks = rng.sample(range(scale), k=min(sample_size, scale))
    sample = [(user_ids[i], session_ids[i]) for i in picks]
    login_emails = [EMAIL.format(i) for i in picks[:200]]

    phases: dict[str, float] = {}
    pool: list[tuple[str, str, str, str]] = []  # (session id, user id, refresh jti, refresh token)
    signing_started = time.monotonic()
    with app.app_context():
        for sid in uuid_strings(refresh_pool + 1):
            user_id, _ = sample[len(pool) % len(sample)]
            pair = issue(
                user_id=uuid.UUID(user_id), roles=["user"], sid=uuid.UUID(sid), fresh=True, session_started=now
            )
            pool.append((sid, user_id, pair.refresh_jti, pair.refresh_token))

    phases["signing refresh tokens"] = time.monotonic() - signing_started
    churn = [(sample[n % len(sample)][0], sid) for n, sid in enumerate(uuid_strings(churn_pool))]
    mfa_users = [(uid, pyotp.random_base32()) for uid in uuid_strings(mfa_pool)]
    with app.app_context():
        from app.services import secretbox

        sealed = [secretbox.encrypt(seed) for _, seed in mfa_users]

    conn = database.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("TRUNCATE revoked_tokens, sessions, mfa_totp, mfa_challenges, users CASCADE")
            cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
            restore = drop_keys(cur, TABLES)
            copy_started = time.monotonic()
            copy_rows(
                cur,
                "users",
                "id, email, username, username_key, name, password_hash, role, is_active, email_verified, "
                "tokens_valid_after, created_at, updated_at",
                (
                    f"{uid}\tuser{i}@bench.example\tuser{i}\tuser{i}\tBench User {i}\t{password_hash}\tuser\tt\tf"
                    f"\t\\N\t{now_text}\t{now_text}\n"
                    for i, uid in enumerate(user_ids)
                ),
            )
            revoked_users = rng.choices(user_ids, k=scale)
            copy_rows(
                cur,
                "users",
                "id, email, username, username_key, name, password_hash, role, is_active, email_verified, "
                "tokens_valid_after, created_at, updated_at, mfa_enabled",
                (
                    f"{uid}\t{MFA_EMAIL.format(i)}\tmfa{i}\tmfa{i}\tBench MFA User {i}\t{password_hash}\tuser\tt\tf"
                    f"\t\\N\t{now_text}\t{now_text}\tt\n"
                    for i, (uid, _) in enumerate(mfa_users)
                ),
            )
            copy_rows(
                cur,
                "mfa_totp",
                "user_id, secret, created_at, confirmed_at, last_step",
                (
                    f"{uid}\t{box}\t{now_text}\t{now_text}\t\\N\n"
                    for (uid, _), box in zip(mfa_users, sealed, strict=True)
                ),
            )
            copy_rows(
                cur,
                "revoked_tokens",
                "jti, token_type, user_id, revoked_at, expires_at",
                (
                    f"{jti}\t{'access' if i % 2 else 'refresh'}\t{revoked_users[i]}\t{now_text}\t{expiries[i % 1000]}\n"
                    for i, jti in enumerate(uuid_strings(scale))
                ),
            )
            columns = "id, user_id, refresh_jti, created_at, last_used_at, expires_at, user_agent, ip, revoked_at"
            copy_rows(
                cur,
                "sessions",
                columns,
                (
                    f"{sid}\t{user_ids[i]}\t{jti}\t{now_text}\t{now_text}\t{refresh_expiry}\tbench\t127.0.0.1\t\\N\n"
                    for i, (sid, jti) in enumerate(zip(session_ids, uuid_strings(scale), strict=True))
                ),
            )
            copy_rows(
                cur,
                "sessions",
                columns,
                (
                    f"{sid}\t{uid}\t{jti}\t{now_text}\t{now_text}\t{refresh_expiry}\tbench\t127.0.0.1\t\\N\n"
                    for sid, uid, jti, _ in pool
                ),
            )
            copy_rows(
                cur,
                "sessions",
                columns,
                (
                    f"{sid}\t{uid}\t{jti}\t{now_text}\t{now_text}\t{refresh_expiry}\tbench\t127.0.0.1\t\\N\n"
                    for (uid, sid), jti in zip(churn, uuid_strings(len(churn)), strict=True)
                ),
            )
            index_started = time.monotonic()
            for statement in restore:
                cur.execute(statement)
        conn.commit()
        phases["COPY"] = index_started - copy_started
        phases["keys and indexes"] = time.monotonic() - index_started
        vacuum_started = time.monotonic()
        # Fresh statistics and visibility map now, so autovacuum and a checkpoint do not land mid-measurement.
        conn.autocommit = True
        with conn.cursor() as cur:
            for table in TABLES:
                cur.execute(f"VACUUM (ANALYZE) {table}")
            cur.execute("CHECKPOINT")
            counts = {}
            for table in TABLES:
                cur.execute(f"SELECT count(*) FROM {table}")
                counts[table] = cur.fetchone()[0]
        phases["VACUUM ANALYZE"] = time.monotonic() - vacuum_started
    finally:
        conn.close()
    return Seeded(
        scale=scale,
        sample=sample,
        started=now,
        login_emails=login_emails,
        refresh_tokens=[token for *_, token in pool[1:]],
        spare_refresh_token=pool[0][3],
        churn_sessions=churn,
        mfa_users=mfa_users,
        seconds=time.monotonic() - started,
        counts=counts,
        phases=phases,
    )


def sign_access_tokens(app, seeded: Seeded) -> list[str]:
    """Fresh access tokens (15-minute lifetime) for the sample, signed by the app's issue_pair."""
    with app.app_context():
        return [
            issue(
                user_id=uuid.UUID(uid), roles=["user"], sid=uuid.UUID(sid), fresh=True, session_started=seeded.started
            ).access_token
            for uid, sid in seeded.sample
        ]

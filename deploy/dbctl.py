"""Database chores for the container entrypoint.

    python deploy/dbctl.py wait                  until the database answers (DB_WAIT_TIMEOUT seconds)
    python deploy/dbctl.py locked -- CMD ...     run CMD holding the migration lock

`wait` first builds the app's configuration, so a missing or weak secret stops the container at
once (exit 64) instead of after the wait. `locked` serializes `flask db upgrade` across replicas
that start together (PostgreSQL advisory lock, MySQL named lock; SQLite locks its file itself):
one migrates, the others then find the schema at head and do nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from dotenv import load_dotenv  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from config import ConfigError, get_config  # noqa: E402

EX_CONFIG = 64  # a configuration mistake: restarting will not help
# An arbitrary constant that names "auth-service migrations" among advisory locks.
PG_LOCK_KEY = 0x61757468  # "auth"
MYSQL_LOCK_NAME = "auth-service-migrations"


def log(message: str) -> None:
    """One line on stderr, prefixed like the shell entrypoint's."""
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


def _seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1
    if value <= 0:
        log(f"{name} must be a positive number of seconds, got {raw!r}")
        raise SystemExit(EX_CONFIG)
    return value


def _engine() -> sa.Engine:
    """An engine on the configured database, or exit 64 when the configuration is refused."""
    load_dotenv(override=False)  # as create_app() does, so both see the same settings
    try:
        settings = get_config()
    except ConfigError as error:
        log(f"configuration refused: {error}")
        raise SystemExit(EX_CONFIG) from None
    url = settings.SQLALCHEMY_DATABASE_URI
    connect_args = {} if url.startswith("sqlite") else {"connect_timeout": 5}
    return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)


def _reason(error: Exception) -> str:
    """The first line of a driver error: says why, never carries the password."""
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def wait() -> int:
    """Poll until a connection succeeds; 0 then, 1 when DB_WAIT_TIMEOUT runs out."""
    engine = _engine()
    timeout = _seconds("DB_WAIT_TIMEOUT", 60)
    interval = _seconds("DB_WAIT_INTERVAL", 1)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            log("the database answers")
            return 0
        except SQLAlchemyError as error:
            reason = _reason(error)
        if time.monotonic() >= deadline:
            log(f"the database did not answer within {timeout:g}s; giving up ({reason})")
            return 1
        if reason != last:
            log(f"waiting for the database ({reason})")
            last = reason
        time.sleep(interval)


def locked(command: list[str]) -> int:
    """Run `command` while holding the migration lock; its exit status is returned."""
    if not command:
        log("locked: no command given")
        return EX_CONFIG
    engine = _engine()
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "mysql"):
        return subprocess.call(command)
    # Autocommit: the lock belongs to the session, and no transaction stays open while it is held.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        log("taking the migration lock")
        if dialect == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
        else:
            got = connection.execute(sa.text("SELECT GET_LOCK(:name, 600)"), {"name": MYSQL_LOCK_NAME}).scalar()
            if got != 1:
                log("could not take the migration lock within 600s")
                return 1
        try:
            return subprocess.call(command)
        finally:
            if dialect == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
            else:
                connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": MYSQL_LOCK_NAME})


def main(argv: list[str] | None = None) -> int:
    """Dispatch the sub-command."""
    parser = argparse.ArgumentParser(prog="dbctl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("wait", help="wait until the database answers")
    run = sub.add_parser("locked", help="run a command holding the migration lock")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.action == "wait":
        return wait()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return locked(command)


if __name__ == "__main__":
    sys.exit(main())

"""Throwaway databases for the suite: each backend's database is created and dropped by it."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

POSTGRES_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
MYSQL_SERVER = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
# The machine's Redis, for production-like servers (their per-IP limits are shared through it).
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Backend:
    """A database server the suite can make databases on."""

    name: str
    server_url: str | None

    def reachable(self) -> str | None:
        """None if the server answers, else why not."""
        if self.server_url is None:
            return None
        try:
            engine = sa.create_engine(self.server_url, connect_args=_connect_timeout(self.name))
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            engine.dispose()
        except Exception as error:  # any failure to connect means: not reachable
            return f"{type(error).__name__}: {str(error).splitlines()[0]}"
        return None

    def create(self, tmp_dir: str) -> str:
        """Create a fresh database and return its URL."""
        name = f"auth_test_{uuid.uuid4().hex[:10]}"
        if self.name == "sqlite":
            return f"sqlite:///{tmp_dir}/{name}.db"
        if self.name == "postgresql":
            self._on_server(f'CREATE DATABASE "{name}"')
        else:
            self._on_server(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return str(sa.engine.make_url(self.server_url).set(database=name).render_as_string(hide_password=False))

    def drop(self, url: str) -> None:
        """Drop a database made by create()."""
        if self.name == "sqlite":
            return
        name = sa.engine.make_url(url).database
        if self.name == "postgresql":
            self._on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            self._on_server(f"DROP DATABASE IF EXISTS `{name}`")

    def _on_server(self, statement: str) -> None:
        """Run one statement on the server, outside a transaction (CREATE/DROP DATABASE need that)."""
        engine = sa.create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
        engine.dispose()


def _connect_timeout(name: str) -> dict:
    """Fail fast when a server is down."""
    return {"connect_timeout": 3} if name in ("postgresql", "mysql") else {}


BACKENDS = {
    "sqlite": Backend("sqlite", None),
    "postgresql": Backend("postgresql", POSTGRES_SERVER),
    "mysql": Backend("mysql", MYSQL_SERVER),
}


def selected_backends() -> list[str]:
    """TEST_BACKENDS (comma-separated) or all three."""
    raw = os.environ.get("TEST_BACKENDS", "sqlite,postgresql,mysql")
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = set(names) - set(BACKENDS)
    if unknown:
        raise ValueError(f"TEST_BACKENDS names unknown backends: {sorted(unknown)}")
    return names

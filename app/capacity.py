"""The connection budget: can the database take every connection this instance may open?

Each gunicorn worker may hold DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW connections, plus one
LISTEN connection for the revocation view on PostgreSQL (app/services/revocation_view.py). When the
sum passes the server's max_connections, requests fail with 503 under load (2 x 16 threads on a
small server answered a quarter of them so), so this is said once at start, by gunicorn's
master (deploy/gunicorn.conf.py, when_ready). Other instances share the server too: the rule in
docs/OPERATIONS.md ("Size the connection pool") counts them all.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)


def connections_needed(workers: int, pool_size: int, max_overflow: int, listener: bool) -> int:
    """The most connections one instance may open at once."""
    return workers * (pool_size + max_overflow + (1 if listener else 0))


def server_budget(url: str, connect_timeout: int) -> tuple[int, int]:
    """What the server lets ordinary clients open, and how many other clients hold one now.

    PostgreSQL keeps superuser_reserved_connections of max_connections for superusers, so an
    application role gets the rest; the others are the client backends connected now (other
    instances, jobs, consoles), this one's own connection aside. MySQL/MariaDB: max_connections
    and Threads_connected, likewise less this connection.
    """
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": connect_timeout})
    try:
        with engine.connect() as connection:
            run = connection.exec_driver_sql
            if engine.dialect.name == "postgresql":
                limit = int(run("SHOW max_connections").scalar_one()) - int(
                    run("SHOW superuser_reserved_connections").scalar_one()
                )
                others: int = run(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).scalar_one()
            else:
                limit = int(run("SELECT @@max_connections").scalar_one())
                others = int(run("SHOW GLOBAL STATUS LIKE 'Threads_connected'").one()[1]) - 1
            return limit, int(others)
    finally:
        engine.dispose()


def check_connection_budget(settings: Any, workers: int, logger: logging.Logger | None = None) -> int | None:
    """Log one warning when `workers` workers with `settings` (a config) may need more than the server allows.

    Returns the instance's need when the server was asked, None otherwise (SQLite, or unreachable:
    the workers then say so themselves).
    """
    logger = logger or log
    url = settings.SQLALCHEMY_DATABASE_URI
    if url.startswith("sqlite"):
        return None
    listener = url.startswith("postgresql") and settings.REVOCATION_CACHE
    need = connections_needed(workers, settings.DATABASE_POOL_SIZE, settings.DATABASE_MAX_OVERFLOW, listener)
    try:
        limit, others = server_budget(url, settings.DATABASE_CONNECT_TIMEOUT)
    except sa.exc.SQLAlchemyError as error:
        logger.warning("connection budget not checked: the database did not answer (%s)", type(error).__name__)
        return None
    if need + others > limit:
        logger.warning(
            "connection budget: this instance may open %d database connections "
            "(%d workers x (pool %d + overflow %d%s)) "
            "but the server allows %d in all (max_connections less the superuser reserve), "
            "%d of them held now by other clients, and it is shared with every other instance; lower "
            "DATABASE_POOL_SIZE/GUNICORN_WORKERS or raise max_connections (docs/OPERATIONS.md)",
            need,
            workers,
            settings.DATABASE_POOL_SIZE,
            settings.DATABASE_MAX_OVERFLOW,
            " + 1 listener" if listener else "",
            limit,
            others,
        )
    return need

"""The connection budget: the computation, and the warning against a real server's max_connections."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

import config
from app.capacity import check_connection_budget, connections_needed, server_budget
from tests.e2e.server import running_server


def test_connections_needed_counts_pools_overflow_and_listeners():
    assert connections_needed(2, 4, 0, listener=False) == 8
    assert connections_needed(2, 16, 0, listener=True) == 34
    assert connections_needed(3, 5, 10, listener=True) == 48


def test_the_warning_names_the_need_and_the_limit(database_url, backend, caplog):
    if backend == "sqlite":
        pytest.skip("SQLite has no max_connections")
    settings = config.TestingConfig(
        {"DATABASE_URL": database_url, "DATABASE_POOL_SIZE": "5000", "REVOCATION_CACHE": "true"}
    )
    logger = logging.getLogger("test.capacity")
    with caplog.at_level(logging.WARNING, logger="test.capacity"):
        need = check_connection_budget(settings, 4, logger)
        assert need == 4 * (5000 + (1 if backend == "postgresql" else 0))
        assert check_connection_budget(config.TestingConfig({"DATABASE_URL": database_url}), 1, logger) == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert f"may open {need} database connections" in warnings[0]
    assert "shared with every other instance" in warnings[0]


def test_the_budget_is_what_ordinary_roles_may_open_less_what_other_clients_hold(database_url, backend):
    if backend == "sqlite":
        pytest.skip("SQLite has no max_connections")
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        if backend == "postgresql":
            expected_limit = int(connection.exec_driver_sql("SHOW max_connections").scalar_one()) - int(
                connection.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one()
            )
        else:
            expected_limit = int(connection.exec_driver_sql("SELECT @@max_connections").scalar_one())
    limit, before = server_budget(database_url, 3)
    assert limit == expected_limit
    held = [engine.connect() for _ in range(3)]  # three more clients
    try:
        _, during = server_budget(database_url, 3)
    finally:
        for connection in held:
            connection.close()
        engine.dispose()
    assert during >= before + 3 - 1  # other tests' connections may come and go; ours are counted


def test_connections_other_clients_hold_count_against_the_budget(database_url, backend, caplog):
    if backend == "sqlite":
        pytest.skip("SQLite has no max_connections")
    limit, others = server_budget(database_url, 3)
    # A pool that fits the server alone but not beside what the others hold now.
    settings = config.TestingConfig({"DATABASE_URL": database_url, "DATABASE_POOL_SIZE": str(limit - others + 1)})
    logger = logging.getLogger("test.capacity.others")
    with caplog.at_level(logging.WARNING, logger="test.capacity.others"):
        check_connection_budget(settings, 1, logger)
    warnings = [r.getMessage() for r in caplog.records if r.name == "test.capacity.others"]
    assert len(warnings) == 1 and "held now by other clients" in warnings[0], warnings


@pytest.mark.e2e
def test_gunicorn_warns_once_at_start(tmp_path, request):
    if request.config.backend_problems.get("postgresql"):
        pytest.skip("PostgreSQL unreachable")
    with running_server(tmp_path, "postgresql", tls=False, workers=2, DATABASE_POOL_SIZE="5000") as server:
        log = server.log_path.read_text()
    assert log.count("connection budget: this instance may open 10002 database connections") == 1, log

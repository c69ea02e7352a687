"""The connection budget: the computation, and the warning against a real server's max_connections."""

from __future__ import annotations

import logging

import pytest

import config
from app.capacity import check_connection_budget, connections_needed
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


@pytest.mark.e2e
def test_gunicorn_warns_once_at_start(tmp_path, request):
    if request.config.backend_problems.get("postgresql"):
        pytest.skip("PostgreSQL unreachable")
    with running_server(tmp_path, "postgresql", tls=False, workers=2, DATABASE_POOL_SIZE="5000") as server:
        log = server.log_path.read_text()
    assert log.count("connection budget: this instance may open 10002 database connections") == 1, log

"""Migrations: the only way the schema is made; they run both ways and match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app.extensions import db
from app.models import Base
from tests.conftest import make_test_app
from tests.databases import BACKENDS


def _fresh_app(database_url, tmp_path):
    """An app on a new, empty database of the same backend as `database_url`."""
    name = database_url.split(":", 1)[0].split("+", 1)[0]
    backend = BACKENDS[name]
    url = backend.create(str(tmp_path))
    return backend, url, make_test_app(url)


def test_migrations_upgrade_downgrade_upgrade(database_url, tmp_path):
    backend, url, app = _fresh_app(database_url, tmp_path)
    try:
        with app.app_context():
            upgrade()
            assert {"users", "sessions", "revoked_tokens", "audit_events"} <= set(inspect(db.engine).get_table_names())
            downgrade(revision="base")
            assert not {"users", "sessions", "revoked_tokens", "audit_events"} & set(
                inspect(db.engine).get_table_names()
            )
            upgrade()
            assert {"users", "sessions", "revoked_tokens", "audit_events"} <= set(inspect(db.engine).get_table_names())
            db.engine.dispose()
    finally:
        backend.drop(url)


def test_models_match_migrations(base_app):
    with base_app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], diff

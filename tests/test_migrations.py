"""Migrations: the only way the schema is made; they run both ways and match the models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import Boolean, Uuid, bindparam, inspect

from app.extensions import db
from app.models import Base, UTCDateTime
from tests.helpers import python_output


def test_migrations_upgrade_downgrade_upgrade(empty_app):
    with empty_app.app_context():
        upgrade()
        assert {"users", "sessions", "revoked_tokens", "audit_events"} <= set(inspect(db.engine).get_table_names())
        downgrade(revision="base")
        assert not {"users", "sessions", "revoked_tokens", "audit_events"} & set(inspect(db.engine).get_table_names())
        upgrade()
        assert {"users", "sessions", "revoked_tokens", "audit_events"} <= set(inspect(db.engine).get_table_names())
        db.engine.dispose()


def test_models_match_migrations(base_app):
    with base_app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], diff


def test_readiness_reads_the_same_heads_as_alembic(tmp_path):
    """/ready reads the heads without Alembic; it must agree with Alembic, here and on a branched history."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from app.services.health import migration_heads
    from config import BASE_DIR

    def alembic_heads(directory):
        config = Config()
        config.set_main_option("script_location", str(directory))
        return frozenset(ScriptDirectory.from_config(config).get_heads())

    ours = BASE_DIR / "migrations"
    assert migration_heads(str(ours)) == alembic_heads(ours) != frozenset()

    # Two branches off the latest revision and a merge of one of them with a third: two heads.
    branched = tmp_path / "migrations"
    (branched / "versions").mkdir(parents=True)
    (branched / "script.py.mako").write_text((ours / "script.py.mako").read_text())
    for script in (ours / "versions").glob("*.py"):
        (branched / "versions" / script.name).write_text(script.read_text())
    (head,) = alembic_heads(ours)
    scripts = {
        "a1": f'revision = "a1"\ndown_revision = "{head}"\n',
        "b1": f'revision: str = "b1"\ndown_revision: str | None = "{head}"\n',
        "c1": f'revision = "c1"\ndown_revision = "{head}"\n',
        "m1": 'revision = "m1"\ndown_revision = ("b1", "c1")\n',
    }
    for name, text in scripts.items():
        (branched / "versions" / f"{name}.py").write_text(text + "branch_labels = None\ndepends_on = None\n")
    assert migration_heads(str(branched)) == alembic_heads(branched) == {"a1", "m1"}


def test_serving_processes_do_not_load_alembic():
    """Alembic (~10 MB) is for `flask db`; a worker importing wsgi:app never loads it."""
    code = (
        "import sys, wsgi; client = wsgi.app.test_client(); client.get('/ready'); "
        "print(sorted(m for m in ('alembic', 'flask_migrate', 'mako') if m in sys.modules))"
    )
    assert python_output(code)[-1] == "[]"


def _insert_user(email: str, username: str | None = None) -> uuid.UUID:
    """A users row written as the old rules stored it (email lower-cased only, key lower-cased)."""
    user_id = uuid.uuid4()
    db.session.execute(
        sa.text(
            "INSERT INTO users (id, email, username, username_key, name, password_hash, role, is_active, "
            "email_verified, created_at, updated_at) VALUES (:id, :email, :username, :key, 'N', 'x', 'user', "
            ":yes, :no, :now, :now)"
        ).bindparams(
            bindparam("id", type_=Uuid()), bindparam("now", type_=UTCDateTime()), bindparam("yes", type_=Boolean())
        ),
        {
            "id": user_id,
            "email": email,
            "username": username,
            "key": username.lower() if username else None,
            "now": datetime.now(UTC),
            "yes": True,
            "no": False,
        },
    )
    db.session.commit()
    return user_id


def test_identifier_forms_migration_rewrites_unicode_domains(empty_app):
    """0004: a U-label domain stored by the old rules becomes the A-label the lookups now use."""
    with empty_app.app_context():
        upgrade(revision="0003_login_throttle")
        unicode_id = _insert_user("x@bücher.example", "Jo_e")
        plain_id = _insert_user("plain@example.com")
        upgrade()
        emails = dict(db.session.execute(sa.text("SELECT id, email FROM users")).all())
        keys = dict(db.session.execute(sa.text("SELECT id, username_key FROM users")).all())
        db.session.remove()
        db.engine.dispose()
    emails = {uuid.UUID(str(key)): value for key, value in emails.items()}
    keys = {uuid.UUID(str(key)): value for key, value in keys.items()}
    assert emails == {unicode_id: "x@xn--bcher-kva.example", plain_id: "plain@example.com"}
    assert keys[unicode_id] == "jo_e"


def test_identifier_forms_migration_stops_on_twins(empty_app, capfd):
    """Two old rows that are one address under the new rules stop the upgrade, naming both."""
    with empty_app.app_context():
        upgrade(revision="0003_login_throttle")
        first = _insert_user("x@bücher.example")
        second = _insert_user("x@xn--bcher-kva.example")
        with pytest.raises(SystemExit):  # flask-migrate logs the RuntimeError and exits 1
            upgrade()
        logged = capfd.readouterr().err  # Alembic's logging configuration writes to stderr
        assert "same email once normalized" in logged
        assert str(first) in logged and str(second) in logged
        emails = set(db.session.execute(sa.text("SELECT email FROM users")).scalars())
        assert emails == {"x@bücher.example", "x@xn--bcher-kva.example"}  # nothing half-done
        db.session.remove()
        db.engine.dispose()

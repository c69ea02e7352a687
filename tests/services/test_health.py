"""health service, called directly in an app context: readiness and draining (no HTTP)."""

from __future__ import annotations

from sqlalchemy import text

from app.extensions import db
from app.services import health
from tests.conftest import make_test_app

NOT_MIGRATED = "The database is unreachable or not migrated."
BEHIND = "The database schema is not at the latest migration; run `flask db upgrade`."


def test_a_migrated_database_is_ready(app):
    with app.app_context():
        assert health.readiness_problem(app.config["MIGRATIONS_DIR"]) is None


def test_an_unmigrated_database_is_not_ready(empty_app):
    with empty_app.app_context():
        assert health.readiness_problem(empty_app.config["MIGRATIONS_DIR"]) == NOT_MIGRATED


def test_ready_only_when_the_recorded_revisions_are_exactly_the_heads(empty_app):
    directory = empty_app.config["MIGRATIONS_DIR"]
    heads = sorted(health.migration_heads(directory))
    assert heads  # the project has migrations
    with empty_app.app_context():
        db.session.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        db.session.commit()
        assert health.readiness_problem(directory) == BEHIND  # table, but no revision

        def record(*revisions):
            db.session.execute(text("DELETE FROM alembic_version"))
            for revision in revisions:
                db.session.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": revision})
            db.session.commit()

        record("0000_older")
        assert health.readiness_problem(directory) == BEHIND
        record(*heads, "0000_older")
        assert health.readiness_problem(directory) == BEHIND
        record(*heads)
        assert health.readiness_problem(directory) is None


def test_an_unreachable_database_is_not_ready_and_says_nothing_more(tmp_path):
    app = make_test_app(f"sqlite:///{tmp_path}/missing/directory/auth.db")
    try:
        with app.app_context():
            assert health.readiness_problem(app.config["MIGRATIONS_DIR"]) == NOT_MIGRATED
    finally:
        app.extensions["revocations"].stop()
        with app.app_context():
            db.engine.dispose()


def test_draining_only_while_the_drain_file_exists(tmp_path):
    drain = tmp_path / "draining"
    assert health.draining_problem(None) is None
    assert health.draining_problem("") is None
    assert health.draining_problem(str(drain)) is None
    drain.touch()
    assert health.draining_problem(str(drain)) == "This instance is stopping."
    drain.unlink()
    assert health.draining_problem(str(drain)) is None

"""Readiness: does the database answer, and is its schema at the latest migration?"""

from __future__ import annotations

from functools import lru_cache

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db


@lru_cache(maxsize=4)
def migration_heads(directory: str) -> frozenset[str]:
    """The head revisions of the migration scripts (read once)."""
    config = Config()
    config.set_main_option("script_location", directory)
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def readiness_problem(directory: str) -> str | None:
    """None when ready, else why not (in words safe to show)."""
    try:
        current = {row[0] for row in db.session.execute(text("SELECT version_num FROM alembic_version"))}
    except SQLAlchemyError:
        db.session.rollback()
        return "The database is unreachable or not migrated."
    finally:
        db.session.close()
    if current != migration_heads(directory):
        return "The database schema is not at the latest migration; run `flask db upgrade`."
    return None

"""Readiness: does the database answer, and is its schema at the latest migration?"""

from __future__ import annotations

import ast
import os
from functools import lru_cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db


@lru_cache(maxsize=4)
def migration_heads(directory: str) -> frozenset[str]:
    """The head revisions of the migration scripts (read once): revisions no other one revises.

    Read from each script's `revision` and `down_revision` assignments rather than through
    Alembic, which a serving worker does not load (app/extensions.py); tests/test_migrations.py
    holds this to Alembic's own answer.
    """
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in sorted(Path(directory, "versions").glob("*.py")):
        names = _assignments(script)
        revision = names.get("revision")
        if isinstance(revision, str):
            revisions.add(revision)
            down = names.get("down_revision")
            if isinstance(down, str):
                revised.add(down)
            elif isinstance(down, tuple | list):
                revised.update(str(name) for name in down)
    return frozenset(revisions - revised)


def _assignments(script: Path) -> dict[str, object]:
    """The literal values a migration script assigns at module level."""
    values: dict[str, object] = {}
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and node.value is not None:
                try:
                    values[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return values


def draining_problem(drain_file: str | None) -> str | None:
    """Why the instance is not ready because it is stopping (DRAIN_FILE exists), or None.

    Kubernetes' preStop hook creates the file before SIGTERM: readiness fails first, so every
    load balancer that probes /ready (not only the endpoints controller) stops sending here
    while gunicorn still serves what is in flight (issue 9 item 15; docs/OPERATIONS.md).
    """
    if drain_file and os.path.exists(drain_file):
        return "This instance is stopping."
    return None


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

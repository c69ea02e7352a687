"""Races: simultaneous requests with real threads against the real database."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from app.extensions import db
from app.models import Session, User
from tests.helpers import PASSWORD, run_together


def test_simultaneous_signups_with_one_email_give_one_201(app):
    body = {"email": "race@example.com", "password": PASSWORD, "name": "Racer"}
    responses = run_together(app, 12, lambda client: client.post("/signup", json=body))
    statuses = Counter(getattr(r, "status_code", repr(r)) for r in responses)
    assert statuses == {201: 1, 409: 11}, statuses
    assert {r.get_json()["code"] for r in responses if r.status_code == 409} == {"email_taken"}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_simultaneous_refreshes_give_exactly_one_pair(app, user):
    token = user["refresh_token"]
    responses = run_together(app, 8, lambda client: client.post("/refresh", json={"refresh_token": token}))
    statuses = Counter(getattr(r, "status_code", repr(r)) for r in responses)
    assert all(isinstance(status, int) and status < 500 for status in statuses), statuses
    # Exactly one wins: a rotation that always failed would pass "at most one".
    assert statuses[200] == 1, statuses
    assert set(statuses) <= {200, 401}, statuses
    codes = {r.get_json()["code"] for r in responses if r.status_code == 401}
    assert codes <= {"token_reused", "token_revoked"}
    with app.app_context():
        # Whatever won, the refresh family is one session, and reuse revoked it.
        sessions = db.session.scalars(select(Session)).all()
        assert len(sessions) == 1
        if statuses[401]:
            assert sessions[0].revoked_at is not None

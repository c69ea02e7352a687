"""audit service, called directly in an app context: what an event holds, filters, purge (no HTTP)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditEvent, User, utcnow
from app.services import audit
from tests.helpers import add_user


@pytest.fixture
def origin():
    """Set the request origin for the test, and forget it afterwards (it is a context variable)."""
    yield audit.set_origin
    audit.set_origin(ip=None, user_agent=None)


def all_events() -> list[AuditEvent]:
    """Every committed event, oldest first."""
    db.session.rollback()
    return list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_record_writes_actor_target_origin_and_details_on_commit(app, origin):
    with app.app_context():
        actor, target = add_user(role="admin"), add_user()
        origin(ip="203.0.113.9", user_agent="pytest/" + "x" * 300)
        audit.record("role_changed", actor_id=actor.id, target_id=target.id, old="user", new="admin")
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == 1  # pending in this transaction
        db.session.commit()
        [event] = all_events()
        assert (event.event, event.actor_id, event.target_id) == ("role_changed", actor.id, target.id)
        assert event.ip == "203.0.113.9"
        assert event.user_agent == ("pytest/" + "x" * 300)[:255]
        assert event.details == {"old": "user", "new": "admin"}
        assert abs(event.created_at - utcnow()) < timedelta(minutes=1)


def test_record_without_origin_or_details_stores_nulls(app):
    with app.app_context():
        audit.record("login_failed")
        db.session.commit()
        [event] = all_events()
        assert (event.actor_id, event.target_id, event.ip, event.user_agent, event.details) == (None,) * 5


def test_an_unknown_event_is_refused(app):
    with app.app_context():
        with pytest.raises(ValueError, match="unknown audit event"):
            audit.record("made_up_event")
        db.session.commit()
        assert all_events() == []


def test_record_now_commits_the_event_alone(app):
    """A failure's event is kept, and whatever the failed operation had pending is not."""
    with app.app_context():
        db.session.add(User(email="half@example.com", name="Half", password_hash="x", role="user"))
        audit.record_now("login_failed", reason="wrong_password")
        assert [event.details for event in all_events()] == [{"reason": "wrong_password"}]
        assert db.session.scalar(select(func.count()).select_from(User)) == 0


def test_list_events_filters_by_user_as_actor_or_target_and_by_event(app):
    with app.app_context():
        alice, bob, carol = add_user(), add_user(), add_user()
        audit.record("signup", actor_id=alice.id, target_id=alice.id)
        audit.record("user_deleted", actor_id=bob.id, target_id=alice.id)
        audit.record("signup", actor_id=carol.id, target_id=carol.id)
        db.session.commit()
        page = audit.list_events(page=1, per_page=10, user_id=alice.id)
        assert [event.event for event in page.items] == ["user_deleted", "signup"]  # newest first
        assert page.total == 2
        assert [event.event for event in audit.list_events(page=1, per_page=10, user_id=bob.id).items] == [
            "user_deleted"
        ]
        signups = audit.list_events(page=1, per_page=10, event="signup").items
        assert {event.actor_id for event in signups} == {alice.id, carol.id}


def test_purge_deletes_only_older_events(app):
    with app.app_context():
        audit.record("login_failed", reason="old")
        audit.record("login_failed", reason="new")
        db.session.commit()
        old = next(event for event in all_events() if event.details == {"reason": "old"})
        old.created_at = utcnow() - timedelta(days=31)
        db.session.commit()
        assert audit.purge(older_than_days=30) == 1
        assert [event.details for event in all_events()] == [{"reason": "new"}]

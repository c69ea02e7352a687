"""accounts service, called directly in an app context: signup, login, sessions (no HTTP)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from app.errors import AccountDisabled, EmailTaken, InvalidCredentials, NotFound
from app.extensions import db
from app.models import AuditEvent, Session, User
from app.services import accounts, passwords
from tests.helpers import PASSWORD, add_user, claims_of


def events(name: str) -> list[AuditEvent]:
    """The audit events of this name, oldest first."""
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))


def test_signup_stores_a_hash_opens_a_session_and_audits(app):
    with app.app_context():
        user, pair = accounts.signup(email="new@example.com", password=PASSWORD, name="New", ip="192.0.2.1")
        row = db.session.get(User, user.id)
        assert row is not None and row.email == "new@example.com" and row.role == "user"
        assert row.password_hash != PASSWORD and PASSWORD not in row.password_hash
        assert passwords.verify_password(row.password_hash, PASSWORD)[0] is True
        assert passwords.verify_password(row.password_hash, PASSWORD + "!")[0] is False
        claims = claims_of(pair.access_token)
        assert claims["sub"] == str(user.id)
        session = db.session.get(Session, uuid.UUID(claims["sid"]))
        assert session is not None and session.user_id == user.id and session.ip == "192.0.2.1"
        [signup] = events("signup")
        assert (signup.actor_id, signup.target_id) == (user.id, user.id)


def test_signup_refuses_a_taken_email_and_keeps_one_account(app):
    with app.app_context():
        accounts.signup(email="twin@example.com", password=PASSWORD, name="First")
        with pytest.raises(EmailTaken):
            accounts.signup(email="twin@example.com", password=PASSWORD, name="Second")
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
        assert db.session.scalar(select(User.name)) == "First"


def test_login_with_the_right_password_opens_another_session(app):
    with app.app_context():
        user = add_user(email="in@example.com")
        logged_in, pair = accounts.login(email="in@example.com", password=PASSWORD)
        assert logged_in.id == user.id
        assert claims_of(pair.access_token)["sub"] == str(user.id)
        assert db.session.scalar(select(func.count()).select_from(Session).where(Session.user_id == user.id)) == 1
        [succeeded] = events("login_succeeded")
        assert succeeded.target_id == user.id


def test_wrong_password_and_unknown_account_give_the_same_error(app):
    with app.app_context():
        user = add_user(email="known@example.com")
        with pytest.raises(InvalidCredentials):
            accounts.login(email="known@example.com", password="not the password at all")
        with pytest.raises(InvalidCredentials):
            accounts.login(email="nobody@example.com", password=PASSWORD)
        failed = events("login_failed")
        assert [(event.target_id, event.details["reason"]) for event in failed] == [
            (user.id, "wrong_password"),
            (None, "unknown_account"),
        ]
        assert "nobody@example.com" not in str(failed[1].details)  # what was typed is not kept
        assert db.session.scalar(select(func.count()).select_from(Session)) == 0


def test_login_refuses_a_disabled_account_only_after_the_password(app):
    with app.app_context():
        add_user(email="off@example.com", is_active=False)
        with pytest.raises(InvalidCredentials):
            accounts.login(email="off@example.com", password="not the password at all")
        with pytest.raises(AccountDisabled):
            accounts.login(email="off@example.com", password=PASSWORD)
        assert db.session.scalar(select(func.count()).select_from(Session)) == 0


def test_revoke_session_refuses_ids_that_are_not_the_users(app):
    with app.app_context():
        owner, pair = accounts.signup(email="owner@example.com", password=PASSWORD, name="O")
        other = add_user(email="other@example.com")
        sid = claims_of(pair.access_token)["sid"]
        for bad in ("not-a-uuid", sid):
            with pytest.raises(NotFound):
                accounts.revoke_session(other, bad)
        accounts.revoke_session(owner, sid)
        assert db.session.get(Session, uuid.UUID(sid)).revoked_at is not None
        with pytest.raises(NotFound):  # already revoked: no longer live
            accounts.revoke_session(owner, sid)

"""app/services/console.py: which console sign-in still holds, and the two admin actions of its own."""

from __future__ import annotations

import uuid

import pytest

from app.errors import AccountDisabled, Forbidden, NotFound
from app.extensions import db
from app.models import User
from app.services import console, users
from tests.helpers import PASSWORD


@pytest.fixture
def ctx(app):
    """An app context with an admin signed in to the console and a plain user."""
    with app.app_context():
        admin, _ = users.create_or_promote_admin(email="root@example.com", password=PASSWORD, name="Root")
        plain = users.new_user(email="plain@example.com", password=PASSWORD, name="Plain")
        db.session.commit()
        signed = console.sign_in(email="root@example.com", password=PASSWORD, user_agent="t", ip="127.0.0.1")
        yield signed, plain
        db.session.remove()


def holds(signed: console.SignIn, **changes) -> bool:
    """Whether signed_in_admin accepts the sign-in (with some fields changed)."""
    fields = {"user_id": str(signed.user.id), "sid": str(signed.sid), "signed_in_at": signed.signed_in_at, **changes}
    return console.signed_in_admin(**fields) is not None


def test_a_fresh_sign_in_holds(ctx):
    signed, _ = ctx
    assert holds(signed)


@pytest.mark.parametrize(
    "changes",
    [{"sid": None}, {"signed_in_at": None}, {"sid": "not-a-uuid"}, {"user_id": "nope"}, {"sid": str(uuid.uuid4())}],
)
def test_a_malformed_or_unknown_sign_in_does_not_hold(ctx, changes):
    signed, _ = ctx
    assert not holds(signed, **changes)


def test_another_users_session_id_does_not_hold(ctx):
    signed, plain = ctx
    assert not holds(signed, user_id=str(plain.id))


def test_a_sign_in_stops_holding_once_its_session_is_revoked(ctx):
    signed, _ = ctx
    console.sign_out(signed.user, signed.sid)
    assert not holds(signed)


def test_a_plain_user_cannot_sign_in(ctx):
    with pytest.raises(Forbidden):
        console.sign_in(email="plain@example.com", password=PASSWORD, user_agent=None, ip=None)


def test_revoking_an_unknown_session_is_not_found(ctx):
    signed, plain = ctx
    for session_id in ("nope", str(uuid.uuid4())):
        with pytest.raises(NotFound):
            console.revoke_sessions(actor=signed.user, target_id=str(plain.id), session_id=session_id)


def test_no_reset_mail_for_a_deactivated_account(ctx):
    signed, plain = ctx
    db.session.get(User, plain.id).is_active = False
    db.session.commit()
    with pytest.raises(AccountDisabled):
        console.send_reset_mail(actor=signed.user, target_id=str(plain.id), ip=None, user_agent=None)

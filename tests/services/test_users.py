"""users service, called directly in an app context: admin update rules and deletion (no HTTP)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.errors import EmailTaken, Forbidden, LastAdmin, NotFound, UsernameReserved, ValidationFailed
from app.extensions import db
from app.models import AuditEvent, User
from app.services import users
from tests.helpers import PASSWORD, add_user


def fresh(user: User) -> User:
    """The user's row as committed (after a refused change rolled the session back)."""
    db.session.rollback()
    return db.session.get(User, user.id)


@pytest.mark.parametrize("changes", [{"role": "user"}, {"is_active": False}])
def test_the_last_active_admin_cannot_be_demoted_or_deactivated(app, changes):
    with app.app_context():
        admin = add_user(role="admin")
        with pytest.raises(LastAdmin):
            users.apply_update(admin, changes, actor_id=None)
        row = fresh(admin)
        assert row.role == "admin" and row.is_active is True


def test_an_admin_can_be_demoted_while_another_remains(app):
    with app.app_context():
        first, second = add_user(role="admin"), add_user(role="admin")
        users.update_user(actor=first, target_id=str(second.id), changes={"role": "user"})
        assert fresh(second).role == "user"
        [changed] = db.session.scalars(select(AuditEvent).where(AuditEvent.event == "role_changed")).all()
        assert (changed.actor_id, changed.target_id) == (first.id, second.id)
        assert changed.details == {"old": "admin", "new": "user"}
        # Now `first` is the last one: it cannot demote itself.
        with pytest.raises(LastAdmin):
            users.update_user(actor=first, target_id=str(first.id), changes={"role": "user"})


def test_an_inactive_admin_does_not_count_as_the_remaining_one(app):
    with app.app_context():
        active = add_user(role="admin")
        add_user(role="admin", is_active=False)
        with pytest.raises(LastAdmin):
            users.apply_update(active, {"role": "user"}, actor_id=None)


def test_the_last_admin_cannot_be_deleted(app):
    with app.app_context():
        admin = add_user(role="admin")
        with pytest.raises(LastAdmin):
            users.delete_user(actor=admin, target_id=str(admin.id), password=PASSWORD)
        assert fresh(admin) is not None


def test_a_user_may_not_change_role_status_or_password_nor_see_others(app):
    with app.app_context():
        user, other = add_user(), add_user()
        for changes in ({"role": "admin"}, {"is_active": False}, {"password": "another long passphrase"}):
            with pytest.raises(Forbidden):
                users.update_user(actor=user, target_id=str(user.id), changes=changes)
        with pytest.raises(Forbidden):
            users.update_user(actor=user, target_id=str(other.id), changes={"name": "X"})
        assert fresh(user).role == "user"


def test_an_admin_resets_others_passwords_but_not_its_own(app):
    with app.app_context():
        admin, user = add_user(role="admin"), add_user()
        before = user.password_hash
        users.update_user(actor=admin, target_id=str(user.id), changes={"password": "a brand new passphrase"})
        assert fresh(user).password_hash != before
        with pytest.raises(ValidationFailed) as raised:
            users.update_user(actor=admin, target_id=str(admin.id), changes={"password": "a brand new passphrase"})
        assert "password" in raised.value.errors


def test_email_of_another_account_and_reserved_names(app):
    with app.app_context():
        admin, user, other = add_user(role="admin"), add_user(), add_user()
        with pytest.raises(EmailTaken):
            users.update_user(actor=admin, target_id=str(user.id), changes={"email": other.email})
        with pytest.raises(UsernameReserved):
            users.apply_update(fresh(user), {"username": "admin"}, actor_id=user.id)
        # An admin may give a reserved name (users.apply_update, may_reserve).
        users.update_user(actor=admin, target_id=str(user.id), changes={"username": "admin"})
        assert fresh(user).username == "admin"


def test_get_user_and_self_deletion_rules(app):
    with app.app_context():
        with pytest.raises(NotFound):
            users.get_user("not-a-uuid")
        user = add_user()
        with pytest.raises(ValidationFailed):
            users.delete_user(actor=user, target_id=str(user.id))
        users.delete_user(actor=user, target_id=str(user.id), password=PASSWORD)
        assert db.session.get(User, user.id) is None
        with pytest.raises(NotFound):
            users.get_user(user.id)

"""app/services/events.py: every event type is written to the outbox with its change, as a
CloudEvents 1.0 document with the `user` object the API shows; a rollback writes none; no
secret ever travels. (Publishing them is tests/services/test_relay.py.)"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import OutboxMessage, Session, User, utcnow
from app.services import events, recovery, users
from tests.helpers import PASSWORD, Auth, bearer, check_token

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def event_rows(app) -> list[dict]:
    """The events in the outbox, in id (publication) order."""
    with app.app_context():
        rows = db.session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "event").order_by(OutboxMessage.id))
        found = [row.payload for row in rows]
        db.session.rollback()
    return found


def assert_cloudevent(event: dict, app, *, type: str, subject: str) -> None:
    """The attributes the contract requires (CloudEvents 1.0 structured mode), and nothing more."""
    assert set(event) == {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"}
    assert event["specversion"] == "1.0"
    assert UUID.fullmatch(event["id"])
    assert event["source"] == app.config["JWT_ISSUER"]
    assert event["type"] == type
    assert event["subject"] == subject
    assert event["datacontenttype"] == "application/json"
    assert event["time"].endswith("Z")  # RFC 3339, UTC
    datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


@pytest.fixture
def client(events_app):
    """A client of the app with events on (and so conftest's `auth` makes its accounts there)."""
    return events_app.test_client()


def test_signup_is_auth_user_created_with_the_user_the_api_shows(events_app, client, auth):
    body = auth.signup(name="Ada")
    me = client.get("/me", headers=bearer(body["access_token"])).get_json()["user"]
    [event] = event_rows(events_app)
    assert_cloudevent(event, events_app, type="auth.user.created", subject=body["user_id"])
    assert event["data"] == me


def test_profile_change_is_updated_and_email_verification_is_email_verified(events_app, client, auth):
    body = auth.signup()
    headers = bearer(body["access_token"])
    assert client.patch("/me", json={"name": "Grace"}, headers=headers).status_code == 200
    with events_app.app_context():
        user = db.session.get(User, uuid.UUID(body["user_id"]))
        token = recovery.issue(user, recovery.EMAIL_VERIFY, email=user.email)
        db.session.commit()
    assert client.post("/email/verify", json={"token": token}).status_code == 200
    created, updated, verified = event_rows(events_app)
    assert_cloudevent(updated, events_app, type="auth.user.updated", subject=body["user_id"])
    assert updated["data"]["name"] == "Grace" and updated["data"]["email_verified"] is False
    assert_cloudevent(verified, events_app, type="auth.user.email_verified", subject=body["user_id"])
    assert verified["data"] == client.get("/me", headers=headers).get_json()["user"]
    assert len({created["id"], updated["id"], verified["id"]}) == 3


def test_password_change_is_password_changed_and_revokes_the_other_sessions(events_app, client, auth):
    body = auth.signup()
    other = auth.login(body["user"]["email"])
    other_sid = client.post("/checkToken", json={"token": other["access_token"]}).get_json()["sid"]
    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase 42"},
        headers=bearer(body["access_token"]),
    )
    assert response.status_code == 200
    types = [(event["type"], event["data"]) for event in event_rows(events_app)[1:]]
    assert (
        "auth.session.revoked",
        {"user_id": body["user_id"], "session_id": other_sid, "reason": "password_changed"},
    ) in types
    assert [kind for kind, _ in types].count("auth.session.revoked") == 1  # the caller's own session lives on
    changed = [event for event in event_rows(events_app) if event["type"] == "auth.user.password_changed"]
    assert len(changed) == 1
    assert_cloudevent(changed[0], events_app, type="auth.user.password_changed", subject=body["user_id"])


def test_logout_revokes_the_session_with_a_reason(events_app, client, auth):
    body = auth.signup()
    sid = client.post("/checkToken", json={"token": body["access_token"]}).get_json()["sid"]
    assert client.post("/logout", headers=bearer(body["access_token"]), json={}).status_code == 200
    event = event_rows(events_app)[-1]
    assert_cloudevent(event, events_app, type="auth.session.revoked", subject=body["user_id"])
    assert event["data"] == {"user_id": body["user_id"], "session_id": sid, "reason": "logout"}


def test_deactivation_and_reactivation_by_an_admin(events_app, client, auth):
    admin = auth.make_admin()
    body = auth.signup()
    path = f"/users/{body['user_id']}"
    headers = bearer(admin["access_token"])
    assert client.patch(path, json={"is_active": False}, headers=headers).status_code == 200
    assert client.patch(path, json={"is_active": True}, headers=headers).status_code == 200
    mine = [event for event in event_rows(events_app) if event["subject"] == body["user_id"]]
    assert [event["type"] for event in mine] == [
        "auth.user.created",
        "auth.session.revoked",
        "auth.user.deactivated",
        "auth.user.reactivated",
    ]
    assert mine[1]["data"]["reason"] == "deactivated"
    assert mine[2]["data"]["is_active"] is False and mine[3]["data"]["is_active"] is True


def test_deletion_carries_only_the_id(events_app, client, auth):
    body = auth.signup()
    response = client.delete("/me", json={"password": PASSWORD}, headers=bearer(body["access_token"]))
    assert response.status_code == 200
    event = event_rows(events_app)[-1]
    assert_cloudevent(event, events_app, type="auth.user.deleted", subject=body["user_id"])
    assert event["data"] == {"id": body["user_id"]}


def sessions_of_all_kinds(events_app, client, auth) -> tuple[dict, set[str]]:
    """An account with two live sessions, one logged out and one expired; (signup body, the live ids)."""
    body = auth.signup()
    second = auth.login(body["user"]["email"])
    logged_out = auth.login(body["user"]["email"])
    expired = auth.login(body["user"]["email"])
    assert client.post("/logout", headers=bearer(logged_out["access_token"]), json={}).status_code == 200
    sid = {name: check_token(client, tokens["access_token"])["sid"]
           for name, tokens in (("first", body), ("second", second), ("expired", expired))}  # fmt: skip
    with events_app.app_context():
        row = db.session.get(Session, uuid.UUID(sid["expired"]))
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    return body, {sid["first"], sid["second"]}


def delete_by_admin(events_app, client, auth, body) -> None:
    """DELETE /users/{id} by an admin."""
    admin = auth.make_admin()
    response = client.delete(f"/users/{body['user_id']}", headers=bearer(admin["access_token"]))
    assert response.status_code == 200, response.get_json()


def delete_oneself(events_app, client, auth, body) -> None:
    """DELETE /me with the password."""
    response = client.delete("/me", json={"password": PASSWORD}, headers=bearer(body["access_token"]))
    assert response.status_code == 200, response.get_json()


def delete_in_the_console(events_app, client, auth, body) -> None:
    """The admin console's confirmed deletion."""
    from tests.console.conftest import Console

    admin = auth.make_admin()
    console = Console(events_app)
    assert console.sign_in(admin["user"]["email"]).status_code == 303
    console.get(f"/admin/users/{body['user_id']}/delete")
    assert console.post(f"/admin/users/{body['user_id']}/delete").status_code == 303


@pytest.mark.parametrize("delete", [delete_by_admin, delete_oneself, delete_in_the_console],
                         ids=["users-id", "me", "console"])  # fmt: skip
def test_deletion_revokes_each_live_session_before_the_deleted_event(events_app, client, auth, delete):
    """One auth.session.revoked (user_deleted) per session that was live; none for the logged-out or the
    expired one; then auth.user.deleted, in that outbox (publication) order."""
    body, live = sessions_of_all_kinds(events_app, client, auth)
    before = len([event for event in event_rows(events_app) if event["subject"] == body["user_id"]])
    delete(events_app, client, auth, body)
    mine = [event for event in event_rows(events_app) if event["subject"] == body["user_id"]][before:]
    assert [event["type"] for event in mine] == ["auth.session.revoked"] * 2 + ["auth.user.deleted"]
    for event in mine[:2]:
        assert_cloudevent(event, events_app, type="auth.session.revoked", subject=body["user_id"])
        assert event["data"]["reason"] == "user_deleted" and event["data"]["user_id"] == body["user_id"]
    assert {event["data"]["session_id"] for event in mine[:2]} == live
    assert mine[2]["data"] == {"id": body["user_id"]}


def test_a_refused_change_writes_no_event(events_app, client, auth):
    first = auth.signup()
    second = auth.signup()
    before = event_rows(events_app)
    response = client.patch("/me", json={"email": first["user"]["email"]}, headers=bearer(second["access_token"]))
    assert response.status_code == 409
    assert event_rows(events_app) == before


def test_a_rolled_back_change_writes_no_event(events_app, auth):
    body = auth.signup()
    with events_app.app_context():
        user = db.session.get(User, uuid.UUID(body["user_id"]))
        user.name = "Never"
        events.user(events.UPDATED, user)
        db.session.rollback()
        db.session.get(User, uuid.UUID(body["user_id"])).name = "Committed without an event said"
        db.session.commit()
    assert [event["type"] for event in event_rows(events_app)] == ["auth.user.created"]


def test_an_event_said_twice_in_one_transaction_is_written_once(events_app, auth):
    body = auth.signup()
    with events_app.app_context():
        user = db.session.get(User, uuid.UUID(body["user_id"]))
        users.apply_update(user, {"name": "One", "username": "one"}, actor_id=None)
    assert [event["type"] for event in event_rows(events_app)] == ["auth.user.created", "auth.user.updated"]


def test_without_events_amqp_url_no_event_is_written(app):
    Auth(app.test_client(), app).signup()
    assert app.config["EVENTS_AMQP_URL"] is None
    assert event_rows(app) == []


def test_no_event_ever_carries_a_secret(events_app, client, auth):
    body = auth.signup()
    headers = bearer(body["access_token"])
    client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase 42"},
        headers=headers,
    )
    with events_app.app_context():
        user = db.session.get(User, uuid.UUID(body["user_id"]))
        secrets = [user.password_hash, body["access_token"], body["refresh_token"], PASSWORD]
        db.session.rollback()
    text = json.dumps(event_rows(events_app))
    assert len(event_rows(events_app)) >= 2
    for secret in secrets:
        assert secret not in text
    assert "password_hash" not in text and "tokens_valid_after" not in text


def test_an_unknown_revocation_reason_is_a_programming_error(events_app):
    with events_app.app_context(), pytest.raises(ValueError):
        events.sessions_revoked(uuid.uuid4(), [uuid.uuid4()], "because")


def test_routing_key_is_the_type_without_auth():
    assert events.routing_key("auth.user.deleted") == "user.deleted"
    assert events.routing_key("auth.session.revoked") == "session.revoked"

"""The audit trail: every security event is recorded, without secrets, and admins can read it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from app.extensions import db
from app.models import AuditEvent, utcnow
from tests.helpers import PASSWORD, assert_problem, bearer

NEW_PASSWORD = "a different long passphrase"


def events(client, admin, **query) -> list[dict]:
    """The audit events (first page of 100), newest first."""
    response = client.get("/audit", query_string={"per_page": 100, **query}, headers=bearer(admin["access_token"]))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def names(items) -> list[str]:
    """The event names, oldest first."""
    return [item["event"] for item in reversed(items)]


def test_login_events_are_recorded_with_origin(client, admin, auth):
    user = auth.signup()
    email, uid = user["user"]["email"], user["user_id"]
    headers = {"User-Agent": "audit-test/1.0"}
    client.post("/login", json={"email": email, "password": "wrong password!"}, headers=headers)
    client.post("/login", json={"email": "ghost@example.com", "password": "wrong password!"}, headers=headers)
    client.post("/login", json={"email": email, "password": PASSWORD}, headers=headers)
    failed = events(client, admin, event="login_failed")
    assert [item["details"]["reason"] for item in reversed(failed)] == ["wrong_password", "unknown_account"]
    assert failed[1]["target_id"] == uid and failed[0]["target_id"] is None
    succeeded = events(client, admin, event="login_succeeded", user=uid)
    assert succeeded[0]["actor_id"] == uid
    assert succeeded[0]["ip"] == "127.0.0.1" and succeeded[0]["user_agent"] == "audit-test/1.0"


def test_account_lifecycle_events(client, admin, auth):
    user = auth.signup()
    uid, token = user["user_id"], user["access_token"]
    other = auth.login(user["user"]["email"])
    client.post("/refresh", json={"refresh_token": other["refresh_token"]})
    client.post("/refresh", json={"refresh_token": other["refresh_token"]})  # reuse
    client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=bearer(token)
    )
    client.patch("/me", json={"name": "Renamed"}, headers=bearer(token))
    client.post("/logout", headers=bearer(token))
    assert names(events(client, admin, user=uid)) == [
        "signup",
        "email_verification_sent",  # EMAIL_VERIFICATION=optional by default
        "login_succeeded",
        "refresh_reuse_detected",
        "password_changed",
        "profile_updated",
        "logout",
    ]


def test_admin_actions_are_recorded(client, admin, auth):
    aid = admin["user"]["id"]
    created = client.post(
        "/users",
        json={"email": "new@example.com", "password": PASSWORD, "name": "N"},
        headers=bearer(admin["access_token"]),
    ).get_json()["user"]
    target = created["id"]
    for change in ({"role": "admin"}, {"is_active": False}, {"is_active": True}, {"password": NEW_PASSWORD}):
        assert client.patch(f"/users/{target}", json=change, headers=bearer(admin["access_token"])).status_code == 200
    client.delete(f"/users/{target}", headers=bearer(admin["access_token"]))
    trail = list(reversed(events(client, admin, user=target)))
    assert [item["event"] for item in trail] == [
        "user_created",
        "role_changed",
        "user_deactivated",
        "user_activated",
        "password_reset",
        "user_deleted",
    ]
    assert all(item["actor_id"] == aid and item["target_id"] == target for item in trail)
    assert trail[1]["details"] == {"old": "user", "new": "admin"}


def test_audit_never_contains_secrets(client, admin, auth):
    user = auth.signup()
    client.post("/login", json={"email": user["user"]["email"], "password": "typo " + PASSWORD})
    client.post("/login", json={"email": PASSWORD.replace(" ", "") + "@x.io", "password": PASSWORD})
    client.post("/logout", json={"refresh_token": user["refresh_token"]}, headers=bearer(user["access_token"]))
    raw = client.get("/audit", query_string={"per_page": 100}, headers=bearer(admin["access_token"])).get_data(
        as_text=True
    )
    for secret in (PASSWORD, PASSWORD.replace(" ", ""), user["access_token"], user["refresh_token"], "$argon2"):
        assert secret not in raw


def test_audit_is_for_admins_only(client, user):
    assert_problem(client.get("/audit", headers=bearer(user["access_token"])), 403, "forbidden")
    assert_problem(client.get("/audit"), 401, "missing_token")


@pytest.mark.parametrize("query", [{"event": "nonsense"}, {"user": "not-a-uuid"}, {"per_page": 101}, {"x": 1}])
def test_audit_query_is_validated(client, admin, query):
    assert_problem(
        client.get("/audit", query_string=query, headers=bearer(admin["access_token"])), 400, "validation_error"
    )


def test_audit_pagination(client, admin, auth):
    for _ in range(3):
        auth.signup()
    page = client.get(
        "/audit", query_string={"event": "signup", "per_page": 2, "page": 2}, headers=bearer(admin["access_token"])
    )
    body = page.get_json()
    assert body["total"] == 4  # the admin's own signup too
    assert body["page"] == 2 and body["per_page"] == 2 and len(body["items"]) == 2


def test_purge_audit_removes_only_old_events(app, runner, auth):
    auth.signup()
    auth.signup()
    with app.app_context():
        first = db.session.query(AuditEvent).order_by(AuditEvent.id).first()
        db.session.execute(
            update(AuditEvent).where(AuditEvent.id == first.id).values(created_at=utcnow() - timedelta(days=91))
        )
        db.session.commit()
        total = db.session.query(AuditEvent).count()
    result = runner.invoke(args=["purge-audit", "--older-than", "90"])
    assert result.exit_code == 0, result.output
    assert "Purged 1" in result.output
    with app.app_context():
        assert db.session.query(AuditEvent).count() == total - 1


def test_purge_audit_refuses_bad_age(runner):
    result = runner.invoke(args=["purge-audit", "--older-than", "0"])
    assert result.exit_code != 0
    assert "older-than" in result.output

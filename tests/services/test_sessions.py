"""app/services/sessions.py: refresh tokens, logout and purging, over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.extensions import db
from app.models import Session
from tests.helpers import assert_accepted, assert_rejected, assert_unauthorized, bearer, check_token, claims_of


def test_refresh_token_has_refresh_type_and_same_sid(user):
    access, refresh = claims_of(user["access_token"]), claims_of(user["refresh_token"])
    assert refresh["type"] == "refresh"
    assert refresh["sid"] == access["sid"]
    assert refresh["sub"] == access["sub"]
    assert refresh["jti"] != access["jti"]
    assert refresh["exp"] - refresh["iat"] == 2592000


def test_refresh_issues_unfresh_access_token_in_same_session(client, user):
    response = client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    access, refresh = claims_of(body["access_token"]), claims_of(body["refresh_token"])
    assert access["fresh"] is False
    assert access["type"] == "access"
    assert access["roles"] == ["user"]
    assert access["sid"] == refresh["sid"] == claims_of(user["access_token"])["sid"]
    assert refresh["type"] == "refresh"
    assert check_token(client, body["access_token"])["valid"] is True


def test_logout_revokes_access_token(client, user):
    response = client.post("/logout", headers=bearer(user["access_token"]))
    assert response.status_code == 200
    assert_rejected(client, user["access_token"], "revoked")


def test_revoking_session_from_another_login_revokes_its_tokens(auth, client, user):
    other = auth.login(user["user"]["email"])
    sid = claims_of(user["access_token"])["sid"]
    response = client.delete(f"/me/sessions/{sid}", headers=bearer(other["access_token"]))
    assert response.status_code == 200, response.get_json()
    assert_rejected(client, user["access_token"], "revoked")
    assert_unauthorized(client.post("/refresh", json={"refresh_token": user["refresh_token"]}))
    assert_accepted(client, other["access_token"], user["user_id"])


def test_refresh_after_logout_is_revoked(client, user):
    assert client.post("/logout", headers=bearer(user["access_token"])).status_code == 200
    response = client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    assert_unauthorized(response, "token_revoked")


def test_logout_leaves_other_login_valid(auth, client, user):
    second = auth.login(user["user"]["email"])
    assert client.post("/logout", headers=bearer(user["access_token"])).status_code == 200
    assert_rejected(client, user["access_token"], "revoked")
    assert_accepted(client, second["access_token"], user["user_id"])
    refreshed = client.post("/refresh", json={"refresh_token": second["refresh_token"]})
    assert refreshed.status_code == 200
    assert_accepted(client, refreshed.get_json()["access_token"], user["user_id"])


def test_logout_all_revokes_every_login(auth, client, user):
    second = auth.login(user["user"]["email"])
    response = client.post("/logout", json={"all": True}, headers=bearer(user["access_token"]))
    assert response.status_code == 200
    assert_rejected(client, user["access_token"], "revoked")
    assert_rejected(client, second["access_token"], "revoked")
    assert_unauthorized(client.post("/refresh", json={"refresh_token": second["refresh_token"]}))


def test_logout_of_other_user_does_not_touch_this_user(auth, client, user):
    other = auth.signup()
    response = client.post(
        "/logout", json={"refresh_token": user["refresh_token"]}, headers=bearer(other["access_token"])
    )
    assert response.status_code == 200
    assert_accepted(client, user["access_token"], user["user_id"])
    assert client.post("/refresh", json={"refresh_token": user["refresh_token"]}).status_code == 200


# --- the user behind the token ---------------------------------------------------------------


def test_purged_expired_session_voids_its_tokens(app, client, user):
    # A session deleted by purge-tokens (its expiry passed) takes its tokens with it.
    sid = uuid.UUID(claims_of(user["access_token"])["sid"])
    with app.app_context():
        db.session.get(Session, sid).expires_at = datetime.now(UTC) - timedelta(days=1)
        db.session.commit()
        from app.services.sessions import purge_expired

        purge_expired()
        assert db.session.scalars(select(Session).where(Session.id == sid)).first() is None
    assert_rejected(client, user["access_token"], ("revoked", "invalid"))

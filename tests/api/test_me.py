"""The self-service endpoints: /me, /me/password, /me/sessions."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from app.extensions import db
from app.models import User
from tests.helpers import (
    PASSWORD,
    USER_FIELDS,
    Auth,
    assert_ok,
    assert_problem,
    bearer,
    check_token,
    db_user,
    login_response,
)

SESSION_FIELDS = {"id", "created_at", "last_used_at", "user_agent", "ip", "current"}
NEW_PASSWORD = "an entirely different passphrase"


def get_me(client, token: str) -> dict:
    """GET /me as `token`, asserting 200; the user object."""
    return assert_ok(client.get("/me", headers=bearer(token)))["user"]


def list_sessions(client, token: str) -> list[dict]:
    """GET /me/sessions as `token`, asserting 200; the items."""
    return assert_ok(client.get("/me/sessions", headers=bearer(token)))["items"]


# GET /me


def test_get_me_returns_exactly_the_user_fields(app, client, user):
    """The user object has the docs/CONTRACT.md fields and nothing derived from the password."""
    response = client.get("/me", headers=bearer(user["access_token"]))
    body = assert_ok(response)
    me = body["user"]
    assert set(me) == USER_FIELDS
    assert me["id"] == user["user_id"]
    assert me["email"] == user["user"]["email"]
    assert me["name"] == "Test User"
    assert me["role"] == "user"
    assert me["is_active"] is True
    assert me["email_verified"] is False
    assert not [key for key in me if "hash" in key or "password" in key]
    stored_hash = db_user(app, user["user_id"])["password_hash"]
    text = response.get_data(as_text=True)
    assert stored_hash not in text
    assert "$argon2" not in text


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer"}, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, "missing_token"),
        ({"Authorization": "Bearer garbage"}, "invalid_token"),
        ({"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"}, "invalid_token"),
    ],
)
def test_get_me_without_valid_token_is_unauthorized(client, user, headers, code):
    """No token, another scheme, or a garbage token: 401 with a Bearer challenge."""
    response = client.get("/me", headers=headers)
    assert_problem(response, 401, code)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_get_me_with_refresh_token_is_unauthorized(client, user):
    """A refresh token is not an access token."""
    response = client.get("/me", headers=bearer(user["refresh_token"]))
    assert_problem(response, 401, "wrong_token_type")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# PATCH /me


def test_update_me_name_email_username(make_app):
    """Without mail, every self-editable field changes at once, and GET /me shows the change."""
    client = make_app(MAIL_URL="none").test_client()
    user = Auth(client).signup()
    response = client.patch(
        "/me",
        json={"name": "  New Name  ", "email": "  New.Person@Example.COM ", "username": "NewHandle"},
        headers=bearer(user["access_token"]),
    )
    changed = assert_ok(response)["user"]
    assert set(changed) == USER_FIELDS
    assert changed["name"] == "New Name"
    assert changed["email"] == "new.person@example.com"
    assert changed["username"] == "NewHandle"
    assert get_me(client, user["access_token"]) == changed


def test_update_me_email_normalized_and_login_with_it(make_app):
    """A mixed-case email is stored lower-cased, and logging in with any case works (no mail: at once)."""
    client = make_app(MAIL_URL="none").test_client()
    auth = Auth(client)
    user = auth.signup()
    response = client.patch("/me", json={"email": "MiXeD@Example.ORG"}, headers=bearer(user["access_token"]))
    assert assert_ok(response)["user"]["email"] == "mixed@example.org"
    assert auth.login("MIXED@example.org")["user"]["id"] == user["user_id"]


def test_update_me_email_change_unverifies(make_app):
    """Without mail, a new email is not verified, even if the old one was."""
    app = make_app(MAIL_URL="none")
    client = app.test_client()
    user = Auth(client, app).signup()
    with app.app_context():
        db.session.get(User, uuid.UUID(user["user_id"])).email_verified = True
        db.session.commit()
    assert get_me(client, user["access_token"])["email_verified"] is True
    response = client.patch("/me", json={"email": "fresh@example.com"}, headers=bearer(user["access_token"]))
    assert assert_ok(response)["user"]["email_verified"] is False
    assert get_me(client, user["access_token"])["email_verified"] is False


def test_update_me_same_email_other_case_keeps_verification(app, client, user):
    """Sending one's own address in another case is no change: it stays verified."""
    with app.app_context():
        db.session.get(User, uuid.UUID(user["user_id"])).email_verified = True
        db.session.commit()
    response = client.patch("/me", json={"email": user["user"]["email"].upper()}, headers=bearer(user["access_token"]))
    changed = assert_ok(response)["user"]
    assert changed["email"] == user["user"]["email"]
    assert changed["email_verified"] is True


def test_update_me_bumps_updated_at(client, user):
    """A change moves updated_at forward and leaves created_at alone."""
    before = get_me(client, user["access_token"])
    response = client.patch("/me", json={"name": "Later Name"}, headers=bearer(user["access_token"]))
    after = assert_ok(response)["user"]
    assert after["created_at"] == before["created_at"]
    assert datetime.fromisoformat(after["updated_at"]) > datetime.fromisoformat(before["updated_at"])


def test_update_me_email_taken_conflict(auth, client, user):
    """Another account's email, in any case, is a 409 email_taken."""
    other = auth.signup("taken@example.com")
    before = get_me(client, user["access_token"])
    response = client.patch("/me", json={"email": "Taken@EXAMPLE.com"}, headers=bearer(user["access_token"]))
    assert_problem(response, 409, "email_taken")
    assert get_me(client, user["access_token"]) == before
    assert get_me(client, other["access_token"])["email"] == "taken@example.com"


def test_update_me_username_taken_case_insensitively_conflict(auth, client, user):
    """Another account's username in another case is a 409 username_taken."""
    auth.signup(username="Alice")
    before = get_me(client, user["access_token"])
    response = client.patch("/me", json={"username": "aLICE"}, headers=bearer(user["access_token"]))
    assert_problem(response, 409, "username_taken")
    assert get_me(client, user["access_token"]) == before


def test_update_me_own_username_case_change(auth, client):
    """Changing only the case of one's own username is not a conflict with oneself."""
    me = auth.signup(username="carol")
    response = client.patch("/me", json={"username": "Carol"}, headers=bearer(me["access_token"]))
    assert assert_ok(response)["user"]["username"] == "Carol"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "admin"}, "role"),
        ({"is_active": False}, "is_active"),
        ({"id": str(uuid.uuid4())}, "id"),
        ({"email_verified": True}, "email_verified"),
        ({"password_hash": "x"}, "password_hash"),
        ({"favorite_color": "blue"}, "favorite_color"),
        ({"name": "Sneaky", "role": "admin"}, "role"),
    ],
)
def test_update_me_unknown_or_forbidden_field_rejected(app, client, user, body, field):
    """Fields outside name/email/username are a 400 naming the field, and nothing is applied."""
    before = get_me(client, user["access_token"])
    row_before = db_user(app, user["user_id"])
    response = client.patch("/me", json=body, headers=bearer(user["access_token"]))
    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]
    assert get_me(client, user["access_token"]) == before
    assert db_user(app, user["user_id"]) == row_before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "user@"}, "email"),
        ({"email": "@example.com"}, "email"),
        ({"email": ""}, "email"),
        ({"email": None}, "email"),
        ({"email": 42}, "email"),
        ({"email": "a\x00b@example.com"}, "email"),
        ({"name": "bad\x00name"}, "name"),
        ({"name": "tab\tname"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": None}, "name"),
        ({"username": "ab"}, "username"),
        ({"username": "has space"}, "username"),
        ({"username": "someone@example.com"}, "username"),
    ],
)
def test_update_me_invalid_value_rejected(app, client, user, body, field):
    """Invalid values are a 400 validation_error naming the field; nothing changes."""
    before = get_me(client, user["access_token"])
    response = client.patch("/me", json=body, headers=bearer(user["access_token"]))
    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]
    assert get_me(client, user["access_token"]) == before


def test_update_me_without_token_unauthorized(client, user):
    """PATCH /me needs a token."""
    response = client.patch("/me", json={"name": "Nobody"})
    assert_problem(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# POST /me/password


def test_change_password_swaps_credentials(auth, client, user):
    """After the change the old password fails and the new one works."""
    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    assert_ok(response)
    email = user["user"]["email"]
    assert_problem(login_response(client, email, PASSWORD), 401, "invalid_credentials")
    assert auth.login(email, NEW_PASSWORD)["user"]["id"] == user["user_id"]


def test_change_password_revokes_other_sessions_only(auth, client, user):
    """Another session's tokens die; the calling session keeps working."""
    other = auth.login(user["user"]["email"])
    assert check_token(client, other["access_token"])["valid"] is True
    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    assert_ok(response)
    assert check_token(client, other["access_token"])["valid"] is False
    unauthorized = client.get("/me", headers=bearer(other["access_token"]))
    assert_problem(unauthorized, 401, "token_revoked")
    assert_problem(client.post("/refresh", json={"refresh_token": other["refresh_token"]}), 401, "token_revoked")
    assert check_token(client, user["access_token"])["valid"] is True
    assert get_me(client, user["access_token"])["id"] == user["user_id"]
    assert_ok(client.post("/refresh", json={"refresh_token": user["refresh_token"]}))


def test_change_password_wrong_current_password_unauthorized(app, auth, client, user):
    """A wrong current password is 401 invalid_credentials and changes nothing."""
    other = auth.login(user["user"]["email"])
    row_before = db_user(app, user["user_id"])
    response = client.post(
        "/me/password",
        json={"current_password": "not the password at all", "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    assert_problem(response, 401, "invalid_credentials")
    assert db_user(app, user["user_id"]) == row_before
    assert check_token(client, other["access_token"])["valid"] is True
    assert_problem(login_response(client, user["user"]["email"], NEW_PASSWORD), 401, "invalid_credentials")
    auth.login(user["user"]["email"], PASSWORD)


@pytest.mark.parametrize("new_password", ["short", "1234567", "\u00e9" * 7])
def test_change_password_too_short_rejected(app, client, user, new_password):
    """A new password under 8 characters is a 400 naming new_password; nothing changes."""
    row_before = db_user(app, user["user_id"])
    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=bearer(user["access_token"]),
    )
    problem = assert_problem(response, 400, "validation_error")
    assert "new_password" in problem["errors"]
    assert db_user(app, user["user_id"]) == row_before


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"current_password", "new_password"}),
        ({"current_password": PASSWORD}, {"new_password"}),
        ({"new_password": NEW_PASSWORD}, {"current_password"}),
        ({"current_password": PASSWORD, "new_password": ""}, {"new_password"}),
        ({"current_password": PASSWORD, "new_password": None}, {"new_password"}),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "user_id": "x"}, {"user_id"}),
    ],
)
def test_change_password_missing_or_bad_fields_rejected(app, client, user, body, fields):
    """Missing or malformed fields are a 400 naming each of them."""
    row_before = db_user(app, user["user_id"])
    response = client.post("/me/password", json=body, headers=bearer(user["access_token"]))
    problem = assert_problem(response, 400, "validation_error")
    assert fields <= set(problem["errors"])
    assert db_user(app, user["user_id"]) == row_before


def test_change_password_without_token_unauthorized(client, user):
    """POST /me/password needs a token."""
    response = client.post("/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert_problem(response, 401, "missing_token")


# DELETE /me


def test_delete_me_wrong_password_unauthorized(app, auth, client, user):
    """A wrong password is 401 invalid_credentials and the account stays."""
    response = client.delete("/me", json={"password": "not the password"}, headers=bearer(user["access_token"]))
    assert_problem(response, 401, "invalid_credentials")
    assert db_user(app, user["user_id"]) is not None
    assert get_me(client, user["access_token"])["id"] == user["user_id"]
    auth.login(user["user"]["email"])


@pytest.mark.parametrize("body", [{}, {"password": ""}, {"password": None}, {"password": PASSWORD, "force": True}])
def test_delete_me_bad_body_rejected(app, client, user, body):
    """Without a usable password field the request is a 400; the account stays."""
    response = client.delete("/me", json=body, headers=bearer(user["access_token"]))
    assert_problem(response, 400, "validation_error")
    assert db_user(app, user["user_id"]) is not None


def test_delete_me_removes_account_and_tokens(app, auth, client, user):
    """The right password deletes the user; login fails and every token is dead."""
    other = auth.login(user["user"]["email"])
    response = client.delete("/me", json={"password": PASSWORD}, headers=bearer(user["access_token"]))
    assert_ok(response)
    assert db_user(app, user["user_id"]) is None
    assert_problem(login_response(client, user["user"]["email"]), 401, "invalid_credentials")
    for token in (user["access_token"], other["access_token"]):
        assert check_token(client, token)["valid"] is False
        assert_problem(client.get("/me", headers=bearer(token)), 401, "token_revoked")
    assert_problem(client.post("/refresh", json={"refresh_token": other["refresh_token"]}), 401, "token_revoked")


def test_delete_me_email_reusable_after(auth, client, user):
    """A deleted account's email can sign up again, as a new account."""
    assert_ok(client.delete("/me", json={"password": PASSWORD}, headers=bearer(user["access_token"])))
    again = auth.signup(user["user"]["email"])
    assert again["user_id"] != user["user_id"]


def test_delete_me_last_admin_conflict(app, client, admin):
    """The only active admin cannot delete their own account."""
    response = client.delete("/me", json={"password": PASSWORD}, headers=bearer(admin["access_token"]))
    assert_problem(response, 409, "last_admin")
    assert db_user(app, admin["user"]["id"]) is not None
    assert get_me(client, admin["access_token"])["role"] == "admin"


def test_delete_me_admin_with_another_admin(app, auth, client, admin):
    """With a second active admin, an admin may delete their own account."""
    auth.make_admin()
    response = client.delete("/me", json={"password": PASSWORD}, headers=bearer(admin["access_token"]))
    assert_ok(response)
    assert db_user(app, admin["user"]["id"]) is None


# GET /me/sessions


def test_list_sessions_two_logins(client, user):
    """Two sessions are listed with their metadata; only the caller's is current."""
    email = user["user"]["email"]
    first = login_response(client, email, user_agent="agent-one").get_json()
    second = login_response(client, email, user_agent="agent-two").get_json()
    assert_ok(client.post("/logout", headers=bearer(user["access_token"])))
    items = list_sessions(client, first["access_token"])
    assert len(items) == 2
    for item in items:
        assert set(item) == SESSION_FIELDS
        assert datetime.fromisoformat(item["created_at"]).tzinfo is not None
        assert datetime.fromisoformat(item["last_used_at"]).tzinfo is not None
        assert item["ip"] == "127.0.0.1"
    by_agent = {item["user_agent"]: item for item in items}
    assert set(by_agent) == {"agent-one", "agent-two"}
    assert [item["current"] for item in items].count(True) == 1
    assert by_agent["agent-one"]["current"] is True
    assert by_agent["agent-two"]["current"] is False
    assert by_agent["agent-one"]["id"] == check_token(client, first["access_token"])["sid"]
    assert by_agent["agent-two"]["id"] == check_token(client, second["access_token"])["sid"]
    from_second = {item["id"]: item["current"] for item in list_sessions(client, second["access_token"])}
    assert from_second == {by_agent["agent-one"]["id"]: False, by_agent["agent-two"]["id"]: True}


def test_list_sessions_omits_revoked(auth, client, user):
    """Logged-out and revoked sessions are not listed."""
    email = user["user"]["email"]
    logged_out = auth.login(email)
    revoked = auth.login(email)
    assert len(list_sessions(client, user["access_token"])) == 3
    assert_ok(client.post("/logout", headers=bearer(logged_out["access_token"])))
    revoked_sid = check_token(client, revoked["access_token"])["sid"]
    assert_ok(client.delete(f"/me/sessions/{revoked_sid}", headers=bearer(user["access_token"])))
    items = list_sessions(client, user["access_token"])
    assert [item["id"] for item in items] == [check_token(client, user["access_token"])["sid"]]
    assert items[0]["current"] is True


def test_list_sessions_only_own(auth, client, user):
    """Another user's sessions never appear."""
    other = auth.signup()
    other_sid = check_token(client, other["access_token"])["sid"]
    ids = [item["id"] for item in list_sessions(client, user["access_token"])]
    assert ids == [check_token(client, user["access_token"])["sid"]]
    assert other_sid not in ids


def test_list_sessions_without_token_unauthorized(client):
    """GET /me/sessions needs a token."""
    assert_problem(client.get("/me/sessions"), 401, "missing_token")


# DELETE /me/sessions/{id}


def test_revoke_session_kills_its_tokens(auth, client, user):
    """Revoking another session voids its access token and its refresh token."""
    other = auth.login(user["user"]["email"])
    other_sid = check_token(client, other["access_token"])["sid"]
    response = client.delete(f"/me/sessions/{other_sid}", headers=bearer(user["access_token"]))
    assert_ok(response)
    verdict = check_token(client, other["access_token"])
    assert verdict["valid"] is False
    assert verdict["reason"] == "revoked"
    assert_problem(client.get("/me", headers=bearer(other["access_token"])), 401, "token_revoked")
    assert_problem(client.post("/refresh", json={"refresh_token": other["refresh_token"]}), 401, "token_revoked")
    assert check_token(client, user["access_token"])["valid"] is True


def test_revoke_session_twice_not_found(auth, client, user):
    """A session already revoked is no longer there to revoke."""
    other = auth.login(user["user"]["email"])
    other_sid = check_token(client, other["access_token"])["sid"]
    assert_ok(client.delete(f"/me/sessions/{other_sid}", headers=bearer(user["access_token"])))
    response = client.delete(f"/me/sessions/{other_sid}", headers=bearer(user["access_token"]))
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid", "1", "00000000-0000-0000-0000-00000000000g"])
def test_revoke_session_unknown_or_malformed_not_found(client, user, session_id):
    """An id that names no session of the caller is 404 not_found."""
    response = client.delete(f"/me/sessions/{session_id}", headers=bearer(user["access_token"]))
    assert_problem(response, 404, "not_found")
    assert check_token(client, user["access_token"])["valid"] is True


def test_revoke_session_of_another_user_not_found(auth, client, user):
    """Another user's session id is 404, and that session keeps working."""
    other = auth.signup()
    other_sid = check_token(client, other["access_token"])["sid"]
    response = client.delete(f"/me/sessions/{other_sid}", headers=bearer(user["access_token"]))
    assert_problem(response, 404, "not_found")
    assert check_token(client, other["access_token"])["valid"] is True
    assert get_me(client, other["access_token"])["id"] == other["user_id"]


def test_revoke_session_without_token_unauthorized(client, user):
    """DELETE /me/sessions/{id} needs a token."""
    response = client.delete(f"/me/sessions/{uuid.uuid4()}")
    assert_problem(response, 401, "missing_token")

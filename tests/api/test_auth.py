"""Signup, login, refresh, logout, checkToken and validate through the real stack."""

from __future__ import annotations

import jwt
import pytest

from app.extensions import db
from app.models import User
from tests.helpers import PASSWORD, USER_FIELDS, assert_problem, bearer


def assert_token_pair(body: dict) -> None:
    """A token pair as docs/CONTRACT.md names it."""
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["access_token"].count(".") == 2
    assert body["refresh_token"].count(".") == 2


# --- signup ---------------------------------------------------------------------------------


def test_signup_returns_user_and_token_pair(client):
    response = client.post(
        "/signup", json={"email": " New.Person@Example.COM ", "password": PASSWORD, "name": "New Person"}
    )
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["success"] is True
    assert body["user_id"] == body["user"]["id"]
    assert set(body["user"]) == USER_FIELDS
    assert body["user"]["email"] == "new.person@example.com"
    assert body["user"]["role"] == "user"
    assert body["user"]["is_active"] is True
    assert body["user"]["email_verified"] is False
    assert_token_pair(body)
    assert "password" not in response.get_data(as_text=True).lower()


def test_signup_with_username_and_matching_confirmation(client):
    response = client.post(
        "/signup",
        json={
            "email": "u@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "name": "U",
            "username": "Jo_e",
        },
    )
    assert response.status_code == 201
    assert response.get_json()["user"]["username"] == "Jo_e"


def test_signup_duplicate_email_is_409_case_insensitively(client, auth):
    auth.signup("taken@example.com")
    response = client.post("/signup", json={"email": "TAKEN@example.com", "password": PASSWORD, "name": "X"})
    assert_problem(response, 409, "email_taken")


def test_signup_duplicate_username_is_409_case_insensitively(client, auth):
    auth.signup(username="Alice")
    response = client.post(
        "/signup", json={"email": "b@example.com", "password": PASSWORD, "name": "X", "username": "aLiCe"}
    )
    assert_problem(response, 409, "username_taken")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": PASSWORD, "name": "N"}, "email"),
        ({"email": "a@example.com", "name": "N"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD}, "name"),
        ({"email": "not-an-email", "password": PASSWORD, "name": "N"}, "email"),
        ({"email": "a@example.com", "password": "short", "name": "N"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "name": ""}, "name"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "N\u0000ul"}, "name"),
        ({"email": "a@exa\u0000mple.com", "password": PASSWORD, "name": "N"}, "email"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "N" * 101}, "name"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "N", "username": "a@b"}, "username"),
        (
            {"email": "a@example.com", "password": PASSWORD, "name": "N", "password_confirm": "other thing"},
            "password_confirm",
        ),
        ({"email": "a@example.com", "password": PASSWORD, "name": "N", "role": "admin"}, "role"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "N", "is_active": False}, "is_active"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "N", "id": "x"}, "id"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "N", "favourite": 1}, "favourite"),
        ({"email": 5, "password": PASSWORD, "name": "N"}, "email"),
    ],
)
def test_signup_invalid_input_is_400_and_creates_nothing(client, app, body, field):
    response = client.post("/signup", json=body)
    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]
    with app.app_context():
        assert db.session.query(User).count() == 0


# --- login ----------------------------------------------------------------------------------


def test_login_by_email_returns_pair_and_user(client, user):
    response = client.post("/login", json={"email": user["user"]["email"].upper(), "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["success"] is True
    assert body["user"]["id"] == user["user_id"]
    assert_token_pair(body)


def test_login_by_username_is_case_insensitive(client, auth):
    auth.signup("named@example.com", username="Bobby")
    response = client.post("/login", json={"username": "bOBBY", "password": PASSWORD})
    assert response.status_code == 200
    assert response.get_json()["user"]["email"] == "named@example.com"


def test_login_wrong_password_and_unknown_account_answer_alike(client, user):
    wrong = client.post("/login", json={"email": user["user"]["email"], "password": "wrong password!"})
    unknown = client.post("/login", json={"email": "nobody@example.com", "password": "wrong password!"})
    first = assert_problem(wrong, 401, "invalid_credentials")
    second = assert_problem(unknown, 401, "invalid_credentials")
    assert first == second
    assert "WWW-Authenticate" not in wrong.headers


def test_login_disabled_account_with_right_password_is_403(client, app, user):
    with app.app_context():
        db.session.get(User, __import__("uuid").UUID(user["user_id"])).is_active = False
        db.session.commit()
    assert_problem(
        client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}), 403, "account_disabled"
    )
    wrong = client.post("/login", json={"email": user["user"]["email"], "password": "not the password"})
    assert_problem(wrong, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        {"password": PASSWORD},
        {"email": "a@example.com"},
        {"email": "a@example.com", "username": "a", "password": PASSWORD},
        {"email": "a@example.com", "password": PASSWORD, "remember": True},
        {"email": "a@example.com", "password": ""},
    ],
)
def test_login_invalid_input_is_400(client, body):
    assert_problem(client.post("/login", json=body), 400, "validation_error")


# --- refresh --------------------------------------------------------------------------------


def test_refresh_rotates_and_spent_token_revokes_session(client, user):
    first = client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "no-store"
    pair = first.get_json()
    assert_token_pair(pair)
    assert pair["refresh_token"] != user["refresh_token"]
    assert client.post("/checkToken", json={"token": pair["access_token"]}).get_json()["valid"] is True

    reused = client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    assert_problem(reused, 401, "token_reused")
    assert reused.headers["WWW-Authenticate"].startswith("Bearer")
    # The whole session is revoked: the newest pair too.
    assert client.post("/checkToken", json={"token": pair["access_token"]}).get_json() == {
        "success": True,
        "valid": False,
        "reason": "revoked",
    }
    assert_problem(client.post("/refresh", json={"refresh_token": pair["refresh_token"]}), 401, "token_revoked")


def test_refresh_accepts_bearer_and_keeps_sid(client, user):
    response = client.post("/refresh", headers=bearer(user["refresh_token"]))
    assert response.status_code == 200
    old = jwt.decode(user["refresh_token"], options={"verify_signature": False})
    new = jwt.decode(response.get_json()["refresh_token"], options={"verify_signature": False})
    assert new["sid"] == old["sid"] and new["jti"] != old["jti"] and new["type"] == "refresh"
    access = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    assert access["fresh"] is False and access["sid"] == old["sid"]


def test_refresh_other_sessions_survive_reuse(client, auth, user):
    other = auth.login(user["user"]["email"])
    client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    assert client.post("/checkToken", json={"token": other["access_token"]}).get_json()["valid"] is True


def test_refresh_missing_token_is_400(client):
    assert_problem(client.post("/refresh", json={}), 400, "missing_token")


def test_refresh_with_access_token_is_401(client, user):
    assert_problem(client.post("/refresh", json={"refresh_token": user["access_token"]}), 401, "wrong_token_type")


def test_refresh_garbage_is_401(client):
    assert_problem(client.post("/refresh", json={"refresh_token": "not.a.token"}), 401, "invalid_token")


# --- logout ---------------------------------------------------------------------------------


def test_logout_revokes_access_token_and_session(client, user):
    response = client.post("/logout", headers=bearer(user["access_token"]))
    assert response.status_code == 200
    assert response.get_json()["success"] is True and response.get_json()["message"]
    assert client.post("/checkToken", json={"token": user["access_token"]}).get_json()["reason"] == "revoked"
    assert_problem(client.post("/refresh", json={"refresh_token": user["refresh_token"]}), 401, "token_revoked")
    assert_problem(client.post("/logout", headers=bearer(user["access_token"])), 401, "token_revoked")


def test_logout_leaves_other_sessions(client, auth, user):
    other = auth.login(user["user"]["email"])
    client.post("/logout", headers=bearer(user["access_token"]))
    assert client.post("/checkToken", json={"token": other["access_token"]}).get_json()["valid"] is True


def test_logout_all_revokes_every_session(client, auth, user):
    other = auth.login(user["user"]["email"])
    response = client.post("/logout", json={"all": True}, headers=bearer(user["access_token"]))
    assert response.status_code == 200
    for token in (user["access_token"], other["access_token"]):
        assert client.post("/checkToken", json={"token": token}).get_json()["valid"] is False
    assert_problem(client.post("/refresh", json={"refresh_token": other["refresh_token"]}), 401, "token_revoked")
    assert auth.login(user["user"]["email"])["access_token"]


def test_logout_with_refresh_token_of_another_session_revokes_it(client, auth, user):
    other = auth.login(user["user"]["email"])
    client.post("/logout", json={"refresh_token": other["refresh_token"]}, headers=bearer(user["access_token"]))
    assert_problem(client.post("/refresh", json={"refresh_token": other["refresh_token"]}), 401, "token_revoked")


def test_logout_cannot_revoke_another_users_session(client, auth, user):
    stranger = auth.signup()
    client.post("/logout", json={"refresh_token": stranger["refresh_token"]}, headers=bearer(user["access_token"]))
    assert client.post("/refresh", json={"refresh_token": stranger["refresh_token"]}).status_code == 200


def test_logout_without_token_is_401_with_challenge(client):
    response = client.post("/logout")
    assert_problem(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_logout_rejects_non_boolean_all(client, user):
    response = client.post("/logout", json={"all": "yes"}, headers=bearer(user["access_token"]))
    assert_problem(response, 400, "validation_error")
    assert client.post("/checkToken", json={"token": user["access_token"]}).get_json()["valid"] is True


# --- checkToken and validate ----------------------------------------------------------------


def test_check_token_valid_answer(client, user):
    body = client.post("/checkToken", json={"token": user["access_token"]}).get_json()
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    assert body["success"] is True and body["valid"] is True
    assert body["user_id"] == user["user_id"]
    assert body["email"] == user["user"]["email"]
    assert body["roles"] == ["user"]
    assert body["jti"] == claims["jti"] and body["sid"] == claims["sid"]
    assert body["expires_at"].startswith("20")


def test_check_token_missing_is_400(client):
    assert_problem(client.post("/checkToken", json={}), 400, "missing_token")
    assert_problem(client.post("/checkToken"), 400, "missing_token")


def test_check_token_refresh_token_is_wrong_type(client, user):
    body = client.post("/checkToken", json={"token": user["refresh_token"]}).get_json()
    assert body == {"success": True, "valid": False, "reason": "wrong_type"}


def test_validate_sets_identity_headers(client, admin):
    response = client.get("/validate", headers=bearer(admin["access_token"]))
    assert response.status_code == 200
    assert response.headers["X-User-Id"] == admin["user"]["id"]
    assert response.headers["X-User-Email"] == admin["user"]["email"]
    assert response.headers["X-User-Roles"] == "admin"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer garbage", "Basic dXNlcjpwYXNz"])
def test_validate_without_valid_token_is_401(client, header):
    response = client.get("/validate", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "X-User-Id" not in response.headers


def test_validate_after_logout_is_401(client, user):
    client.post("/logout", headers=bearer(user["access_token"]))
    assert_problem(client.get("/validate", headers=bearer(user["access_token"])), 401, "token_revoked")


def test_refresh_cannot_extend_a_session_past_its_absolute_lifetime(make_app, app):
    import datetime as dt

    from sqlalchemy import update

    from app.models import Session

    limited = make_app(SESSION_MAX_LIFETIME=3600)
    client = limited.test_client()
    body = client.post("/signup", json={"email": "life@example.com", "password": PASSWORD, "name": "L"}).get_json()
    claims = jwt.decode(body["refresh_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 3600  # capped, not the 30-day refresh lifetime
    with limited.app_context():
        db.session.execute(update(Session).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3601)))
        db.session.commit()
    assert_problem(client.post("/refresh", json={"refresh_token": body["refresh_token"]}), 401, "token_expired")

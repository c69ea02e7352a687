"""Assertions and small request helpers shared by the API tests."""

from __future__ import annotations

import uuid

from app.extensions import db
from app.models import User
from tests.conftest import PASSWORD

USER_FIELDS = {
    "id",
    "email",
    "username",
    "name",
    "role",
    "is_active",
    "email_verified",
    "mfa_enabled",
    "created_at",
    "updated_at",
}


def assert_problem(response, status: int, code: str) -> dict:
    """The response is an RFC 9457 problem document with this status and code; return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["success"] is False
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"] and body["detail"]
    return body


def assert_ok(response, status: int = 200) -> dict:
    """A success envelope with this status; return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is True
    return body


def check_token(client, token: str) -> dict:
    """The /checkToken answer for `token`."""
    return assert_ok(client.post("/checkToken", json={"token": token}))


def db_user(app, user_id: str) -> dict | None:
    """Every column of the user's row, read straight from the database (None when gone)."""
    with app.app_context():
        row = db.session.get(User, uuid.UUID(user_id))
        if row is None:
            return None
        return {attr.key: getattr(row, attr.key) for attr in User.__mapper__.column_attrs}


def login_response(client, email: str, password: str = PASSWORD, user_agent: str | None = None):
    """POST /login, returning the raw response."""
    headers = {"User-Agent": user_agent} if user_agent else {}
    return client.post("/login", json={"email": email, "password": password}, headers=headers)

"""Assertions and small request helpers shared by the API tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import subprocess
import sys
import threading
import uuid

import jwt

from app.extensions import db
from app.models import User

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)

USER_FIELDS = {
    "id",
    "email",
    "username",
    "name",
    "role",
    "is_active",
    "email_verified",
    "pending_email",
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


def login_from(client, email: str, password: str = "wrong password!", ip: str = "10.9.9.9"):
    """POST /login from `ip` (a wrong password unless given), returning the raw response."""
    return client.post("/login", json={"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip})


def assert_429(response, code: str) -> int:
    """A 429 problem with a sane Retry-After (RFC 6585 4, RFC 9110 10.2.3); return it."""
    assert_problem(response, 429, code)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 3600
    return retry_after


def run_together(app, count: int, request) -> list:
    """Run `request(client)` in `count` threads released at the same instant; return the responses (or errors)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def worker(index: int) -> None:
        client = app.test_client()
        barrier.wait()
        try:
            results[index] = request(client)
        except Exception as error:  # surfaced by the assertions below
            results[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def python_output(code: str) -> list[str]:
    """The output lines of `code` run by a new interpreter in the project (testing, in-memory SQLite); it must succeed.

    For what a worker process loads: a fresh interpreter has imported nothing of the test run.
    """
    from config import BASE_DIR

    env = {"APP_ENV": "testing", "DATABASE_URL": "sqlite://", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()


# The error code a protected endpoint answers with for each /checkToken reason (docs/CONTRACT.md):
# written out here, not read from app/errors.py, so a wrong mapping there fails the tests.
REASON_CODES = {
    "expired": "token_expired",
    "revoked": "token_revoked",
    "invalid": "invalid_token",
    "wrong_type": "wrong_token_type",
    "user_inactive": "user_inactive",
}


def claims_of(token: str) -> dict:
    """The claims of a token, without checking anything."""
    return jwt.decode(token, options={"verify_signature": False})


def assert_unauthorized(response, code: str | None = None) -> dict:
    """A 401 problem+json with a Bearer challenge (and this code, when given)."""
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.get_json()
    assert body["success"] is False
    assert body["status"] == 401
    if code is not None:
        assert body["code"] == code
    return body


def assert_rejected(client, token: str, reason: str | tuple[str, ...]) -> None:
    """Invalid for /checkToken with `reason` (one of, if a tuple), and 401 at /me and /validate."""
    reasons = reason if isinstance(reason, tuple) else (reason,)
    body = check_token(client, token)
    assert body["valid"] is False
    assert body["reason"] in reasons
    assert "user_id" not in body and "email" not in body
    code = REASON_CODES[body["reason"]]
    me = client.get("/me", headers=bearer(token))
    assert_unauthorized(me, code)
    assert 'error="invalid_token"' in me.headers["WWW-Authenticate"]
    assert_unauthorized(client.get("/validate", headers=bearer(token)), code)


def assert_accepted(client, token: str, user_id: str) -> None:
    """Valid for /checkToken, /me and /validate, as this user."""
    body = check_token(client, token)
    assert body["valid"] is True, body
    assert body["user_id"] == user_id
    me = client.get("/me", headers=bearer(token))
    assert me.status_code == 200, me.get_json()
    assert me.get_json()["user"]["id"] == user_id
    validate = client.get("/validate", headers=bearer(token))
    assert validate.status_code == 200
    assert validate.headers["X-User-Id"] == user_id


def sign(app, claims: dict, *, algorithm: str = "HS256", key: str | None = None, headers: dict | None = None) -> str:
    """Sign `claims` with HMAC (by default the app's own secret and algorithm).

    Done by hand rather than with jwt.encode, which refuses some of the malformed claims
    (a non-string `iss`, …) these tests need to send.
    """
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[algorithm]
    signing_input = f"{b64({'alg': algorithm, 'typ': 'JWT', **(headers or {})})}.{b64(claims)}"
    secret = (key or app.config["JWT_SECRET_KEY"]).encode()
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), digest).digest())}"


def forge(app, token: str, *, drop: tuple[str, ...] = (), **changes) -> str:
    """A copy of a real token with some claims changed or removed, validly signed by the app."""
    claims = claims_of(token)
    claims.update(changes)
    for name in drop:
        claims.pop(name)
    return sign(app, claims)


def b64(data: dict | bytes) -> str:
    """base64url without padding, of bytes or of a JSON object."""
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(segment: str) -> dict:
    """The JSON object in a base64url segment."""
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


class Auth:
    """Helpers to make accounts and sign in through the real endpoints."""

    def __init__(self, client, app=None):
        """Bind to a client (of `app`: the client's own application unless given)."""
        self.client = client
        self.app = app or client.application

    def signup(self, email: str | None = None, password: str = PASSWORD, **extra) -> dict:
        """Sign up and return the response body (asserting 201)."""
        email = email or f"user{next(_counter)}@example.com"
        body = {"email": email, "password": password, "name": extra.pop("name", "Test User"), **extra}
        response = self.client.post("/signup", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def login(self, email: str, password: str = PASSWORD) -> dict:
        """Log in and return the response body (asserting 200)."""
        response = self.client.post("/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def make_admin(self, email: str | None = None) -> dict:
        """A signed-in admin: signup, promote in the database, log in again for a token with the role."""
        body = self.signup(email)
        with self.app.app_context():
            user = db.session.get(User, uuid.UUID(body["user_id"]))
            user.role = "admin"
            db.session.commit()
        return self.login(body["user"]["email"])


def add_user(*, role: str = "user", email: str | None = None, password: str = PASSWORD, **extra) -> User:
    """A committed user made through the service layer (no HTTP); call inside an app context."""
    from app.services import users

    email = email or f"user{next(_counter)}@example.com"
    user = users.new_user(email=email, password=password, name=extra.pop("name", "Test User"), role=role, **extra)
    db.session.commit()
    return user

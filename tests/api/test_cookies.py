"""Cookie mode for browser apps (app/api/cookies.py): the refresh token in `__Host-refresh_token`.

Through the Flask test client; tests/e2e/test_browser_cookies.py does the same in a real Chromium.
The test client's requests go to http://localhost, so that is the service's own origin here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest
from sqlalchemy import func, select

from app.api.cookies import REFRESH_COOKIE
from app.extensions import db
from app.models import Session
from app.services import mfa
from tests.api.test_mfa import T0, code_at, enable, mfa_token, next_step
from tests.helpers import PASSWORD, assert_ok, assert_problem, bearer, check_token

OWN = {"Origin": "http://localhost"}
APP_ORIGIN = "https://app.example.com"
LIFETIME = 2592000  # JWT_REFRESH_TOKEN_EXPIRES's default


def set_cookies(response) -> list[dict]:
    """Every Set-Cookie of the response, each as {name, value, attribute: value or True}."""
    found = []
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        cookie = {"name": name, "value": value}
        for attribute in attributes:
            key, sep, val = attribute.partition("=")
            cookie[key.lower()] = val if sep else True
        found.append(cookie)
    return found


def the_cookie(response) -> dict:
    """The one Set-Cookie of the response, asserting its name and the attributes every one of it has."""
    (cookie,) = set_cookies(response)
    assert cookie["name"] == REFRESH_COOKIE
    assert cookie["secure"] is True and cookie["httponly"] is True
    assert cookie["path"] == "/" and cookie["samesite"] == "Strict"
    assert "domain" not in cookie  # __Host-: the exact host only
    assert set(cookie) == {"name", "value", "expires", "max-age", "secure", "httponly", "path", "samesite"}
    return cookie


def assert_sets_refresh_cookie(response) -> str:
    """The response sets the cookie to a refresh token for its whole lifetime; return the token."""
    cookie = the_cookie(response)
    claims = jwt.decode(cookie["value"], options={"verify_signature": False})
    assert claims["type"] == "refresh"
    assert LIFETIME - 5 <= int(cookie["max-age"]) <= LIFETIME
    expires = datetime.strptime(cookie["expires"], "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    assert abs(expires.timestamp() - claims["exp"]) <= 5
    return cookie["value"]


def assert_clears_cookie(response) -> None:
    """The response tells the browser to drop the cookie."""
    cookie = the_cookie(response)
    assert cookie["value"] == "" and cookie["max-age"] == "0"
    assert cookie["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"


def cookie_login(client, email: str, headers=OWN):
    """POST /login in cookie mode."""
    return client.post("/login", json={"email": email, "password": PASSWORD, "cookie": True}, headers=headers)


def session_count(app) -> int:
    """Sessions in the database."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Session))


@pytest.fixture
def clock(monkeypatch):
    """The time TOTP codes are judged at (as tests/api/test_mfa.py's fixture of that name)."""
    now = {"t": float(T0)}
    monkeypatch.setattr(mfa, "clock", lambda: now["t"])
    return now


def jar(client) -> str | None:
    """The cookie's value in the test client's jar (what a browser would hold)."""
    cookie = client.get_cookie(REFRESH_COOKIE)
    return cookie.value if cookie else None


# --- issuing in cookie mode -----------------------------------------------------------------


def test_login_cookie_mode_sets_the_cookie_and_leaves_it_out_of_the_body(client, user):
    response = cookie_login(client, user["user"]["email"])
    body = assert_ok(response)
    assert "refresh_token" not in body
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900 and body["user"]["id"]
    token = assert_sets_refresh_cookie(response)
    assert jar(client) == token
    assert check_token(client, body["access_token"])["valid"] is True
    assert response.headers["Cache-Control"] == "no-store"


def test_signup_cookie_mode(client):
    body = {"email": "c@example.com", "password": PASSWORD, "name": "C", "cookie": True}
    response = client.post("/signup", json=body, headers=OWN)
    assert assert_ok(response, 201).keys() >= {"user_id", "user", "access_token"}
    assert "refresh_token" not in response.get_json()
    assert_sets_refresh_cookie(response)


def test_login_mfa_cookie_mode(client, user, clock):
    secret, _ = enable(client, user, clock)
    next_step(clock)
    token = mfa_token(client, user["user"]["email"])  # the mfa_required 401 sets no cookie
    body = {"mfa_token": token, "code": code_at(secret, clock["t"]), "cookie": True}
    response = client.post("/login/mfa", json=body, headers=OWN)
    assert "refresh_token" not in assert_ok(response)
    assert_sets_refresh_cookie(response)


def test_login_mfa_cookie_mode_with_a_recovery_code(client, user, clock):
    _, codes = enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    response = client.post(
        "/login/mfa", json={"mfa_token": token, "recovery_code": codes[0], "cookie": True}, headers=OWN
    )
    body = assert_ok(response)
    assert "refresh_token" not in body and body["access_token"]
    refresh = assert_sets_refresh_cookie(response)
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]
    # The cookie's session keeps the second factor through a refresh.
    again = assert_ok(client.post("/refresh", json={}, headers=OWN))
    assert jwt.decode(again["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]
    assert jar(client) != refresh


def test_cookie_flag_must_be_a_boolean(client, user):
    body = {"email": user["user"]["email"], "password": PASSWORD, "cookie": "yes"}
    response = client.post("/login", json=body, headers=OWN)
    assert assert_problem(response, 400, "validation_error")["errors"] == {"cookie": ["Must be true or false."]}
    assert not set_cookies(response)


def test_cookie_mode_from_a_foreign_origin_is_refused_before_anything_happens(client, app, user):
    before = session_count(app)
    for origin in ("https://evil.example.com", "null", "http://localhost:8080", "https://localhost"):
        response = cookie_login(client, user["user"]["email"], headers={"Origin": origin})
        assert_problem(response, 403, "origin_not_allowed")
        assert not set_cookies(response)
    signup = {"email": "f@example.com", "password": PASSWORD, "name": "F", "cookie": True}
    assert_problem(client.post("/signup", json=signup, headers={"Origin": "https://evil.example.com"}), 403,
                   "origin_not_allowed")  # fmt: skip
    assert session_count(app) == before
    assert client.post("/login", json={"email": "f@example.com", "password": PASSWORD}).status_code == 401


def test_cookie_mode_without_origin_is_a_non_browser_client_and_is_served(client, user):
    assert_sets_refresh_cookie(cookie_login(client, user["user"]["email"], headers={}))


# --- refresh from the cookie ----------------------------------------------------------------


def test_refresh_from_the_cookie_rotates_it(client, user):
    login = cookie_login(client, user["user"]["email"])
    first = assert_sets_refresh_cookie(login)
    response = client.post("/refresh", headers=OWN)  # no body at all; cookie mode follows the cookie
    body = assert_ok(response)
    assert "refresh_token" not in body and check_token(client, body["access_token"])["valid"] is True
    second = assert_sets_refresh_cookie(response)
    assert second != first and jar(client) == second
    old, new = (jwt.decode(t, options={"verify_signature": False}) for t in (first, second))
    assert new["sid"] == old["sid"] and new["jti"] != old["jti"]
    third = assert_sets_refresh_cookie(client.post("/refresh", json={"cookie": True}, headers=OWN))
    assert third not in (first, second)


def test_reusing_an_old_cookie_value_revokes_the_session(client, user):
    login = cookie_login(client, user["user"]["email"])
    old = assert_sets_refresh_cookie(login)
    newest = assert_ok(client.post("/refresh", headers=OWN))
    client.set_cookie(REFRESH_COOKIE, old)  # a thief replays the value it stole
    reused = client.post("/refresh", headers=OWN)
    assert_problem(reused, 401, "token_reused")
    assert_clears_cookie(reused)
    assert check_token(client, newest["access_token"]) == {"success": True, "valid": False, "reason": "revoked"}
    assert check_token(client, assert_ok(login)["access_token"])["valid"] is False
    # The legitimate holder's newest cookie is dead too.
    assert jar(client) is None


def test_a_cookie_that_cannot_refresh_is_cleared(client):
    client.set_cookie(REFRESH_COOKIE, "not.a.token")
    response = client.post("/refresh", headers=OWN)
    assert_problem(response, 401, "invalid_token")
    assert_clears_cookie(response)
    assert jar(client) is None
    assert_problem(client.post("/refresh", headers=OWN), 400, "missing_token")


@pytest.mark.parametrize("origin", [None, "https://evil.example.com", "null", "https://localhost", "http://127.0.0.1"])
def test_refresh_from_the_cookie_needs_an_allowed_origin_and_changes_nothing(client, user, origin):
    login = assert_ok(cookie_login(client, user["user"]["email"]))
    token = jar(client)
    response = client.post("/refresh", headers={"Origin": origin} if origin else {})
    assert_problem(response, 403, "origin_not_allowed")
    assert not set_cookies(response) and "Access-Control-Allow-Origin" not in response.headers
    # Nothing was spent: the same cookie refreshes from the right origin, the session is alive.
    assert jar(client) == token
    assert check_token(client, login["access_token"])["valid"] is True
    assert assert_ok(client.post("/refresh", headers=OWN))["access_token"]


def test_a_body_token_wins_over_the_cookie_and_needs_no_origin(client, auth, user):
    assert_ok(cookie_login(client, user["user"]["email"]))
    in_cookie = jar(client)
    response = client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    body = assert_ok(response)
    assert body["refresh_token"] and not set_cookies(response)  # body mode, as before
    assert jar(client) == in_cookie  # the cookie's session was not touched
    assert assert_ok(client.post("/refresh", headers=OWN))["access_token"]


def test_a_body_token_can_move_to_cookie_mode(client, user):
    response = client.post("/refresh", json={"refresh_token": user["refresh_token"], "cookie": True}, headers=OWN)
    assert "refresh_token" not in assert_ok(response)
    assert_sets_refresh_cookie(response)
    assert_problem(client.post("/refresh", json={"refresh_token": user["refresh_token"]}), 401, "token_reused")


def test_body_mode_is_unchanged(client, user):
    login = client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD})
    assert assert_ok(login)["refresh_token"] and not set_cookies(login)
    refresh = client.post("/refresh", json={"refresh_token": login.get_json()["refresh_token"]})
    assert assert_ok(refresh)["refresh_token"] and not set_cookies(refresh)
    logout = client.post("/logout", headers=bearer(refresh.get_json()["access_token"]))
    assert assert_ok(logout) and not set_cookies(logout)
    assert client.get_cookie(REFRESH_COOKIE) is None


# --- logout ---------------------------------------------------------------------------------


def test_logout_revokes_the_cookies_session_and_clears_it(client, auth, user):
    login = assert_ok(cookie_login(client, user["user"]["email"]))
    token = jar(client)
    other = auth.login(user["user"]["email"])  # a session in body mode, signed in elsewhere
    response = client.post("/logout", headers={**OWN, **bearer(login["access_token"])})
    assert_ok(response)
    assert_clears_cookie(response)
    assert jar(client) is None
    client.set_cookie(REFRESH_COOKIE, token)
    assert_problem(client.post("/refresh", headers=OWN), 401, "token_revoked")
    assert check_token(client, login["access_token"])["valid"] is False
    assert check_token(client, other["access_token"])["valid"] is True


def test_logout_with_another_sessions_access_token_still_ends_the_cookies_session(client, auth, user):
    other = auth.login(user["user"]["email"])
    assert_ok(cookie_login(client, user["user"]["email"]))
    token = jar(client)
    assert_clears_cookie(client.post("/logout", headers={**OWN, **bearer(other["access_token"])}))
    client.set_cookie(REFRESH_COOKIE, token)
    assert_problem(client.post("/refresh", headers=OWN), 401, "token_revoked")


def test_logout_from_a_foreign_origin_changes_nothing(client, user):
    login = assert_ok(cookie_login(client, user["user"]["email"]))
    response = client.post("/logout", headers={"Origin": "https://evil.example.com", **bearer(login["access_token"])})
    assert_problem(response, 403, "origin_not_allowed")
    assert not set_cookies(response)
    assert check_token(client, login["access_token"])["valid"] is True
    assert assert_ok(client.post("/refresh", headers=OWN))["access_token"]


def test_logout_needs_the_access_token_even_with_the_cookie(client, user):
    assert_ok(cookie_login(client, user["user"]["email"]))
    response = client.post("/logout", headers=OWN)
    assert_problem(response, 401, "missing_token")
    assert not set_cookies(response) and jar(client)


# --- CORS: credentials for listed origins only ------------------------------------------------


@pytest.fixture
def cors_client(make_app):
    """A client of an app with one frontend origin listed."""
    return make_app(CORS_ORIGINS=f"{APP_ORIGIN}, https://admin.example.com").test_client()


def test_a_listed_origin_logs_in_refreshes_and_logs_out_with_credentials(cors_client, user):
    origin = {"Origin": APP_ORIGIN}
    preflight = cors_client.options(
        "/refresh",
        headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Content-Type"},
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    login = cookie_login(cors_client, user["user"]["email"], headers=origin)
    assert login.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert login.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in login.headers.get("Vary", "")
    assert_sets_refresh_cookie(login)
    refresh = cors_client.post("/refresh", headers=origin)
    assert refresh.headers["Access-Control-Allow-Credentials"] == "true"
    access = assert_ok(refresh)["access_token"]
    assert_sets_refresh_cookie(refresh)
    logout = cors_client.post("/logout", headers={**origin, **bearer(access)})
    assert logout.headers["Access-Control-Allow-Credentials"] == "true"
    assert_clears_cookie(logout)


def test_no_credentialed_cors_for_an_unlisted_origin(cors_client, user):
    evil = {"Origin": "https://evil.example.com"}
    preflight = cors_client.options(
        "/refresh",
        headers={**evil, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Content-Type"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    assert_ok(cookie_login(cors_client, user["user"]["email"]))
    refused = cors_client.post("/refresh", headers=evil)
    assert_problem(refused, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "Access-Control-Allow-Credentials" not in refused.headers


def test_the_cookie_keeps_path_slash_under_a_url_prefix(make_app, user):
    client = make_app(URL_PREFIX="/auth").test_client()
    login = cookie_login_at(client, "/auth/login", user["user"]["email"])
    assert_sets_refresh_cookie(login)
    assert assert_ok(client.post("/auth/refresh", headers=OWN))["access_token"]


def cookie_login_at(client, path: str, email: str):
    """POST to a login path in cookie mode from the service's own origin."""
    return client.post(path, json={"email": email, "password": PASSWORD, "cookie": True}, headers=OWN)


def test_openapi_documents_cookie_mode(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in ("/signup", "/login", "/login/mfa", "/refresh"):
        operation = paths[path]["post"]
        schema_name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        schema = client.get("/openapi.json").get_json()["components"]["schemas"][schema_name]
        assert schema["properties"]["cookie"]["type"] == "boolean"
        success = next(response for status, response in operation["responses"].items() if status in ("200", "201"))
        assert "Set-Cookie" in success["headers"]
        assert "403" in operation["responses"]
    for path in ("/refresh", "/logout"):
        parameters = paths[path]["post"]["parameters"]
        assert {"in": "cookie", "name": REFRESH_COOKIE} in [{"in": p["in"], "name": p["name"]} for p in parameters]


def test_the_own_origin_is_the_scheme_a_trusted_proxy_reports(make_app, user):
    client = make_app(TRUSTED_PROXIES="127.0.0.1").test_client()
    behind_tls = {"X-Forwarded-Proto": "https", "Origin": "https://localhost"}
    assert_sets_refresh_cookie(cookie_login(client, user["user"]["email"], headers=behind_tls))
    # The browser saw https://localhost; http://localhost is another origin.
    assert_problem(client.post("/refresh", headers={**behind_tls, **OWN}), 403, "origin_not_allowed")
    assert assert_ok(client.post("/refresh", headers=behind_tls))["access_token"]
    # Without the trusted proxy's word the request is plain HTTP, and https://localhost is foreign.
    assert_problem(client.post("/refresh", headers={"Origin": "https://localhost"}), 403, "origin_not_allowed")

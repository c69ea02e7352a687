"""The general rules of docs/CONTRACT.md: problem+json everywhere, body rules, headers, CORS, URL_PREFIX, docs."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import make_test_app
from tests.helpers import PASSWORD, assert_problem, bearer

ENDPOINTS = [
    ("post", "/signup"),
    ("post", "/login"),
    ("post", "/refresh"),
    ("post", "/logout"),
    ("post", "/checkToken"),
    ("get", "/validate"),
    ("get", "/me"),
    ("patch", "/me"),
    ("delete", "/me"),
    ("post", "/me/password"),
    ("get", "/me/sessions"),
    ("delete", "/me/sessions/{session_id}"),
    ("get", "/users"),
    ("post", "/users"),
    ("get", "/users/{user_id}"),
    ("patch", "/users/{user_id}"),
    ("delete", "/users/{user_id}"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/health"),
    ("get", "/ready"),
]


def test_unknown_path_is_problem_404(client):
    assert_problem(client.get("/no/such/thing"), 404, "not_found")


def test_wrong_method_is_problem_405_with_allow(client):
    response = client.get("/signup")
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"), [("get", "/signup", {"POST"}), ("put", "/me", {"GET", "PATCH"})]
)
def test_405_names_the_allowed_methods_in_the_body_too(client, method, path, allowed):
    # Issue 9.22: a client reading only the problem document learns what would have worked.
    response = getattr(client, method)(path)
    detail = assert_problem(response, 405, "method_not_allowed")["detail"]
    listed = response.headers["Allow"]
    assert allowed <= set(listed.split(", "))
    assert detail == f"The method is not allowed for this URL; allowed: {listed}."


def test_oversized_body_is_413(client):
    body = '{"email": "a@example.com", "name": "' + "x" * (65 * 1024) + '"}'
    assert_problem(client.post("/signup", data=body, content_type="application/json"), 413, "payload_too_large")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_non_json_body_is_415(client, content_type):
    assert_problem(client.post("/login", data="email=a", content_type=content_type), 415, "unsupported_media_type")


@pytest.mark.parametrize("body", ["{not json", '{"email": "a@example.com",}', "\xff\xfe"])
def test_malformed_json_is_400(client, body):
    assert_problem(client.post("/login", data=body, content_type="application/json"), 400, "invalid_json")


@pytest.mark.parametrize("body", ["[]", '"text"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_400(client, body):
    response = client.post("/signup", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_unexpected_error_is_bare_problem_500(database_url):
    app = make_test_app(database_url)

    @app.route("/boom")
    def boom():
        raise RuntimeError("SELECT password_hash FROM users -- secret internals")

    response = app.test_client().get("/boom")
    body = assert_problem(response, 500, "internal_error")
    text = response.get_data(as_text=True)
    assert "SELECT" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_database_down_is_503_and_never_valid():
    app = make_test_app("postgresql://postgres@127.0.0.1:1/nothing")
    client = app.test_client()
    # A well-formed token signed with this app's key: only the database can say it is revoked.
    with app.app_context():
        from flask_jwt_extended import create_access_token

        token = create_access_token(
            identity="9b6f1c1e-0000-4000-8000-000000000000",
            additional_claims={"sid": "9b6f1c1e-0000-4000-8000-000000000001", "roles": ["user"]},
        )
    for response in (
        client.post("/checkToken", json={"token": token}),
        client.get("/validate", headers=bearer(token)),
        client.get("/me", headers=bearer(token)),
        client.post("/login", json={"email": "a@example.com", "password": PASSWORD}),
        client.get("/ready"),
    ):
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.mimetype == "application/problem+json"
        assert response.headers["Retry-After"]
        assert "psycopg2" not in response.get_data(as_text=True)
    assert client.get("/health").status_code == 200


def test_security_headers_on_every_response(client):
    for response in (client.get("/health"), client.get("/nope"), client.post("/login", json={})):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Request-ID"]


def test_request_id_is_echoed(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"


def test_user_responses_are_not_cached(client, user):
    assert client.get("/me", headers=bearer(user["access_token"])).headers["Cache-Control"] == "no-store"


def test_cors_only_for_listed_origins(make_app):
    app = make_app(CORS_ORIGINS="https://app.example.com, https://admin.example.com")
    client = app.test_client()
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Authorization"}
    allowed = client.options("/login", headers={"Origin": "https://app.example.com", **preflight})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    # Credentials (the cookie mode of browser apps) only with the echoed, listed origin, never "*".
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    other = client.options("/login", headers={"Origin": "https://evil.example.com", **preflight})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Credentials" not in other.headers


def test_cors_off_by_default(client):
    response = client.get("/health", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_url_prefix_mounts_everything(make_app):
    app = make_app(URL_PREFIX="/auth/")
    client = app.test_client()
    signup = client.post("/auth/signup", json={"email": "p@example.com", "password": PASSWORD, "name": "P"})
    assert signup.status_code == 201
    assert client.post("/auth/checkToken", json={"token": signup.get_json()["access_token"]}).get_json()["valid"]
    assert client.get("/auth/openapi.json").status_code == 200
    assert client.get("/auth/docs").status_code == 200
    assert client.get("/auth/.well-known/jwks.json").status_code == 200
    assert_problem(client.post("/signup", json={}), 404, "not_found")
    assert "/signup" in client.get("/auth/openapi.json").get_json()["paths"]  # relative to servers: /auth


def test_openapi_documents_every_endpoint(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for method, path in ENDPOINTS:
        assert method in spec["paths"][path], f"{method.upper()} {path} undocumented"
    schemas = spec["components"]["schemas"]
    for name in ("SignupResponse", "LoginResponse", "LogoutResponse", "TokenResponse", "User", "Problem"):
        assert name in schemas
    assert "password_hash" not in str(schemas["User"])
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "400" in spec["paths"]["/signup"]["post"]["responses"]


def test_docs_page_is_served(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert "openapi.json" in response.get_data(as_text=True)


def test_health_ready_and_jwks(client):
    assert client.get("/health").get_json() == {"success": True, "status": "ok"}
    assert client.get("/ready").get_json() == {"success": True, "status": "ready"}
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.get_json() == {"keys": []}


def test_ready_is_503_when_schema_is_not_migrated(tmp_path):
    app = make_test_app(f"sqlite:///{tmp_path}/empty.db")
    response = app.test_client().get("/ready")
    assert_problem(response, 503, "not_ready")
    assert response.headers["Retry-After"]


def test_ready_is_503_once_the_drain_file_exists(tmp_path):
    drain = tmp_path / "draining"
    client = make_test_app(f"sqlite:///{tmp_path}/ok.db", DRAIN_FILE=drain).test_client()
    with client.application.app_context():
        from flask_migrate import upgrade

        upgrade(directory=client.application.config["MIGRATIONS_DIR"])
    assert client.get("/ready").status_code == 200
    drain.touch()  # what the preStop hook does (deploy/k8s/deployment.yaml)
    response = client.get("/ready")
    assert_problem(response, 503, "not_ready")
    assert response.get_json()["detail"] == "This instance is stopping."
    assert client.get("/health").status_code == 200  # liveness is not readiness: no restart


def test_tokens_are_never_read_from_urls(client, user):
    token = user["access_token"]
    # RFC 6750 2.3 / RFC 8725: URLs end up in logs and Referer headers; no query parameter is a credential.
    me = client.get("/me", query_string={"access_token": token})
    assert me.status_code == 401 and me.get_json()["code"] == "missing_token"
    validate = client.get("/validate", query_string={"access_token": token})
    assert validate.status_code == 401
    check = client.post("/checkToken", query_string={"token": token})
    assert_problem(check, 400, "missing_token")


def test_security_headers_are_complete(client, user):
    response = client.get("/me", headers=bearer(user["access_token"]))
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    # The Server header is gunicorn's, absent from the test client: tests/e2e/test_server.py checks it.
    # HSTS only where it means something: over HTTPS.
    assert "Strict-Transport-Security" not in response.headers
    secure = client.get("/health", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.parametrize(
    ("path", "raw_body", "field"),
    [
        ("/login", '{"username": "a\\u0000b", "password": "whatever it is"}', "username"),
        ("/signup", '{"email": "s@example.com", "password": "long enough pw", "name": "\\ud800"}', "name"),
        ("/login", '{"email": "s@example.com", "password": "pass\\udfffword"}', "password"),
        ("/checkToken", '{"token": "a.b.c\\u0000"}', "token"),
    ],
)
def test_text_no_database_can_store_is_400(client, path, raw_body, field):
    problem = assert_problem(client.post(path, data=raw_body, content_type="application/json"), 400, "validation_error")
    assert field in problem["errors"]


def test_nul_in_query_is_400(client, admin):
    response = client.get("/users", query_string={"q": "a\x00b"}, headers=bearer(admin["access_token"]))
    assert "q" in assert_problem(response, 400, "validation_error")["errors"]


@pytest.mark.parametrize("path", ["/me", "/login", "/health", "/checkToken"])
def test_an_options_answer_has_no_body_and_claims_no_html(client, path):
    response = client.options(path)
    assert response.status_code == 200 and response.get_data() == b""
    assert "Content-Type" not in response.headers and "OPTIONS" in response.headers["Allow"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_request_refused_by_an_early_hook_is_timed_from_its_start(make_app, capfd):
    # The failure budget's hook refuses before any other runs: it used to be logged with -0.0 ms.
    app = make_app(LOG_FORMAT="json", RATELIMIT_ENABLED="true", RATELIMIT_LOGIN_FAILURES="1/minute",
                   RATELIMIT_KEY_PREFIX=f"t{uuid.uuid4().hex[:8]}")  # fmt: skip
    client = app.test_client()
    wrong = {"email": "nobody@example.com", "password": PASSWORD}
    assert [client.post("/login", json=wrong).status_code for _ in range(2)] == [401, 429]
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("path") == "/login"]
    assert [line["status"] for line in logged] == [401, 429]
    assert all(line["duration_ms"] > 0 for line in logged)

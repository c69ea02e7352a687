"""POST /oauth/token, POST /introspect and the metadata documents, by hand-built requests (app/api/oauth.py).

Authlib as the caller, against a real server: tests/e2e/test_oauth.py.
"""

from __future__ import annotations

import base64
import time
import uuid
from urllib.parse import quote

import jwt
import pytest

from app.extensions import db
from app.models import AuditEvent
from app.services import clients
from tests.helpers import PASSWORD, assert_problem, bearer, check_token
from tests.servers import SHARED_REDIS_URL, redis_client  # noqa: F401  (fixture)

FORM = "application/x-www-form-urlencoded"


def basic(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 2.3.1: each half form-urlencoded, then Basic."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


@pytest.fixture
def service(app):
    """A registered client: (client_id, secret, Basic header)."""
    with app.app_context():
        client, secret = clients.create(name=f"svc-{uuid.uuid4().hex[:8]}")
        client_id, name = str(client.id), client.name
    return {"id": client_id, "secret": secret, "name": name, "headers": basic(client_id, secret)}


def fetch(client, service, **form) -> dict:
    """A client token (asserting 200)."""
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials", **form}, headers=service["headers"]
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def introspect(client, service, token: str, **form):
    """POST /introspect as `service`."""
    return client.post("/introspect", data={"token": token, **form}, headers=service["headers"])


def assert_oauth_error(response, status: int, error: str) -> dict:
    """An RFC 6749 5.2 body (never problem+json) with this status and error."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "error_description"} and body["error"] == error, body
    return body


# --- /oauth/token ---------------------------------------------------------------------------


def test_client_credentials_issue_a_service_token(client, service, app):
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=service["headers"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == f"client:{service['id']}" and claims["client_id"] == service["id"]
    assert claims["roles"] == ["service"] and claims["type"] == "access" and "sid" not in claims
    assert claims["iss"] == app.config["JWT_ISSUER"]


def test_check_token_says_a_client_token_is_valid_without_an_email(client, service):
    token = fetch(client, service)["access_token"]
    answer = check_token(client, token)
    assert answer["valid"] is True and answer["client_id"] == service["id"] and answer["roles"] == ["service"]
    assert "email" not in answer and "user_id" not in answer and "sid" not in answer


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/me"), ("get", "/users"), ("get", "/me/sessions"), ("post", "/logout"), ("get", "/validate")],
)
def test_a_client_token_opens_no_user_endpoint(client, service, method, path):
    token = fetch(client, service)["access_token"]
    response = getattr(client, method)(path, headers=bearer(token))
    assert_problem(response, 401, "invalid_token")


def test_every_issued_token_and_every_failure_is_audited(client, service, app):
    fetch(client, service)
    client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(service["id"], "wrong"))
    with app.app_context():
        events = [(e.event, str(e.target_id)) for e in db.session.query(AuditEvent).order_by(AuditEvent.id)]
        details = [e.details for e in db.session.query(AuditEvent).order_by(AuditEvent.id)]
    assert events == [
        ("client_created", service["id"]),
        ("client_token_issued", service["id"]),
        ("client_auth_failed", service["id"]),
    ]
    assert service["secret"] not in str(details) and "wrong" not in str(details)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer x"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ],
)
def test_token_without_readable_basic_credentials_is_invalid_client(client, headers):
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=headers)
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("who", ["wrong secret", "unknown client", "not a uuid"])
def test_token_with_wrong_credentials_is_invalid_client_alike(client, service, who):
    headers = {
        "wrong secret": basic(service["id"], service["secret"] + "x"),
        "unknown client": basic(str(uuid.uuid4()), service["secret"]),
        "not a uuid": basic("orders", service["secret"]),
    }[who]
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=headers)
    body = assert_oauth_error(response, 401, "invalid_client")
    assert body["error_description"] == "Client authentication failed."


def test_secret_in_the_body_is_refused(client, service):
    form = {"grant_type": "client_credentials", "client_id": service["id"], "client_secret": service["secret"]}
    assert_oauth_error(client.post("/oauth/token", data=form), 401, "invalid_client")
    assert_oauth_error(client.post("/oauth/token", data=form, headers=service["headers"]), 401, "invalid_client")


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
        ({}, 400, "invalid_request"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"grant_type": ["client_credentials", "client_credentials"]}, 400, "invalid_request"),
        ({"grant_type": "client_credentials\x00"}, 400, "invalid_request"),
    ],
)
def test_token_request_errors(client, service, body, status, error):
    response = client.post("/oauth/token", data=body, headers=service["headers"])
    assert_oauth_error(response, status, error)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"grant_type": "client_credentials"}', "application/json"),
        ("grant_type=client_credentials", "text/plain"),
        ("", None),
    ],
)
def test_token_requires_a_form_body(client, service, data, content_type):
    response = client.post("/oauth/token", data=data, content_type=content_type, headers=service["headers"])
    body = assert_oauth_error(response, 400, "invalid_request")
    assert FORM in body["error_description"]


def test_a_scope_is_ignored(client, service):
    token = fetch(client, service, scope="read write")["access_token"]
    assert check_token(client, token)["valid"] is True


def test_other_methods_are_problem_documents(client):
    assert_problem(client.get("/oauth/token"), 405, "method_not_allowed")


# --- rotation and deletion ------------------------------------------------------------------


def test_rotation_voids_the_old_secret_and_its_tokens(client, service, app):
    token = fetch(client, service)["access_token"]
    with app.app_context():
        _, new_secret = clients.rotate(name=service["name"])
    assert check_token(client, token) == {"success": True, "valid": False, "reason": "revoked"}
    assert introspect(client, {"headers": basic(service["id"], new_secret)}, token).get_json() == {"active": False}
    old = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=service["headers"])
    assert_oauth_error(old, 401, "invalid_client")
    fresh = fetch(client, {"headers": basic(service["id"], new_secret)})["access_token"]
    assert check_token(client, fresh)["valid"] is True


def test_deletion_voids_the_clients_tokens(client, service, app):
    token = fetch(client, service)["access_token"]
    assert check_token(client, token)["valid"] is True
    with app.app_context():
        clients.delete(name=service["name"])
    assert check_token(client, token) == {"success": True, "valid": False, "reason": "revoked"}
    assert_oauth_error(introspect(client, service, token), 401, "invalid_client")


def test_a_forged_client_token_is_invalid(client, service, app):
    claims = jwt.decode(fetch(client, service)["access_token"], options={"verify_signature": False})
    secret = app.config["JWT_SECRET_KEY"]
    for change in ({"cv": "1"}, {"client_id": str(uuid.uuid4())}, {"client_id": None}, {"sub": "client:x"}):
        forged = jwt.encode({**claims, **change}, secret, algorithm="HS256")
        assert check_token(client, forged)["valid"] is False, change
    other_version = jwt.encode({**claims, "cv": 2}, secret, algorithm="HS256")
    assert check_token(client, other_version)["reason"] == "revoked"
    signed_elsewhere = jwt.encode(claims, "another secret of at least thirty-two bytes", algorithm="HS256")
    assert check_token(client, signed_elsewhere)["reason"] == "invalid"


# --- /introspect ----------------------------------------------------------------------------


def test_introspection_of_a_user_token(client, service, user, app):
    response = introspect(client, service, user["access_token"], token_type_hint="access_token")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    assert body == {
        "active": True,
        "sub": user["user_id"],
        "email": user["user"]["email"],
        "roles": ["user"],
        "token_type": "access_token",
        "exp": claims["exp"],
        "iat": claims["iat"],
        "nbf": claims["nbf"],
        "jti": claims["jti"],
        "iss": app.config["JWT_ISSUER"],
        "sid": claims["sid"],
        "amr": ["pwd"],
    }


def test_introspection_names_the_username_when_there_is_one(client, service, auth):
    created = auth.signup(username="ada_l")
    assert introspect(client, service, created["access_token"]).get_json()["username"] == "ada_l"


def test_introspection_of_a_client_token(client, service):
    token = fetch(client, service)["access_token"]
    body = introspect(client, service, token).get_json()
    assert body["active"] is True and body["client_id"] == service["id"] and body["sub"] == f"client:{service['id']}"
    assert body["roles"] == ["service"] and body["username"] == service["name"] and body["token_type"] == "access_token"
    assert "email" not in body and "sid" not in body


@pytest.mark.parametrize("kind", ["garbage", "refresh", "revoked", "expired", "deleted user", "empty-ish"])
def test_inactive_tokens_are_exactly_active_false(client, service, user, make_app, kind):
    if kind == "garbage":
        token = "not.a.token"
    elif kind == "empty-ish":
        token = " "
    elif kind == "refresh":
        token = user["refresh_token"]
    elif kind == "revoked":
        assert client.post("/logout", headers=bearer(user["access_token"])).status_code == 200
        token = user["access_token"]
    elif kind == "deleted user":
        assert (
            client.delete("/me", json={"password": PASSWORD}, headers=bearer(user["access_token"])).status_code == 200
        )
        token = user["access_token"]
    else:
        short = make_app(JWT_ACCESS_TOKEN_EXPIRES="1", JWT_LEEWAY="0").test_client()
        token = short.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}).get_json()[
            "access_token"
        ]
        time.sleep(2.1)
    for hint in (None, "access_token", "refresh_token", "something_else"):
        form = {"token_type_hint": hint} if hint else {}
        response = introspect(client, service, token, **form)
        assert response.status_code == 200
        assert response.get_data() == b'{"active":false}', (kind, hint)


def test_introspection_needs_client_authentication(client, service, user):
    for headers in ({}, bearer(user["access_token"]), basic(service["id"], "wrong")):
        response = client.post("/introspect", data={"token": user["access_token"]}, headers=headers)
        assert_oauth_error(response, 401, "invalid_client")
        assert response.headers["WWW-Authenticate"] == 'Basic realm="auth"'


@pytest.mark.parametrize(
    ("data", "content_type", "error"),
    [
        ('{"token": "x"}', "application/json", "invalid_request"),
        ("token=", FORM, "invalid_request"),
        ("token_type_hint=access_token", FORM, "invalid_request"),
        ("token=a&token=b", FORM, "invalid_request"),
        ("token=a&token_type_hint=x&token_type_hint=y", FORM, "invalid_request"),
        ("token=" + "a" * 8193, FORM, "invalid_request"),
        ("token=a%00b", FORM, "invalid_request"),
    ],
)
def test_introspection_request_errors(client, service, data, content_type, error):
    response = client.post("/introspect", data=data, content_type=content_type, headers=service["headers"])
    assert_oauth_error(response, 400, error)


def test_introspection_without_the_hot_path_answers_the_same(client, service, user, make_app):
    slow = make_app(HOT_PATH="false", JWT_SECRET_KEY=client.application.config["JWT_SECRET_KEY"]).test_client()
    cases = [
        ({"token": user["access_token"]}, service["headers"]),
        ({"token": "garbage"}, service["headers"]),
        ({"token": user["access_token"]}, {}),
        ({"token": user["access_token"]}, basic(service["id"], "wrong")),
    ]
    for form, headers in cases:
        fast, plain = (c.post("/introspect", data=form, headers=headers) for c in (client, slow))
        assert (fast.status_code, fast.get_json()) == (plain.status_code, plain.get_json())
        skip = {"X-Request-ID", "Date", "Content-Length"}
        assert {k: v for k, v in fast.headers if k not in skip} == {k: v for k, v in plain.headers if k not in skip}


def test_a_database_outage_is_temporarily_unavailable_never_active(make_app, service):
    down = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")
    for response in (
        down.test_client().post("/introspect", data={"token": "x"}, headers=service["headers"]),
        down.test_client().post("/oauth/token", data={"grant_type": "client_credentials"}, headers=service["headers"]),
    ):
        assert_oauth_error(response, 503, "temporarily_unavailable")
        assert response.headers["Retry-After"] == "5"


# --- rate limits ----------------------------------------------------------------------------


def test_token_failures_spend_the_login_failure_budget(make_app, service):
    import uuid as _uuid

    app = make_app(RATELIMIT_ENABLED="true", RATELIMIT_KEY_PREFIX=f"t{_uuid.uuid4().hex[:8]}",
                   RATELIMIT_LOGIN_FAILURES="3/minute")  # fmt: skip
    client = app.test_client()
    wrong = basic(service["id"], "wrong")
    ip = {"REMOTE_ADDR": "10.7.7.7"}
    for _ in range(3):
        response = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=wrong,
                               environ_base=ip)  # fmt: skip
        assert_oauth_error(response, 401, "invalid_client")
    refused = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=service["headers"],
                          environ_base=ip)  # fmt: skip
    assert_oauth_error(refused, 429, "temporarily_unavailable")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The same budget as /login's: this address's password guesses are refused too.
    login = client.post("/login", json={"email": "x@example.com", "password": "wrong password!"}, environ_base=ip)
    assert_problem(login, 429, "rate_limited")
    other = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=service["headers"],
                        environ_base={"REMOTE_ADDR": "10.7.7.8"})  # fmt: skip
    assert other.status_code == 200


@pytest.fixture
def introspecting(make_app, redis_client_or_none):
    """Build an app with rate limits on, a key prefix of its own and the given storage ("redis" or "memory")."""
    prefix = f"t{uuid.uuid4().hex[:8]}"

    def build(storage: str, **overrides):
        redis_url = SHARED_REDIS_URL if storage == "redis" else ""
        if storage == "redis":
            assert redis_client_or_none is not None
        return make_app(RATELIMIT_ENABLED="true", RATELIMIT_KEY_PREFIX=prefix, REDIS_URL=redis_url, **overrides)

    yield build
    if redis_client_or_none is not None:
        for key in redis_client_or_none.scan_iter(f"*{prefix}*"):
            redis_client_or_none.delete(key)


@pytest.fixture
def redis_client_or_none(request):
    """The machine's Redis for the tests parametrized with "redis" (skipped, or failed under CI, without it)."""
    if "redis" not in request.node.name:
        return None
    return request.getfixturevalue("redis_client")


def ask(client, service, ip: str, secret: str | None = None):
    """POST /introspect from `ip` as `service`, with its secret or `secret`."""
    headers = basic(service["id"], secret) if secret is not None else service["headers"]
    return client.post("/introspect", data={"token": "x"}, headers=headers, environ_base={"REMOTE_ADDR": ip})


PATHS_AND_STORAGES = [("true", "redis"), ("false", "redis"), ("true", "memory")]
PATH_IDS = ["fast-path-redis", "flask-view-redis", "fast-path-memory"]


@pytest.mark.parametrize(("hot", "storage"), PATHS_AND_STORAGES, ids=PATH_IDS)
def test_introspection_failures_spend_the_login_failure_budget(introspecting, service, app, hot, storage):
    """Wrong client secrets at /introspect spend /login's budget; once it is spent, even the right one is a 429."""
    limited = introspecting(storage, HOT_PATH=hot, RATELIMIT_LOGIN_FAILURES="3/minute")
    client = limited.test_client()
    ip = {"REMOTE_ADDR": "10.7.7.9"}
    for _ in range(3):
        wrong = client.post("/introspect", data={"token": "x"}, headers=basic(service["id"], "wrong"), environ_base=ip)
        assert_oauth_error(wrong, 401, "invalid_client")
    # Refused before the secret is checked: a right guess now tells nothing.
    right = client.post("/introspect", data={"token": "x"}, headers=service["headers"], environ_base=ip)
    assert_oauth_error(right, 429, "temporarily_unavailable")
    assert 1 <= int(right.headers["Retry-After"]) <= 60
    again = client.post("/introspect", data={"token": "x"}, headers=basic(service["id"], "wrong"), environ_base=ip)
    assert_oauth_error(again, 429, "temporarily_unavailable")
    # The same budget as /login's and /oauth/token's.
    login = client.post("/login", json={"email": "x@example.com", "password": "wrong password!"}, environ_base=ip)
    assert_problem(login, 429, "rate_limited")
    token = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=service["headers"],
                        environ_base=ip)  # fmt: skip
    assert_oauth_error(token, 429, "temporarily_unavailable")
    other = client.post("/introspect", data={"token": "x"}, headers=service["headers"],
                        environ_base={"REMOTE_ADDR": "10.7.7.10"})  # fmt: skip
    assert other.status_code == 200 and other.get_json() == {"active": False}
    with app.app_context():
        failures = db.session.query(AuditEvent).filter_by(event="client_auth_failed").all()
    # Each failed check is audited; the refused ones were never checked.
    assert [(str(e.target_id), e.ip, e.details) for e in failures] == [
        (service["id"], "10.7.7.9", {"endpoint": "introspect"})
    ] * 3


@pytest.mark.parametrize(("hot", "storage"), PATHS_AND_STORAGES, ids=PATH_IDS)
def test_successful_introspections_never_spend_the_failure_budget(introspecting, service, hot, storage):
    client = introspecting(storage, HOT_PATH=hot, RATELIMIT_LOGIN_FAILURES="3/minute").test_client()
    for _ in range(25):
        assert ask(client, service, "10.7.7.11").status_code == 200
    statuses = [ask(client, service, "10.7.7.11", "wrong").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]  # the whole budget was still there


def test_a_successful_introspection_makes_no_redis_call_for_the_budget(introspecting, service, monkeypatch):
    """The hot path's cost: the failure budget is asked nothing while this worker knows no block (counted
    on the budget's own Redis connection: every command it sends)."""
    limited = introspecting("redis", RATELIMIT_LOGIN_FAILURES="3/minute")
    connection = limited.extensions["password_failure_budget"].storage.get_connection()
    commands: list[str] = []
    execute = connection.execute_command
    monkeypatch.setattr(connection, "execute_command",
                        lambda *args, **kwargs: commands.append(str(args[0])) or execute(*args, **kwargs))  # fmt: skip
    client = limited.test_client()
    for _ in range(50):
        assert ask(client, service, "10.7.7.12").status_code == 200
    assert commands == []
    assert ask(client, service, "10.7.7.12", "wrong").status_code == 401
    assert len(commands) == 1  # one increment, in the one Redis round trip of its script
    assert [ask(client, service, "10.7.7.12", "wrong").status_code for _ in range(2)] == [401, 401]
    assert len(commands) == 1 + 2 + 1  # the third failure used the budget up: its reset time, once
    refused = ask(client, service, "10.7.7.12")
    assert refused.status_code == 429 and len(commands) == 4  # this worker knows: refused without asking


def test_workers_share_the_introspection_budget_through_redis(introspecting, service):
    """Two apps on one Redis, as two workers: the count is shared; a worker learns of the block from its own
    first failure, so each evaluates at most one guess past the spent budget (docs/CONTRACT.md)."""
    first, second = (introspecting("redis", RATELIMIT_LOGIN_FAILURES="3/minute").test_client() for _ in range(2))
    ip = "10.7.7.13"
    assert [ask(first, service, ip, "wrong").status_code for _ in range(2)] == [401, 401]
    assert ask(second, service, ip, "wrong").status_code == 401  # the third of the shared three
    assert ask(first, service, ip).status_code == 200  # first has seen no block: a success is not counted
    assert ask(first, service, ip, "wrong").status_code == 429  # its one guess past the budget, answered 429
    assert ask(first, service, ip).status_code == 429  # and now it knows
    assert ask(second, service, ip).status_code == 429  # second took the last one: it knew already


def test_an_outage_spends_no_introspection_budget(make_app, service):
    down = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing", RATELIMIT_ENABLED="true",
                    RATELIMIT_KEY_PREFIX=f"t{uuid.uuid4().hex[:8]}", RATELIMIT_LOGIN_FAILURES="2/minute")  # fmt: skip
    client = down.test_client()
    for _ in range(3):
        response = client.post("/introspect", data={"token": "x"}, headers=basic(service["id"], "wrong"))
        assert_oauth_error(response, 503, "temporarily_unavailable")
    budget = down.extensions["password_failure_budget"]
    assert budget.blocked("127.0.0.1") is None
    assert [budget.strategy.get_window_stats(item, budget.name, "127.0.0.1").remaining for item in budget.items] == [2]


def test_introspection_shares_the_check_token_limit(make_app, service):
    app = make_app(RATELIMIT_ENABLED="true", RATELIMIT_KEY_PREFIX=f"t{uuid.uuid4().hex[:8]}",
                   RATELIMIT_CHECKTOKEN="2/minute")  # fmt: skip
    client = app.test_client()
    assert client.post("/checkToken", json={"token": "x"}).status_code == 200
    assert client.post("/introspect", data={"token": "x"}, headers=service["headers"]).status_code == 200
    refused = client.post("/introspect", data={"token": "x"}, headers=service["headers"])
    assert_oauth_error(refused, 429, "temporarily_unavailable")
    assert int(refused.headers["Retry-After"]) >= 1


# --- metadata -------------------------------------------------------------------------------

METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_from_the_request(client, app, path):
    response = client.get(path, base_url="https://auth.example.com")
    # Built from this request's Host: no shared cache may keep it for another (a forged Host).
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {
        "issuer": app.config["JWT_ISSUER"],
        "jwks_uri": "https://auth.example.com/.well-known/jwks.json",
        "token_endpoint": "https://auth.example.com/oauth/token",
        "introspection_endpoint": "https://auth.example.com/introspect",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
    }


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_public_url_builds_the_urls_and_is_the_issuer(make_app, path):
    app = make_app(URL_PREFIX="/auth", PUBLIC_URL="https://api.example.com/auth/")
    client = app.test_client()
    response = client.get(f"/auth{path}", base_url="http://10.0.0.5:8000", headers={"Host": "evil.example"})
    body = response.get_json()
    assert body["issuer"] == "https://api.example.com/auth"
    assert response.headers["Cache-Control"] == "public, max-age=300"  # the same for every Host: cacheable
    assert "evil.example" not in response.get_data(as_text=True)
    assert body["token_endpoint"] == "https://api.example.com/auth/oauth/token"
    assert body["introspection_endpoint"] == "https://api.example.com/auth/introspect"
    assert body["jwks_uri"] == "https://api.example.com/auth/.well-known/jwks.json"
    # The issuer is the tokens' iss: a token of this app names it.
    signed = client.post(
        "/auth/signup", json={"email": "iss@example.com", "password": PASSWORD, "name": "I"}
    ).get_json()
    assert jwt.decode(signed["access_token"], options={"verify_signature": False})["iss"] == body["issuer"]


def test_an_explicit_jwt_issuer_wins_over_public_url(make_app):
    app = make_app(PUBLIC_URL="https://api.example.com", JWT_ISSUER="urn:example:auth")
    assert app.test_client().get(METADATA_PATHS[0]).get_json()["issuer"] == "urn:example:auth"


def test_metadata_under_url_prefix_and_behind_a_trusted_proxy(make_app):
    app = make_app(URL_PREFIX="/auth", TRUSTED_PROXIES="10.0.0.0/8")
    client = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com", "X-Forwarded-For": "1.2.3.4"}
    behind = client.get(f"/auth{METADATA_PATHS[0]}", headers=forwarded, environ_base={"REMOTE_ADDR": "10.1.1.1"})
    assert behind.get_json()["token_endpoint"] == "https://api.example.com/auth/oauth/token"
    # From anyone else the headers are ignored: the URLs are the request's own.
    spoofed = client.get(f"/auth{METADATA_PATHS[1]}", headers=forwarded, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert spoofed.get_json()["token_endpoint"] == "http://localhost/auth/oauth/token"
    assert client.get(METADATA_PATHS[0]).status_code == 404  # only under the prefix


@pytest.mark.parametrize("url", ["ftp://x.example.com", "https://x.example.com/?a=1", "not a url", "https://x#y"])
def test_a_bad_public_url_stops_start_up(url):
    import config

    with pytest.raises(config.ConfigError, match="PUBLIC_URL"):
        config.TestingConfig({"PUBLIC_URL": url})


def test_introspection_is_answered_before_flask(make_app, service, user):
    app = make_app(JWT_SECRET_KEY="x")  # HOT_PATH is on by default
    hot, seen = app.wsgi_app, []
    inner = hot.inner

    def flask(environ, start_response):
        seen.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    hot.inner = flask
    client = app.test_client()
    for form in ({"token": "garbage"}, {"token": "x", "token_type_hint": "access_token"}):
        assert client.post("/introspect", data=form, headers=service["headers"]).status_code == 200
    assert client.post("/introspect", data={"token": "x"}).status_code == 401
    assert "/introspect" not in seen
    # What is not a plain form goes to the view, which answers through the same builder.
    assert_oauth_error(
        client.post("/introspect", json={"token": "x"}, headers=service["headers"]), 400, "invalid_request"
    )
    assert client.post("/introspect?x=1", data={"token": "x"}, headers=service["headers"]).status_code == 200
    assert seen.count("/introspect") == 2


def test_a_failed_introspection_is_audited_with_its_own_origin(client, service, app):
    # A Flask request first, from another address: the fast path must not reuse its origin.
    client.get("/health", environ_base={"REMOTE_ADDR": "10.1.1.1"}, headers={"User-Agent": "first"})
    response = client.post("/introspect", data={"token": "x"}, headers={**basic(service["id"], "wrong"),
                           "User-Agent": "prober"}, environ_base={"REMOTE_ADDR": "10.2.2.2"})  # fmt: skip
    assert_oauth_error(response, 401, "invalid_client")
    with app.app_context():
        event = db.session.query(AuditEvent).filter_by(event="client_auth_failed").one()
    assert (str(event.target_id), event.ip, event.user_agent) == (service["id"], "10.2.2.2", "prober")
    assert event.details == {"endpoint": "introspect"}


def test_public_url_is_no_name_for_authenticator_apps():
    import config

    settings = config.TestingConfig({"PUBLIC_URL": "https://api.example.com/auth"})
    assert settings.JWT_ISSUER == "https://api.example.com/auth" and settings.MFA_ISSUER == "auth-service"
    named = config.TestingConfig({"PUBLIC_URL": "https://api.example.com/auth", "JWT_ISSUER": "Example"})
    assert named.JWT_ISSUER == "Example" and named.MFA_ISSUER == "Example"

"""The hot path answers /checkToken and /validate exactly as the Flask views do, and hands over the rest."""

from __future__ import annotations

import time
import urllib.parse
import uuid

import jwt
import pytest

from app.api.base import MAX_JSON_DEPTH
from tests.conftest import PASSWORD, bearer
from tests.helpers import assert_problem

IGNORED_HEADERS = {"Content-Length", "X-Request-ID", "Vary"}


@pytest.fixture
def pair(make_app):
    """The same service twice on one database: hot path on, and off."""
    secret = f"shared-{uuid.uuid4().hex}-{uuid.uuid4().hex}"
    fast = make_app(JWT_SECRET_KEY=secret, HOT_PATH="true")
    slow = make_app(JWT_SECRET_KEY=secret, HOT_PATH="false")
    calls = {"check": 0, "validate": 0}
    for endpoint, key in (("auth.check_token", "check"), ("auth.validate", "validate")):
        view = fast.view_functions[endpoint]

        def counting(*args, _view=view, _key=key, **kwargs):
            calls[_key] += 1
            return _view(*args, **kwargs)

        fast.view_functions[endpoint] = counting
    hot = fast.wsgi_app
    for method, key in (("_check_token", "hot_check"), ("_validate", "hot_validate")):
        original = getattr(hot, method)

        def answering(environ, _original=original, _key=key):
            answer = _original(environ)
            calls[_key] += answer is not None
            return answer

        setattr(hot, method, answering)
    calls.update(hot_check=0, hot_validate=0)
    return fast, slow, calls


def same_answer(fast_response, slow_response) -> None:
    """Status, body and headers alike (but the per-request ones)."""
    assert fast_response.status_code == slow_response.status_code
    assert fast_response.get_json() == slow_response.get_json()
    fast_headers = {k: v for k, v in fast_response.headers.items() if k not in IGNORED_HEADERS}
    slow_headers = {k: v for k, v in slow_response.headers.items() if k not in IGNORED_HEADERS}
    assert fast_headers == slow_headers


def tokens_for(app) -> dict:
    """A user's signup body."""
    email = f"h{uuid.uuid4().hex[:8]}@example.com"
    return app.test_client().post("/signup", json={"email": email, "password": PASSWORD, "name": "H"}).get_json()


def forged(app, token, **changes) -> str:
    """The token's claims with changes, signed with the app's secret."""
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    return jwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS256")


def test_check_token_answers_match_and_skip_flask(pair):
    fast, slow, calls = pair
    body = tokens_for(fast)
    now = int(time.time())
    cases = {
        "valid": body["access_token"],
        "refresh": body["refresh_token"],
        "garbage": "a.b.c",
        "expired": forged(fast, body["access_token"], exp=now - 3600),
        "unknown-user": forged(fast, body["access_token"], sub=str(uuid.uuid4())),
    }
    for name, token in cases.items():
        for base_url in ("http://localhost", "https://localhost"):
            kwargs = {"json": {"token": token}, "base_url": base_url, "headers": {"X-Request-ID": f"r-{name}"}}
            fast_response = fast.test_client().post("/checkToken", **kwargs)
            same_answer(fast_response, slow.test_client().post("/checkToken", **kwargs))
            assert fast_response.headers["X-Request-ID"] == f"r-{name}"
    # Bearer instead of a body.
    same_answer(
        fast.test_client().post("/checkToken", headers=bearer(body["access_token"])),
        slow.test_client().post("/checkToken", headers=bearer(body["access_token"])),
    )
    assert calls["check"] == 0 and calls["hot_check"] == 2 * len(cases) + 1


def test_validate_answers_match_and_skip_flask(pair):
    fast, slow, calls = pair
    body = tokens_for(fast)
    same_answer(
        fast.test_client().get("/validate", headers=bearer(body["access_token"])),
        slow.test_client().get("/validate", headers=bearer(body["access_token"])),
    )
    assert calls["validate"] == 0 and calls["hot_validate"] == 1


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"json": {}},
        {"json": {"token": "x", "extra": 1}},
        {"json": ["token"]},
        {"data": "{broken", "content_type": "application/json"},
        {"data": "token=x", "content_type": "text/plain"},
        {"json": {"token": ""}},
        {"json": {"token": 5}},
        {"data": '{"token": "a\\u0000"}', "content_type": "application/json"},
        {"json": {"token": "x" * 9000}},
        {"json": {"token": "a.b.c"}, "query_string": {"token": "a.b.c"}},
        {"json": {"token": "a.b.c"}, "headers": {"Origin": "https://app.example.com"}},
    ],
    ids=[
        "empty",
        "unknown-field",
        "not-object",
        "broken-json",
        "not-json",
        "empty-token",
        "number",
        "nul",
        "too-long",
        "query",
        "cors",
    ],
)
def test_unusual_requests_are_handed_to_flask_with_the_same_answer(pair, request_kwargs):
    fast, slow, calls = pair
    same_answer(
        fast.test_client().post("/checkToken", **request_kwargs),
        slow.test_client().post("/checkToken", **request_kwargs),
    )
    assert calls["hot_check"] == 0


@pytest.mark.parametrize("header", [None, "Bearer a.b.c", "Basic eA=="])
def test_validate_failures_are_answered_by_flask(pair, header):
    fast, slow, calls = pair
    headers = {"Authorization": header} if header else {}
    same_answer(
        fast.test_client().get("/validate", headers=headers), slow.test_client().get("/validate", headers=headers)
    )
    assert calls["validate"] == 1


def test_hot_path_counts_metrics_and_honours_the_rate_limit(make_app):
    app = make_app(RATELIMIT_ENABLED="true", RATELIMIT_CHECKTOKEN="3/minute", RATELIMIT_KEY_PREFIX=uuid.uuid4().hex)
    client = app.test_client()
    token = tokens_for(app)["access_token"]
    answers = [client.post("/checkToken", json={"token": token}) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert answers[3].get_json()["code"] == "rate_limited"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'auth_http_requests_total{endpoint="/checkToken",method="POST",status="200"}' in metrics


def test_database_outage_is_answered_by_flask_as_503(make_app):
    app = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")
    with app.app_context():
        from flask_jwt_extended import create_access_token

        token = create_access_token(identity=str(uuid.uuid4()), additional_claims={"sid": str(uuid.uuid4())})
    response = app.test_client().post("/checkToken", json={"token": token})
    assert response.status_code == 503 and response.headers["Retry-After"]


def nested(depth: int, kind: str) -> str:
    """A JSON object whose one field holds arrays or objects nested `depth` levels deep."""
    inner = "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth
    return '{"token": ' + inner + "}"


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("path", ["/signup", "/login", "/refresh", "/checkToken"])
def test_deeply_nested_json_is_400_invalid_json_on_both_paths(make_app, path, kind, depth):
    # Issue 9.7: a RecursionError in the parser or a recursive walk was a 500.
    limits = {"MAX_CONTENT_LENGTH": 1024 * 1024}
    body = nested(depth, kind)
    for hot in ("true", "false"):
        app = make_app(HOT_PATH=hot, **limits)
        response = app.test_client().post(path, data=body, content_type="application/json")
        assert_problem(response, 400, "invalid_json")
        # The top level itself nested too deep, and a body that is nothing but nesting.
        top = ("[" * depth + "]" * depth) if kind == "array" else nested(depth, kind)[len('{"token": ') : -1]
        assert_problem(app.test_client().post(path, data=top, content_type="application/json"), 400, "invalid_json")


def test_json_nested_up_to_the_limit_is_judged_by_the_schema(client):
    at_limit = nested(MAX_JSON_DEPTH - 1, "array")  # the outer object is one level
    assert_problem(client.post("/checkToken", data=at_limit, content_type="application/json"), 400, "validation_error")
    over = nested(MAX_JSON_DEPTH, "array")
    assert_problem(client.post("/checkToken", data=over, content_type="application/json"), 400, "invalid_json")
    # Brackets inside strings are text, not nesting.
    text = '{"token": "' + "[{" * 100 + '\\"' + "[" * 100 + '"}'
    assert client.post("/checkToken", data=text, content_type="application/json").get_json()["valid"] is False


INTERNATIONAL_EMAILS = [
    "ışık@example.com",  # dotless i: outside latin-1
    "пользователь@пример.рф",  # Cyrillic, local part and domain
    "ｆｕｌｌ@ｅｘａｍｐｌｅ.com",  # fullwidth
    "ü@bücher.de",  # inside latin-1, still not ASCII
    "a%41+tag@example.com",  # ASCII with a percent sign: sent as %25, so decoding is unambiguous
]


@pytest.mark.parametrize("email", INTERNATIONAL_EMAILS)
def test_validate_sends_internationalized_emails_percent_encoded_on_both_paths(pair, email):
    # Issue 9.5: a non-latin-1 email in X-User-Email was a 500 (WSGI headers are latin-1).
    fast, slow, calls = pair
    body = tokens_for(fast)
    client = fast.test_client()
    changed = client.patch("/me", json={"email": email}, headers=bearer(body["access_token"]))
    assert changed.status_code == 200, changed.get_json()
    stored = changed.get_json()["user"]["email"]
    fast_response = client.get("/validate", headers=bearer(body["access_token"]))
    slow_response = slow.test_client().get("/validate", headers=bearer(body["access_token"]))
    assert fast_response.status_code == 200, fast_response.get_data(as_text=True)
    same_answer(fast_response, slow_response)
    assert calls["hot_validate"] == 1
    header = fast_response.headers["X-User-Email"]
    assert header.isascii() and header.isprintable()
    assert urllib.parse.unquote(header, errors="strict") == stored
    assert header == urllib.parse.quote(stored.encode(), safe="@.+-_~")


def test_ascii_emails_are_sent_unchanged(pair):
    fast, _slow, _calls = pair
    body = tokens_for(fast)
    response = fast.test_client().get("/validate", headers=bearer(body["access_token"]))
    assert response.headers["X-User-Email"] == body["user"]["email"]


def test_nesting_check_stays_linear_on_pathological_strings(client):
    # A body of escaped quotes made a string pattern that can fail retry at every quote: 80 s of CPU.
    body = '{"token": ' + "[" * 40 + '"' + '\\"' * 30_000  # never closed, and brackets enough to be scanned
    started = time.monotonic()
    assert_problem(client.post("/checkToken", data=body, content_type="application/json"), 400, "invalid_json")
    assert time.monotonic() - started < 2

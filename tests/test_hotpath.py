"""The hot path answers /checkToken, /validate and GET /me exactly as the Flask views do, and hands over the rest."""

from __future__ import annotations

import time
import urllib.parse
import uuid

import jwt
import pytest
from prometheus_client import REGISTRY

from app.api.checks import MAX_JSON_DEPTH
from app.services import verification
from tests.helpers import PASSWORD, assert_problem, bearer

SHIPPED = {"URL_PREFIX": "/auth", "CORS_ORIGINS": "https://app.example.com"}  # deploy/k8s/configmap.yaml, plus a prefix
CONFIGURATIONS = {
    "defaults": {},
    "shipped": SHIPPED,
    "two-origins": {**SHIPPED, "CORS_ORIGINS": "https://app.example.com,https://admin.example.com"},
}


class Pair:
    """The same service twice on one database, hot path on and off, counting who answered what."""

    def __init__(self, make_app, monkeypatch, settings: dict) -> None:
        """Build both apps; count Flask requests on the fast one and verifications on both."""
        secret = f"shared-{uuid.uuid4().hex}-{uuid.uuid4().hex}"
        self.prefix = settings.get("URL_PREFIX", "")
        self.fast = make_app(JWT_SECRET_KEY=secret, HOT_PATH="true", **settings)
        self.slow = make_app(JWT_SECRET_KEY=secret, HOT_PATH="false", **settings)
        self.calls = {"flask": 0, "verified": 0}
        hot = self.fast.wsgi_app
        inner = hot.inner

        def flask(environ, start_response):
            # Only the verification paths count: a signup in a test's set-up is Flask's as it should be.
            self.calls["flask"] += environ["PATH_INFO"] in (hot.check_path, hot.validate_path, hot.me_path)
            return inner(environ, start_response)

        hot.inner = flask
        verify = verification.verify_token

        def counting(*args, **kwargs):
            self.calls["verified"] += 1
            return verify(*args, **kwargs)

        monkeypatch.setattr(verification, "verify_token", counting)

    def both(self, method: str, path: str, **kwargs):
        """The fast and the slow app's answers to the same request (one request id for both)."""
        headers = {"X-Request-ID": f"r-{uuid.uuid4().hex[:8]}", **kwargs.pop("headers", {})}
        fast = getattr(self.fast.test_client(), method)(self.prefix + path, headers=headers, **kwargs)
        counted = dict(self.calls)
        slow = getattr(self.slow.test_client(), method)(self.prefix + path, headers=headers, **kwargs)
        self.calls = counted  # only the fast app's work is counted
        return fast, slow

    def same(self, method: str, path: str, **kwargs):
        """Assert both answer alike, every header compared; the fast answer."""
        fast, slow = self.both(method, path, **kwargs)
        same_answer(fast, slow)
        return fast


@pytest.fixture(params=list(CONFIGURATIONS))
def pair(request, make_app, monkeypatch):
    """Both apps under one configuration (defaults, and the shipped one with CORS and a prefix)."""
    return Pair(make_app, monkeypatch, CONFIGURATIONS[request.param])


def same_answer(fast_response, slow_response) -> None:
    """Status, body bytes and every header alike (in any order)."""
    assert fast_response.status_code == slow_response.status_code
    assert fast_response.get_json(silent=True) == slow_response.get_json(silent=True)
    assert fast_response.get_data() == slow_response.get_data()
    assert sorted(fast_response.headers.items()) == sorted(slow_response.headers.items())


def tokens_for(app, prefix: str = "") -> dict:
    """A user's signup body."""
    email = f"h{uuid.uuid4().hex[:8]}@example.com"
    return (
        app.test_client().post(f"{prefix}/signup", json={"email": email, "password": PASSWORD, "name": "H"}).get_json()
    )


def forged(app, token, **changes) -> str:
    """The token's claims with changes, signed with the app's secret."""
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    return jwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS256")


ORIGINS = {"no-origin": {}, "allowed": {"Origin": "https://app.example.com"}, "other": {"Origin": "https://evil.test"}}


def test_check_token_answers_match_without_flask(pair):
    body = tokens_for(pair.fast, pair.prefix)
    now = int(time.time())
    cases = {
        "valid": body["access_token"],
        "refresh": body["refresh_token"],
        "garbage": "a.b.c",
        "expired": forged(pair.fast, body["access_token"], exp=now - 3600),
        "unknown-user": forged(pair.fast, body["access_token"], sub=str(uuid.uuid4())),
    }
    for origin in ORIGINS.values():
        for token in cases.values():
            for base_url in ("http://localhost", "https://localhost"):
                pair.same("post", "/checkToken", json={"token": token}, base_url=base_url, headers=origin)
        # Bearer instead of a body, and an empty token field with a Bearer credential.
        pair.same("post", "/checkToken", headers={**bearer(body["access_token"]), **origin})
        pair.same("post", "/checkToken", json={"token": ""}, headers={**bearer(body["access_token"]), **origin})
    assert pair.calls["flask"] == 0
    assert pair.calls["verified"] == len(ORIGINS) * (2 * len(cases) + 2)  # once each: nothing verified twice


def test_validate_answers_match_without_flask(pair):
    body = tokens_for(pair.fast, pair.prefix)
    credentials = {
        "valid": f"Bearer {body['access_token']}",
        "none": None,
        "garbage": "Bearer a.b.c",
        "basic": "Basic eA==",
        "expired": "Bearer " + forged(pair.fast, body["access_token"], exp=int(time.time()) - 60),
    }
    assert_bearer_answers_match(pair, "/validate", credentials)


def assert_bearer_answers_match(pair, path: str, credentials: dict) -> None:
    """GET `path` with each credential from each origin: both paths alike, 200 only for "valid", each
    Bearer verified once and none by Flask."""
    verifications = 0
    for origin in ORIGINS.values():
        for name, given in credentials.items():
            headers = {**({"Authorization": given} if given else {}), **origin}
            fast = pair.same("get", path, headers=headers)
            assert fast.status_code == (200 if name == "valid" else 401), name
            verifications += given is not None and given.startswith("Bearer")
    assert pair.calls == {"flask": 0, "verified": verifications}


def test_me_answers_match_without_flask(pair):
    body = tokens_for(pair.fast, pair.prefix)
    credentials = {
        "valid": f"Bearer {body['access_token']}",
        "none": None,
        "garbage": "Bearer a.b.c",
        "basic": "Basic eA==",
        "refresh": f"Bearer {body['refresh_token']}",
        "expired": "Bearer " + forged(pair.fast, body["access_token"], exp=int(time.time()) - 60),
        "unknown-user": "Bearer " + forged(pair.fast, body["access_token"], sub=str(uuid.uuid4())),
    }
    assert_bearer_answers_match(pair, "/me", credentials)
    user = pair.same("get", "/me", headers=bearer(body["access_token"])).get_json()["user"]
    assert user == body["user"]  # the user object of the signup, read from the token's state


def test_me_after_a_change_shows_the_change_on_both_paths(pair):
    body = tokens_for(pair.fast, pair.prefix)
    before = pair.same("get", "/me", headers=bearer(body["access_token"])).get_json()["user"]
    changed = pair.fast.test_client().patch(
        f"{pair.prefix}/me", json={"name": "Renamed"}, headers=bearer(body["access_token"])
    )
    assert changed.status_code == 200
    after = pair.same("get", "/me", headers=bearer(body["access_token"])).get_json()["user"]
    assert (before["name"], after["name"]) == ("H", "Renamed")
    assert after == changed.get_json()["user"]


def test_me_with_a_query_string_or_head_is_flasks_with_the_same_answer(pair):
    body = tokens_for(pair.fast, pair.prefix)
    before = pair.calls["flask"]
    pair.same("get", "/me", headers=bearer(body["access_token"]), query_string={"x": "1"})
    pair.same("head", "/me", headers=bearer(body["access_token"]))
    pair.same("options", "/me", headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"})
    assert pair.calls["flask"] == before + 3


MALFORMED = {
    "empty": {"json": {}},
    "unknown-field": {"json": {"token": "x", "extra": 1}},
    "not-object": {"json": ["token"]},
    "broken-json": {"data": "{broken", "content_type": "application/json"},
    "not-json": {"data": "token=x", "content_type": "text/plain"},
    "empty-token": {"json": {"token": ""}},
    "number": {"json": {"token": 5}},
    "nul": {"data": '{"token": "a\\u0000"}', "content_type": "application/json"},
    "too-long": {"json": {"token": "x" * 9000}},
    "query": {"json": {"token": "a.b.c"}, "query_string": {"token": "a.b.c"}},
}


def test_malformed_requests_are_handed_to_flask_with_the_same_answer(pair):
    for name, request_kwargs in MALFORMED.items():
        before = pair.calls["flask"]
        pair.same("post", "/checkToken", **request_kwargs)
        assert pair.calls["flask"] == before + 1, name


def test_other_methods_are_flasks_with_the_same_answer(pair):
    headers = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    for method, path in [("put", "/checkToken"), ("delete", "/checkToken"), ("options", "/checkToken"),
                         ("options", "/validate"), ("head", "/validate")]:  # fmt: skip
        pair.same(method, path, headers=headers)
    assert pair.calls["flask"] == 5


def answered(status: str) -> float:
    """How many /checkToken requests this process has counted with `status`."""
    labels = {"endpoint": "/checkToken", "method": "POST", "status": status}
    return REGISTRY.get_sample_value("auth_http_requests_total", labels) or 0.0


def test_hot_path_counts_metrics_and_the_rate_limit_once(make_app):
    app = make_app(RATELIMIT_ENABLED="true", RATELIMIT_CHECKTOKEN="3/minute", RATELIMIT_KEY_PREFIX=uuid.uuid4().hex)
    client = app.test_client()
    token = tokens_for(app)["access_token"]
    before = answered("200"), answered("429")
    answers = [client.post("/checkToken", json={"token": token}) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert_problem(answers[3], 429, "rate_limited")
    assert (answered("200") - before[0], answered("429") - before[1]) == (3, 2)


def test_rate_limited_answers_match(make_app, monkeypatch):
    limited = {"RATELIMIT_ENABLED": "true", "RATELIMIT_CHECKTOKEN": "1/minute"}
    both = Pair(make_app, monkeypatch, {**SHIPPED, **limited, "RATELIMIT_KEY_PREFIX": uuid.uuid4().hex})
    token = tokens_for(both.fast, both.prefix)["access_token"]
    first, _ = both.both("post", "/checkToken", json={"token": token})  # each app spends its one request
    assert first.status_code == 200
    fast = both.same("post", "/checkToken", json={"token": token})
    assert fast.status_code == 429 and both.calls == {"flask": 0, "verified": 1}


@pytest.mark.parametrize("path", ["/checkToken", "/validate"])
def test_database_outage_is_one_503_verified_once(make_app, monkeypatch, path):
    both = Pair(make_app, monkeypatch, {**SHIPPED, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing"})
    with both.fast.app_context():
        from flask_jwt_extended import create_access_token

        token = create_access_token(identity=str(uuid.uuid4()), additional_claims={"sid": str(uuid.uuid4())})
    kwargs = {"json": {"token": token}} if path == "/checkToken" else {"headers": bearer(token)}
    fast = both.same("post" if path == "/checkToken" else "get", path, **kwargs)
    assert_problem(fast, 503, "service_unavailable")
    assert fast.headers["Retry-After"]
    assert both.calls == {"flask": 0, "verified": 1}


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
    body = tokens_for(pair.fast, pair.prefix)
    changed = pair.fast.test_client().patch(
        f"{pair.prefix}/me", json={"email": email}, headers=bearer(body["access_token"])
    )
    assert changed.status_code == 200, changed.get_json()
    stored = changed.get_json()["user"]["email"]
    flask_requests = pair.calls["flask"]
    fast_response = pair.same("get", "/validate", headers=bearer(body["access_token"]))
    assert fast_response.status_code == 200, fast_response.get_data(as_text=True)
    assert pair.calls["flask"] == flask_requests
    header = fast_response.headers["X-User-Email"]
    assert header.isascii() and header.isprintable()
    assert urllib.parse.unquote(header, errors="strict") == stored
    assert header == urllib.parse.quote(stored.encode(), safe="@.+-_~")


def test_ascii_emails_are_sent_unchanged(pair):
    body = tokens_for(pair.fast, pair.prefix)
    response = pair.fast.test_client().get(f"{pair.prefix}/validate", headers=bearer(body["access_token"]))
    assert response.headers["X-User-Email"] == body["user"]["email"]


def test_nesting_check_stays_linear_on_pathological_strings(client):
    # A body of escaped quotes made a string pattern that can fail retry at every quote: 80 s of CPU.
    body = '{"token": ' + "[" * 40 + '"' + '\\"' * 30_000  # never closed, and brackets enough to be scanned
    started = time.monotonic()
    assert_problem(client.post("/checkToken", data=body, content_type="application/json"), 400, "invalid_json")
    assert time.monotonic() - started < 2

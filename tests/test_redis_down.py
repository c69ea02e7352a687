"""Redis down: every endpoint keeps answering, the limits count in-process, and Redis is used again when back."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from app.observability import RATE_LIMIT_FALLBACK
from tests.e2e.server import running_server
from tests.helpers import PASSWORD
from tests.servers import redis_server  # noqa: F401  (fixture)

DOWN = "rate limit storage unreachable"
BACK = "rate limit storage answers again"


def _keys(url: str, prefix: str) -> list[bytes]:
    """The keys a prefix owns in a Redis."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return list(client.scan_iter(f"*{prefix}*"))
    finally:
        client.close()


def test_redis_down_through_the_flask_app(make_app, redis_server, capsys):  # noqa: F811
    prefix = f"t{uuid.uuid4().hex[:10]}"
    app = make_app(
        REDIS_URL=redis_server.url,
        RATELIMIT_ENABLED="true",
        LOGIN_THROTTLE_ENABLED="true",
        RATELIMIT_KEY_PREFIX=prefix,
        RATELIMIT_CHECKTOKEN="4/minute",
        RATELIMIT_LOGIN_FAILURES="3/minute",
    )
    client = app.test_client()

    def call(method, path, ip, **kwargs):
        response = client.open(path, method=method, environ_base={"REMOTE_ADDR": ip}, **kwargs)
        assert response.status_code < 500, (path, response.status_code, response.get_data(as_text=True))
        return response

    signup = call(
        "POST",
        "/signup",
        "10.0.0.1",
        json={"email": f"{prefix}@example.com", "password": PASSWORD, "name": "Test User"},
    )
    token = signup.get_json()["access_token"]
    assert call("POST", "/checkToken", "10.0.0.2", json={"token": token}).get_json()["valid"] is True
    assert _keys(redis_server.url, prefix), "the counts were not in Redis to begin with"

    redis_server.stop()
    # /checkToken (hot path and Flask view): answered, and still limited, by in-process counts.
    statuses = [call("POST", "/checkToken", "10.0.0.3", json={"token": token}).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    assert call("POST", "/checkToken", "10.0.0.4", json={"token": token}).get_json()["valid"] is True
    # The Flask-Limiter limits: the failure budget still applies, per address.
    failures = [
        call("POST", "/login", "10.0.0.5", json={"email": f"{prefix}@example.com", "password": "wrong password"})
        for _ in range(4)
    ]
    assert [r.status_code for r in failures] == [401, 401, 401, 429]
    login = call("POST", "/login", "10.0.0.6", json={"email": f"{prefix}@example.com", "password": PASSWORD})
    assert login.status_code == 200
    pair = login.get_json()
    assert (
        call(
            "POST",
            "/signup",
            "10.0.0.6",
            json={"email": f"b{prefix}@example.com", "password": PASSWORD, "name": "Test User"},
        ).status_code
        == 201
    )
    assert call("POST", "/refresh", "10.0.0.6", json={"refresh_token": pair["refresh_token"]}).status_code == 200
    assert call("GET", "/validate", "10.0.0.6", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert call("GET", "/health", "10.0.0.6").status_code == 200
    assert RATE_LIMIT_FALLBACK.labels("checktoken")._value.get() == 1
    assert RATE_LIMIT_FALLBACK.labels("endpoints")._value.get() == 1
    assert RATE_LIMIT_FALLBACK.labels("password-failures")._value.get() == 1

    redis_server.start()  # empty: nothing saved
    deadline = time.monotonic() + 60
    log = capsys.readouterr().err
    n = 0
    while not (_keys(redis_server.url, prefix) and log.count(BACK) == 3):
        assert time.monotonic() < deadline, f"the limits never went back to Redis: {log}"
        n += 1
        call("POST", "/checkToken", f"10.1.0.{n}", json={"token": token})
        call("POST", "/login", f"10.2.0.{n}", json={"email": f"{prefix}@example.com", "password": PASSWORD})
        time.sleep(0.5)
        log += capsys.readouterr().err
    assert log.count(f"{DOWN} (checktoken") == 1, log
    assert log.count(f"{DOWN} (endpoints") == 1, log
    assert log.count(f"{BACK} (checktoken") == 1, log
    assert log.count(f"{BACK} (endpoints") == 1, log
    assert log.count(f"{DOWN} (password-failures") == 1, log
    assert log.count(f"{BACK} (password-failures") == 1, log
    assert RATE_LIMIT_FALLBACK.labels("checktoken")._value.get() == 0
    assert RATE_LIMIT_FALLBACK.labels("endpoints")._value.get() == 0
    assert RATE_LIMIT_FALLBACK.labels("password-failures")._value.get() == 0


@pytest.mark.e2e
def test_redis_down_through_gunicorn(tmp_path, redis_server):  # noqa: F811
    with running_server(tmp_path, "sqlite", tls=False, REDIS_URL=redis_server.url) as server:
        prefix = server.ratelimit_prefix
        status, _, body = server.call(
            "POST", "/signup", {"email": f"{prefix}@example.com", "password": PASSWORD, "name": "Test User"}
        )
        assert status == 201
        token = body["access_token"]
        assert server.call("POST", "/checkToken", {"token": token})[2]["valid"] is True

        redis_server.stop()
        answers = [server.call("POST", "/checkToken", {"token": token}) for _ in range(48)]
        assert [status for status, _, _ in answers] == [200] * 48
        assert all(body["valid"] is True for _, _, body in answers)
        wrong = server.call("POST", "/login", {"email": f"{prefix}@example.com", "password": "wrong password"})
        assert wrong[0] == 401
        assert server.call("POST", "/login", {"email": f"{prefix}@example.com", "password": PASSWORD})[0] == 200
        assert (
            server.call(
                "POST", "/signup", {"email": f"b{prefix}@example.com", "password": PASSWORD, "name": "Test User"}
            )[0]
            == 201
        )
        log = server.log_path.read_text()
        # One line per outage and per worker process, not one per request.
        assert 1 <= log.count(f"{DOWN} (checktoken") <= 2, log
        assert 1 <= log.count(f"{DOWN} (endpoints") <= 2, log

        redis_server.start()
        deadline = time.monotonic() + 60
        while not (_keys(redis_server.url, f"{prefix}:checktoken") and BACK in server.log_path.read_text()):
            assert time.monotonic() < deadline, "the limits never went back to Redis"
            assert server.call("POST", "/checkToken", {"token": token})[0] == 200
            assert server.call("POST", "/login", {"email": f"{prefix}@example.com", "password": PASSWORD})[0] == 200
            time.sleep(0.3)

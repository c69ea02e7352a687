"""Rate limits are shared by every gunicorn worker through REDIS_URL; the account throttle through the database."""

from __future__ import annotations

import re
import uuid
from collections import Counter

import pytest
import requests

from tests.e2e.server import running_server
from tests.e2e.test_oauth import create_client
from tests.servers import SHARED_REDIS_URL as REDIS_URL
from tests.servers import redis_client  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


def test_limits_are_shared_by_two_workers(tmp_path, redis_client):  # noqa: F811
    with running_server(
        tmp_path,
        "sqlite",
        tls=False,
        extra_args=("--access-logfile", "-", "--access-logformat", "pid=%(p)s %(U)s %(s)s"),
        REDIS_URL=REDIS_URL,
        RATELIMIT_LOGIN_FAILURES="5/minute",
        LOGIN_FREE_FAILURES="3",
    ) as server:
        prefix = server.ratelimit_prefix
        # Per-IP failure budget: 5 across the workers, whichever serves each connection.
        statuses = [
            server.call("POST", "/login", {"email": f"n{i}@example.com", "password": "wrong password"})[0]
            for i in range(16)
        ]
        assert Counter(statuses) == {401: 5, 429: 11}, statuses
        log = server.log_path.read_text()
        pids = set(re.findall(r"pid=<?(\d+)>? /login", log))
        assert len(pids) == 2, f"one worker served everything; the test proves nothing: {pids}"
        assert any(prefix in key.decode() for key in redis_client.scan_iter(f"*{prefix}*"))
    for key in redis_client.scan_iter(f"*{prefix}*"):
        redis_client.delete(key)


def test_account_throttle_is_shared_by_two_workers_without_redis(tmp_path):
    # Per-IP limits off (they need Redis with two workers); the account throttle needs nothing but the database.
    with running_server(
        tmp_path, "sqlite", tls=False, workers=2, LOGIN_FREE_FAILURES="3", REDIS_URL="", RATELIMIT_ENABLED="false"
    ) as server:
        attempts = [
            server.call("POST", "/login", {"email": "one@example.com", "password": "wrong password"}) for _ in range(5)
        ]
        assert [status for status, _, _ in attempts] == [401, 401, 401, 429, 429]
        assert attempts[3][2]["code"] == "too_many_attempts"
        assert int(attempts[3][1]["Retry-After"]) >= 1


def test_introspection_failures_are_shared_by_two_workers(tmp_path, redis_client):  # noqa: F811
    """Wrong client secrets at /introspect through gunicorn's fast path: the budget is Redis's, counted by both
    workers; past it every answer is a 429, the right secret's too, once each worker has seen the block."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with running_server(
        tmp_path,
        "sqlite",
        tls=False,
        workers=2,
        extra_args=("--access-logfile", "-", "--access-logformat", "pid=%(p)s %(U)s %(s)s"),
        REDIS_URL=REDIS_URL,
        RATELIMIT_KEY_PREFIX=prefix,
        RATELIMIT_LOGIN_FAILURES="5/minute",
    ) as server:
        client_id, secret = create_client(server, "prober-target")

        def introspect(client_secret: str) -> requests.Response:
            return requests.post(f"{server.base}/introspect", data={"token": "x"}, auth=(client_id, client_secret),
                                 timeout=30)  # fmt: skip

        def refusing_workers() -> set[str]:
            return set(re.findall(r"pid=<?(\d+)>? /introspect 429", server.log_path.read_text()))

        statuses = [introspect("wrong").status_code for _ in range(16)]
        while len(refusing_workers()) < 2 and len(statuses) < 60:  # each worker learns from its own failure
            statuses.append(introspect("wrong").status_code)
        assert len(refusing_workers()) == 2, "one worker served everything; the test proves nothing"
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
        right = [introspect(secret) for _ in range(6)]
        assert [response.status_code for response in right] == [429] * 6
        assert all(1 <= int(response.headers["Retry-After"]) <= 60 for response in right)
        assert right[0].json()["error"] == "temporarily_unavailable"
    for key in redis_client.scan_iter(f"*{prefix}*"):
        redis_client.delete(key)

"""Scale-out: two instances (two entrypoints, two ports) over one PostgreSQL database.

They share nothing but the database and the signing secret, as replicas behind a load balancer
do: a revocation through one must hold on the other (at once when every check reads the
database; within one second with the in-process revocation view, REVOCATION_CACHE, the
production default), and simultaneous signups through both must never give one email two
accounts. They are started at the same moment on an empty
database, so both try to migrate it, and the migration lock has to serialize them.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict

import pytest

from tests.deploy.conftest import REDIS_URL, call, free_port, redis_problem, require_or_skip, service_env

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery staple"
REVOCATION_BOUND_SECONDS = 1.0
LOGIN_FAILURES = 4
METRICS_TOKEN = secrets.token_urlsafe(24)  # production serves /metrics only to its bearer


@pytest.fixture(scope="module", params=["revocation-cache", "no-revocation-cache"])
def cluster(request, databases, entrypoints, module_workdir):
    """Instances A and B, started together on a fresh, unmigrated database; with the in-process
    revocation view kept current by LISTEN/NOTIFY (the production default), or without it."""
    url = databases.url()
    secret = secrets.token_urlsafe(48)
    cache = "true" if request.param == "revocation-cache" else "false"
    # Rate limits in the shared Redis (a key prefix of their own), tight enough to test.
    limits = {"REDIS_URL": REDIS_URL, "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}"}
    limits["RATELIMIT_LOGIN_FAILURES"] = f"{LOGIN_FAILURES}/minute"
    redis = redis_problem()
    if redis is not None:
        limits = {}
    instances = []
    for name in ("a", "b"):
        port = free_port()
        env = service_env(
            url, JWT_SECRET_KEY=secret, PLAIN_HTTP="1", GUNICORN_BIND=f"127.0.0.1:{port}", REVOCATION_CACHE=cache,
            METRICS_TOKEN=METRICS_TOKEN, **limits,
        )  # fmt: skip
        folder = module_workdir / f"{request.param}-{name}"
        folder.mkdir()
        instances.append({"base": f"http://127.0.0.1:{port}", "entry": entrypoints(env, folder)})
    for instance in instances:
        instance["entry"].wait_for(f"{instance['base']}/ready", timeout=120)
    return {
        "a": instances[0],
        "b": instances[1],
        "url": url,
        "databases": databases,
        "cache": cache == "true",
        "redis_problem": redis,
    }


def api(instance: dict, path: str, method: str = "GET", **kwargs):
    """A call to one instance."""
    return call(instance["base"] + path, method, timeout=30, **kwargs)


def test_two_instances_started_together_migrate_once(cluster):
    logs = [cluster["a"]["entry"].log, cluster["b"]["entry"].log]
    assert all("taking the migration lock" in log for log in logs)
    # One ran the migration; the other waited for the lock and found nothing left to do.
    assert sum("Running upgrade" in log for log in logs) == 1, logs
    assert cluster["databases"].scalar(cluster["url"], "SELECT count(*) FROM alembic_version") == 1


def test_a_logout_through_one_instance_is_honoured_by_the_other(cluster):
    a, b = cluster["a"], cluster["b"]
    body = {"email": "scale-logout@example.com", "password": PASSWORD, "name": "Scale"}
    created = api(a, "/signup", "POST", body=body)
    assert created.status == 201, created.body
    token = created.json()["access_token"]
    for _ in range(4):  # every worker of B has seen (and may remember) the token as valid
        assert api(b, "/checkToken", "POST", body={"token": token}).json()["valid"] is True
    assert api(b, "/validate", token=token).status == 200

    assert api(a, "/logout", "POST", token=token).status == 200
    revoked = {"success": True, "valid": False, "reason": "revoked"}
    if cluster["cache"]:
        # B's in-process view learns of it through LISTEN/NOTIFY: within the bound docs/DESIGN.md
        # sets for every cache in front of the database (one second), usually at once.
        started = time.monotonic()
        while api(b, "/checkToken", "POST", body={"token": token}).json() != revoked:
            assert time.monotonic() - started < REVOCATION_BOUND_SECONDS, "revocation not seen on B in time"
            time.sleep(0.02)
    # Without the cache every check reads the database: the very next request on B refuses it.
    assert api(b, "/checkToken", "POST", body={"token": token}).json() == revoked
    assert api(b, "/validate", token=token).status == 401
    assert api(b, "/me", token=token).status == 401


def test_a_refresh_token_spent_on_one_instance_is_spent_on_the_other(cluster):
    a, b = cluster["a"], cluster["b"]
    body = {"email": "scale-refresh@example.com", "password": PASSWORD, "name": "Scale"}
    created = api(b, "/signup", "POST", body=body).json()
    assert api(b, "/refresh", "POST", body={"refresh_token": created["refresh_token"]}).status == 200
    reused = api(a, "/refresh", "POST", body={"refresh_token": created["refresh_token"]})
    assert reused.status == 401 and reused.json()["code"] == "token_reused"
    # Reuse revoked the whole session on every instance.
    assert api(b, "/me", token=created["access_token"]).status == 401


def test_simultaneous_signups_through_both_instances_never_collide(cluster):
    a, b = cluster["a"], cluster["b"]
    unique = [f"scale-unique-{i}@example.com" for i in range(6)]
    contested = [f"scale-contested-{i}@example.com" for i in range(4)]
    attempts = [(a if i % 2 else b, email) for i, email in enumerate(unique)]
    for email in contested:
        # Four tries per contested address, two per instance, in different letter cases.
        attempts += [(a, email), (b, email), (a, email.upper()), (b, email.capitalize())]

    barrier = threading.Barrier(len(attempts))
    results: list = [None] * len(attempts)

    def signup(index: int, instance: dict, email: str) -> None:
        barrier.wait()
        try:
            results[index] = api(instance, "/signup", "POST", body={"email": email, "password": PASSWORD, "name": "S"})
        except Exception as error:  # reported by the assertions below
            results[index] = error

    threads = [threading.Thread(target=signup, args=(i, *attempt)) for i, attempt in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    by_email: dict[str, Counter] = defaultdict(Counter)
    for (_, email), result in zip(attempts, results, strict=True):
        by_email[email.lower()][getattr(result, "status", repr(result))] += 1
    for email in unique:
        assert by_email[email] == {201: 1}, (email, by_email[email])
    for email in contested:
        assert by_email[email] == {201: 1, 409: 3}, (email, by_email[email])
    codes = {r.json()["code"] for r in results if getattr(r, "status", None) == 409}
    assert codes == {"email_taken"}

    emails = ", ".join(f"'{email}'" for email in unique + contested)
    count = cluster["databases"].scalar(cluster["url"], f"SELECT count(*) FROM users WHERE email IN ({emails})")
    assert count == len(unique) + len(contested)
    # Every account works through the other instance too.
    for email in contested[:2]:
        login = api(a, "/login", "POST", body={"email": email, "password": PASSWORD})
        assert login.status == 200, login.body
        assert api(b, "/me", token=login.json()["access_token"]).status == 200


def health_requests_counted(instance: dict) -> float:
    """What /metrics says about GET /health answers (every label set added up)."""
    text = api(instance, "/metrics", token=METRICS_TOKEN).body.decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("auth_http_requests_total{") and 'endpoint="/health"' in line and 'method="GET"' in line
    )


def test_metrics_add_up_every_worker_of_an_instance(cluster):
    # Two workers per instance: each /metrics answer, whichever worker gives it, counts all of them.
    a = cluster["a"]
    before = health_requests_counted(a)
    for _ in range(20):
        assert api(a, "/health").status == 200
    counts = {health_requests_counted(a) for _ in range(8)}
    assert counts == {before + 20}, counts


def test_rate_limits_are_shared_by_the_instances_through_redis(cluster):
    if cluster["redis_problem"]:
        require_or_skip(f"redis unreachable: {cluster['redis_problem']}")
    a, b = cluster["a"], cluster["b"]
    wrong = {"email": "nobody-here@example.com", "password": "not the password"}
    statuses = [api(instance, "/login", "POST", body=wrong).status for instance in (a, b) * LOGIN_FAILURES]
    # One budget for both: alone, each instance would have allowed LOGIN_FAILURES failures.
    assert statuses[:LOGIN_FAILURES] == [401] * LOGIN_FAILURES, statuses
    assert set(statuses[LOGIN_FAILURES:]) == {429}, statuses
    limited = api(a, "/login", "POST", body=wrong)
    assert limited.status == 429 and "Retry-After" in limited.headers

"""A slow or stopped database: bounded waits, 503 with Retry-After, one log line per request, budgets kept."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from app import outage
from app.extensions import db
from tests.conftest import make_test_app
from tests.databases import Backend
from tests.e2e.server import running_server
from tests.helpers import PASSWORD, assert_problem
from tests.servers import postgres_server  # noqa: F401  (fixture)

BOUND = 1  # DATABASE_STATEMENT_TIMEOUT of these tests, seconds
MARGIN = 2.5  # what a request may add to the bound (argon2, pool pre-ping, a slow shared machine)


def _body(email: str) -> dict:
    """A signup body."""
    return {"email": email, "password": PASSWORD, "name": "Test User"}


class _Locked:
    """Hold a lock on the users table from another connection, as a long migration or a stuck job would."""

    def __init__(self, url: str, backend: str) -> None:
        """Take the lock."""
        self.backend = backend
        if backend == "sqlite":
            self.raw = sqlite3.connect(sa.engine.make_url(url).database, isolation_level=None)
            self.raw.execute("BEGIN EXCLUSIVE")  # WAL: readers go on, writers wait
            return
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.connection = self.engine.connect()
        if backend == "postgresql":
            self.connection.exec_driver_sql("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        else:
            self.connection.exec_driver_sql("LOCK TABLES users WRITE")

    def release(self) -> None:
        """Let go."""
        if self.backend == "sqlite":
            self.raw.execute("ROLLBACK")
            self.raw.close()
            return
        if self.backend == "mysql":
            self.connection.exec_driver_sql("UNLOCK TABLES")
        self.connection.rollback()
        self.connection.close()
        self.engine.dispose()


def test_a_locked_table_answers_503_within_the_bound(make_app, database_url, backend):
    app = make_app(DATABASE_STATEMENT_TIMEOUT=BOUND)
    client = app.test_client()
    email = f"u{uuid.uuid4().hex[:8]}@example.com"
    assert client.post("/signup", json=_body(email)).status_code == 201
    lock = _Locked(database_url, backend)
    try:
        calls = [("/signup", _body(f"n{uuid.uuid4().hex[:8]}@example.com"))]
        if backend != "sqlite":  # SQLite readers are never blocked
            calls.append(("/login", {"email": email, "password": PASSWORD}))
        for path, body in calls:
            started = time.monotonic()
            response = client.post(path, json=body)
            elapsed = time.monotonic() - started
            assert_problem(response, 503, "service_unavailable")
            assert int(response.headers["Retry-After"]) >= 1
            assert elapsed < BOUND + MARGIN, (path, elapsed)
    finally:
        lock.release()
    assert client.post("/login", json={"email": email, "password": PASSWORD}).status_code == 200


def test_mariadb_statement_timeout_is_a_503(make_app, backend):
    if backend != "mysql":
        pytest.skip("MariaDB's max_statement_time")
    app = make_app(DATABASE_STATEMENT_TIMEOUT=BOUND)

    @app.get("/slow")
    def slow():
        db.session.execute(sa.text("SELECT SLEEP(5)")).scalar()
        return {"slept": True}

    started = time.monotonic()
    response = app.test_client().get("/slow")
    assert_problem(response, 503, "service_unavailable")
    assert time.monotonic() - started < BOUND + MARGIN


@pytest.mark.e2e
def test_health_stays_fast_while_the_users_table_is_locked(tmp_path, request):
    if request.config.backend_problems.get("postgresql"):
        pytest.skip("PostgreSQL unreachable")
    with running_server(
        tmp_path, "postgresql", tls=False, workers=2, DATABASE_STATEMENT_TIMEOUT=str(BOUND)
    ) as server:  # 2 workers x 2 threads
        email = f"u{uuid.uuid4().hex[:8]}@example.com"
        assert server.call("POST", "/signup", _body(email))[0] == 201
        lock = _Locked(server.database_url, "postgresql")
        results = []

        def blocked(path, body):
            started = time.monotonic()
            status, headers, answer = server.call("POST", path, body)
            results.append((path, status, headers.get("Retry-After"), answer, time.monotonic() - started))

        try:
            # Two of the four threads wait on the lock at any moment, again and again.
            workers = [
                threading.Thread(
                    target=lambda: [blocked("/signup", _body(f"n{uuid.uuid4().hex}@x.org")) for _ in "abc"]
                ),
                threading.Thread(
                    target=lambda: [blocked("/login", {"email": email, "password": PASSWORD}) for _ in "abc"]
                ),
            ]
            for worker in workers:
                worker.start()
            probes = []
            while any(worker.is_alive() for worker in workers):
                started = time.monotonic()
                assert server.call("GET", "/health")[0] == 200  # a fresh connection each time
                probes.append(time.monotonic() - started)
                time.sleep(0.1)
            for worker in workers:
                worker.join()
        finally:
            lock.release()
        # /health has a thread of its own in each worker (deploy/gthread.py): busy threads do not delay it.
        assert len(probes) >= 5 and max(probes) < 1.0, probes
        assert len(results) == 6
        for path, status, retry_after, answer, elapsed in results:
            assert status == 503 and answer["code"] == "service_unavailable", (path, status, answer)
            assert retry_after is not None and int(retry_after) >= 1
            assert elapsed < BOUND + MARGIN, (path, elapsed)
        # And the bound let go of the budget too: the database is back, so is the login.
        assert server.call("POST", "/login", {"email": email, "password": PASSWORD})[0] == 200


PROBE_LIMIT = 1.0  # seconds a liveness probe may take, well inside Kubernetes' timeoutSeconds (2)


@pytest.mark.e2e
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_health_answers_within_a_second_while_more_clients_than_threads_wait_on_a_lock(tmp_path, request, tls):
    """Issue 9 item 13: 8 clients keep every one of the 2 x 2 threads waiting on a locked table,
    with more queued behind them; liveness probes on fresh connections still answer in < 1 s.

    Before deploy/gthread.py's probe lane, a probe queued behind the waiting requests: 1.3-4.4 s
    each with a 3 s bound, most past the kubelet's 2 s timeout.
    """
    if request.config.backend_problems.get("postgresql"):
        pytest.skip("PostgreSQL unreachable")
    bound = 3  # the production default is 5; long enough that the queue is deep
    with running_server(tmp_path, "postgresql", tls=tls, workers=2, DATABASE_STATEMENT_TIMEOUT=str(bound)) as server:
        email = f"u{uuid.uuid4().hex[:8]}@example.com"
        assert server.call("POST", "/signup", _body(email))[0] == 201
        lock = _Locked(server.database_url, "postgresql")
        stop = threading.Event()
        answers: list[int] = []

        def client():
            while not stop.is_set():
                answers.append(server.call("POST", "/login", {"email": email, "password": PASSWORD})[0])

        clients = [threading.Thread(target=client) for _ in range(8)]
        probes: list[tuple[float, object]] = []
        try:
            for thread in clients:
                thread.start()
            time.sleep(0.5)  # every thread is waiting on the lock, and requests are queued
            # A probe every 0.2 s for two bounds, each on its own fresh connection (as the kubelet's).
            prober = [threading.Thread(target=lambda: probes.append(_probe(server))) for _ in range(10 * bound)]
            for thread in prober:
                thread.start()
                time.sleep(0.2)
            for thread in prober:
                thread.join()
            during = list(answers)
        finally:
            stop.set()
            lock.release()
            for thread in clients:
                thread.join()
        print(f"probe latencies ({'https' if tls else 'http'}):", sorted(probes))
        assert during and set(during) <= {503}, Counter(during)  # the waits really were on the lock
        assert all(outcome == 200 for _, outcome in probes), sorted(probes)
        assert max(latency for latency, _ in probes) < PROBE_LIMIT, sorted(probes)
        # Keep-alive and other requests on the same workers are served as before.
        assert server.call("POST", "/login", {"email": email, "password": PASSWORD})[0] == 200
        assert "Traceback" not in server.log_path.read_text()


def _probe(server, path: str = "/health", timeout: float = 5.0) -> tuple[float, object]:
    """(seconds, status or error) of one GET on a fresh connection, as a probe with `timeout` sees it."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(server.base + path, context=server.context, timeout=timeout) as response:
            outcome: object = response.status
    except urllib.error.HTTPError as error:
        outcome = error.code
    except OSError as error:  # a timeout, a reset
        outcome = type(error).__name__
    return round(time.monotonic() - started, 3), outcome


def _app_on_a_stoppable_database(server, tmp_path, **overrides):
    """A migrated database on the test's own PostgreSQL (which it may stop), and an app with limits on."""
    backend = Backend("postgresql", server.url)
    url = backend.create(str(tmp_path))
    migrate = make_test_app(url)
    with migrate.app_context():
        upgrade()
        db.engine.dispose()
    settings = {"RATELIMIT_ENABLED": "true", "RATELIMIT_KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}"}
    app = make_test_app(url, DATABASE_CONNECT_TIMEOUT="1", **settings, **overrides)
    return backend, url, app


def test_a_stopped_database_logs_one_line_per_request_and_keeps_the_login_budget(
    postgres_server,  # noqa: F811
    tmp_path,
    capsys,
):
    backend, url, app = _app_on_a_stoppable_database(
        postgres_server, tmp_path, RATELIMIT_LOGIN="5/minute", RATELIMIT_LOGIN_FAILURES="5/minute"
    )
    client = app.test_client()
    email = f"u{uuid.uuid4().hex[:8]}@example.com"
    assert client.post("/signup", json=_body(email)).status_code == 201
    capsys.readouterr()

    postgres_server.stop()
    answers = [client.post("/login", json={"email": email, "password": PASSWORD}) for _ in range(8)]
    answers.append(client.post("/signup", json=_body(f"n{uuid.uuid4().hex[:8]}@example.com")))
    for response in answers:
        assert_problem(response, 503, "service_unavailable")
        assert response.headers["Retry-After"]
    during = capsys.readouterr().err

    postgres_server.start()
    time.sleep(outage.QUIET_SECONDS)
    # 8 logins answered 503 against a ceiling of 5 a minute: none of them may have spent it.
    assert client.post("/login", json={"email": email, "password": PASSWORD}).status_code == 200
    after = capsys.readouterr().err
    with app.app_context():
        db.engine.dispose()
    backend.drop(url)

    assert "Traceback" not in during
    records = [json.loads(line) for line in during.splitlines() if line.startswith("{")]
    failed = [r for r in records if r["message"].startswith("database unavailable, answered 503")]
    assert len(failed) == 9, during
    request_ids = {answer.headers["X-Request-ID"] for answer in answers}
    assert {r["request_id"] for r in failed} == request_ids
    assert "OperationalError" in failed[0]["message"]
    assert sum(r["message"].startswith("database outage started") for r in records) == 1
    assert "database outage ended" in after and after.count("database outage ended") == 1
    assert "database outage" not in after.replace("database outage ended", "")


def test_a_stopped_database_does_not_spend_the_mail_budget_of_an_address(
    postgres_server,  # noqa: F811
    tmp_path,
    smtp_server,
):
    """/password/forgot answered 503 during an outage gives the address's mail back (issue 11)."""
    backend, url, app = _app_on_a_stoppable_database(
        postgres_server, tmp_path, MAIL_URL=smtp_server.url(), RATELIMIT_MAIL_PER_ADDRESS="2/hour"
    )
    client = app.test_client()
    email = f"u{uuid.uuid4().hex[:8]}@example.com"
    try:
        postgres_server.stop()
        for _ in range(4):
            assert_problem(client.post("/password/forgot", json={"email": email}), 503, "service_unavailable")
        postgres_server.start()
        time.sleep(outage.QUIET_SECONDS)
        # Four 503s against a budget of two: none was spent, so two mails may still be asked for.
        for _ in range(2):
            assert client.post("/password/forgot", json={"email": email}).status_code == 202
        assert_problem(client.post("/password/forgot", json={"email": email}), 429, "rate_limited")
    finally:
        with app.app_context():
            db.engine.dispose()
        backend.drop(url)

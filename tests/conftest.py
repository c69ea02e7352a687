"""Fixtures: an app per database backend, a client, a CLI runner, and ready-made users with tokens.

Every test that uses `app` runs once per backend: SQLite always; PostgreSQL and MariaDB when
reachable. Under CI=true an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from flask_migrate import upgrade
from sqlalchemy import delete

from app import create_app
from app.extensions import db
from app.models import (
    AccountToken,
    AuditEvent,
    Client,
    LoginThrottle,
    MfaChallenge,
    OutboxMessage,
    RecoveryCode,
    RevokedToken,
    Session,
    TotpCredential,
    User,
)
from tests.databases import BACKENDS, IN_CI, selected_backends
from tests.helpers import Auth


def pytest_configure(config):
    """Check the servers once, before any test: loud in CI, a skip reason elsewhere."""
    config.backend_problems = {}
    for name in selected_backends():
        problem = BACKENDS[name].reachable()
        if problem is not None:
            if IN_CI:
                raise pytest.UsageError(f"CI=true and the {name} server is unreachable: {problem}")
            config.backend_problems[name] = problem


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say which database backends this run covered, and why any was left out."""
    ran = [name for name in selected_backends() if name not in config.backend_problems]
    terminalreporter.write_sep("-", "database backends")
    terminalreporter.write_line(f"ran on: {', '.join(ran) or 'none'}")
    for name, problem in config.backend_problems.items():
        terminalreporter.write_line(f"skipped {name}: {problem}")


def make_test_app(database_url: str, **overrides: Any):
    """An app on `database_url` with testing settings plus overrides."""
    settings = {"APP_ENV": "testing", "DATABASE_URL": database_url, "URL_PREFIX": "", "CORS_ORIGINS": ""}
    settings.update({key: str(value) for key, value in overrides.items()})
    return create_app(settings, migrations=True)


@pytest.fixture(scope="session", params=selected_backends())
def database_url(request, tmp_path_factory):
    """A migrated database on one backend, dropped after the session."""
    name = request.param
    problem = request.config.backend_problems.get(name)
    if problem is not None:
        pytest.skip(f"{name} unreachable: {problem}")
    backend = BACKENDS[name]
    url = backend.create(str(tmp_path_factory.mktemp(name)))
    app = make_test_app(url)
    with app.app_context():
        upgrade()
        db.engine.dispose()
    yield url
    backend.drop(url)


@pytest.fixture(scope="session")
def base_app(database_url):
    """The default test app of a backend, shared by its tests.

    Its revocation cache is on (it takes effect on PostgreSQL), so every API test also proves
    that the cache never lets a revoked token through.
    """
    app = make_test_app(database_url, REVOCATION_CACHE="true")
    yield app
    app.extensions["revocations"].stop()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(base_app):
    """The app, with every table emptied after the test."""
    yield base_app
    with base_app.app_context():
        db.session.remove()
        for model in (
            AuditEvent,
            Client,
            LoginThrottle,
            OutboxMessage,
            AccountToken,
            MfaChallenge,
            RecoveryCode,
            TotpCredential,
            RevokedToken,
            Session,
            User,
        ):
            db.session.execute(delete(model))
        db.session.commit()


@pytest.fixture
def make_app(app, database_url):
    """Build another app on the same database with other settings (URL_PREFIX, lifetimes, …).

    It depends on `app` so the tables are emptied after the test as for every other test.
    """
    made = []

    def build(**overrides):
        made.append(make_test_app(database_url, **overrides))
        return made[-1]

    yield build
    for extra in made:
        extra.extensions["revocations"].stop()
        with extra.app_context():
            db.engine.dispose()


@pytest.fixture
def empty_app(database_url, tmp_path):
    """An app on a new, empty (never migrated) database of this backend, dropped after the test."""
    backend = BACKENDS[database_url.split(":", 1)[0].split("+", 1)[0]]
    url = backend.create(str(tmp_path))
    app = make_test_app(url)
    yield app
    app.extensions["revocations"].stop()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    backend.drop(url)


@pytest.fixture
def backend(database_url) -> str:
    """The backend name of this test run."""
    return database_url.split(":", 1)[0].split("+", 1)[0]


@pytest.fixture
def workers(make_app, backend):
    """Two apps with their revocation views on and listening, as two gunicorn workers or instances would be."""
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY exists on PostgreSQL only; elsewhere every check reads the database")
    secret = f"shared-by-both-workers-{uuid.uuid4().hex}"
    apps = [make_app(REVOCATION_CACHE="true", JWT_SECRET_KEY=secret) for _ in range(2)]
    for app in apps:
        app.extensions["revocations"].ensure_listening()
    deadline = time.monotonic() + 5
    while not all(app.extensions["revocations"].cache.listening for app in apps):
        assert time.monotonic() < deadline, "listeners did not connect"
        time.sleep(0.02)
    return apps


@pytest.fixture
def client(app):
    """A test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner."""
    return app.test_cli_runner()


@pytest.fixture
def auth(client):
    """The Auth helper, on `client` (a module that overrides `client` for another app gets its accounts there)."""
    return Auth(client)


@pytest.fixture
def user(auth):
    """A signed-up user: the signup body (user, access_token, refresh_token, …)."""
    return auth.signup()


@pytest.fixture
def admin(auth):
    """A signed-in admin: the login body."""
    return auth.make_admin()


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd, plain, loopback) for the test; stopped after it."""
    from tests.smtp import SMTPServer

    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def mail_app(make_app, smtp_server):
    """An app on this backend's database whose mail goes to `smtp_server`."""
    return make_app(MAIL_URL=smtp_server.url())


@pytest.fixture
def exchange():
    """A topic exchange and a bound queue of its own on the machine's RabbitMQ (tests/broker.py)."""
    from tests.broker import Exchange, require_broker

    require_broker()
    made = Exchange.make()
    yield made
    made.delete()


@pytest.fixture
def events_app(make_app, exchange):
    """An app on this backend's database whose events go to `exchange` (the relay polls every 10 ms)."""
    from tests.broker import BROKER_URL

    return make_app(
        EVENTS_AMQP_URL=BROKER_URL, EVENTS_EXCHANGE=exchange.name, OUTBOX_POLL_INTERVAL_MS=10, MAIL_URL="none"
    )

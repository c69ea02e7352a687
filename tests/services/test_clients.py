"""Service clients (app/services/clients.py): secrets shown once and stored hashed, and tokens voided on
every worker when a client is rotated or deleted (the revocation view, LISTEN/NOTIFY)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

import pytest
from sqlalchemy import event, select

from app.extensions import db
from app.models import Client
from app.oauth import OAuthError
from app.services import clients


def test_a_secret_is_stored_only_as_its_keyed_hash(app):
    with app.app_context():
        client, secret = clients.create(name="orders")
        row = db.session.execute(select(Client.__table__).where(Client.id == client.id)).one()
    assert len(secret) >= 43  # 256 bits, url-safe base64
    assert secret not in str(tuple(row))
    assert row.secret_hash == hmac.new(client.id.bytes, secret.encode(), hashlib.sha256).hexdigest()
    assert row.secret_version == 1 and row.rotated_at is None


def test_two_clients_never_share_a_secret_and_a_hash_does_not_move(app):
    with app.app_context():
        first, first_secret = clients.create(name="a")
        second, second_secret = clients.create(name="b")
        assert first_secret != second_secret
        # The hash is keyed by the client's own id: the same secret hashes apart on another row.
        assert clients.secret_hash(first.id, first_secret) != clients.secret_hash(second.id, first_secret)
        with pytest.raises(OAuthError):
            clients.authenticate(str(second.id), first_secret)
        client_id, state = clients.authenticate(str(first.id), first_secret)
        assert client_id == first.id and state.name == "a"


@pytest.mark.parametrize("name", ["", " ", "x" * 101, "tab\there", "nul\x00"])
def test_bad_names_are_refused(app, name):
    with app.app_context(), pytest.raises(clients.ClientError):
        clients.create(name=name)


def test_names_are_unique(app):
    with app.app_context():
        clients.create(name="orders")
        with pytest.raises(clients.ClientError, match="exists"):
            clients.create(name="orders")


def test_unknown_names_are_refused(app):
    with app.app_context():
        for change in (clients.rotate, clients.delete):
            with pytest.raises(clients.ClientError, match="No client"):
                change(name="nobody")


def test_comparison_is_constant_time(monkeypatch, app):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(clients.hmac, "compare_digest", spy)
    with app.app_context():
        client, secret = clients.create(name="timing")
        for candidate in (secret, "wrong"):
            try:
                clients.authenticate(str(client.id), candidate)
            except OAuthError:
                pass
        try:
            clients.authenticate(str(uuid.uuid4()), secret)  # an unknown client is compared all the same
        except OAuthError:
            pass
    assert len(compared) == 3


# --- every worker, through the revocation view (PostgreSQL) ----------------------------------


# `workers` (tests/conftest.py): two apps with their revocation views on and listening.


def _basic(client_id, secret) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _warm(workers, name="svc"):
    """A client, and a token of it that both workers have checked (and cached) as valid."""
    with workers[0].app_context():
        made, secret = clients.create(name=name)
        client = {"id": made.id, "name": made.name}
    form = {"grant_type": "client_credentials"}
    response = workers[0].test_client().post("/oauth/token", data=form, headers=_basic(client["id"], secret))
    token = response.get_json()["access_token"]
    for app in workers:
        assert _valid(app, token) is True
    return client, secret, token


def _valid(app, token) -> bool:
    return app.test_client().post("/checkToken", json={"token": token}).get_json()["valid"]


@pytest.mark.parametrize("change", ["rotate", "delete"])
def test_a_change_reaches_the_other_worker_within_a_second(workers, change):
    client, _, token = _warm(workers)
    with workers[0].app_context():
        getattr(clients, change)(name=client["name"])
    assert _valid(workers[0], token) is False  # the worker that changed it: at once
    started = time.monotonic()
    while _valid(workers[1], token):
        assert time.monotonic() - started < 1.0, "the change was not seen by the other worker within 1 s"
        time.sleep(0.005)


def test_a_cached_client_asks_the_database_nothing(workers):
    app = workers[0]
    client, secret, token = _warm(workers, name="cached")
    statements = []
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    headers = _basic(client["id"], secret)
    deadline = time.monotonic() + 3
    while True:  # the create's own notification may drop the first fill: bounded retries
        assert _valid(app, token) is True
        app.test_client().post("/introspect", data={"token": token}, headers=headers)
        statements.clear()
        for _ in range(5):
            assert _valid(app, token) is True
            body = app.test_client().post("/introspect", data={"token": token}, headers=headers).get_json()
            assert body["active"] is True
        if statements == [] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert statements == []

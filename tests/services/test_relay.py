"""app/services/relay.py against the machine's real RabbitMQ: what a consumer receives, in which
order, and that outages and crashes delay events and never lose them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import OutboxMessage, User
from app.models.outbox import PENDING, SENT
from app.services import events, outbox, relay, users
from tests.broker import BROKER_URL, Forwarder, free_port, url_on_port
from tests.helpers import PASSWORD, Auth, bearer

ROOT = Path(__file__).resolve().parents[2]


def make_users(app, count: int) -> list[uuid.UUID]:
    """Accounts inserted directly (no password hashing), each with its auth.user.created event."""
    ids = []
    with app.app_context():
        for _ in range(count):
            user = User(
                id=uuid.uuid4(),
                email=f"{uuid.uuid4().hex[:12]}@example.com",
                name="0",
                password_hash="!unusable",
                role="user",
            )
            db.session.add(user)
            events.user(events.CREATED, user)
            ids.append(user.id)
        db.session.commit()
    return ids


def rename(app, user_id: uuid.UUID, name: str) -> None:
    """A real change through the service: PATCH /users/{id} by an admin, as the CLI would make it."""
    with app.app_context():
        users.apply_update(db.session.get(User, user_id), {"name": name}, actor_id=None)


def counts(app) -> dict[str, int]:
    """Events by outbox status."""
    with app.app_context():
        table = OutboxMessage.__table__
        rows = db.session.execute(
            select(table.c.status, func.count()).where(table.c.kind == "event").group_by(table.c.status)
        ).all()
        db.session.rollback()
    return dict(rows)


def relay_until_idle(app) -> int:
    """Publish everything pending, in this process."""
    return relay.run(app, threading.Event(), until_idle=True)


def by_id(received) -> dict[str, dict]:
    """The received events by id; a duplicate must be the same document."""
    seen: dict[str, dict] = {}
    for _, _, event in received:
        assert seen.setdefault(event["id"], event) == event, "one id, two contents"
    return seen


def test_every_type_arrives_with_its_routing_key_persistent_and_as_written(events_app, exchange):
    client = events_app.test_client()
    auth = Auth(client, events_app)
    admin = auth.make_admin()
    body = auth.signup()
    headers = bearer(body["access_token"])
    admin_headers = bearer(admin["access_token"])
    client.patch("/me", json={"name": "New"}, headers=headers)
    from app.services import recovery

    with events_app.app_context():
        user = db.session.get(User, uuid.UUID(body["user_id"]))
        token = recovery.issue(user, recovery.EMAIL_VERIFY, email=user.email)
        db.session.commit()
    client.post("/email/verify", json={"token": token})
    auth.login(body["user"]["email"])
    client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase 42"},
        headers=headers,
    )
    client.patch(f"/users/{body['user_id']}", json={"is_active": False}, headers=admin_headers)
    client.patch(f"/users/{body['user_id']}", json={"is_active": True}, headers=admin_headers)
    client.delete(f"/users/{body['user_id']}", headers=admin_headers)
    with events_app.app_context():
        written = [
            row.payload
            for row in db.session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "event").order_by("id"))
        ]
        db.session.rollback()
    assert {event["type"] for event in written} == set(events.TYPES)

    assert relay_until_idle(events_app) == len(written)
    received = exchange.drain(len(written))
    assert [event for _, _, event in received] == written  # one relay, one channel: outbox order
    for routing_key, properties, event in received:
        assert routing_key == event["type"].removeprefix("auth.")
        assert properties["delivery_mode"] == 2
        assert properties["message_id"] == event["id"]
        assert properties["content_type"].startswith("application/cloudevents+json")
    assert counts(events_app) == {SENT: len(written)}


def test_a_deleted_accounts_sessions_arrive_revoked_before_its_deletion(events_app, exchange):
    """DELETE /me with two live sessions: RabbitMQ gets both auth.session.revoked (user_deleted) first."""
    client = events_app.test_client()
    auth = Auth(client, events_app)
    body = auth.signup()
    auth.login(body["user"]["email"])
    assert client.delete("/me", json={"password": PASSWORD}, headers=bearer(body["access_token"])).status_code == 200
    assert relay_until_idle(events_app) == 4
    received = [(key, event) for key, _, event in exchange.drain(4)]
    assert [key for key, _ in received] == ["user.created", "session.revoked", "session.revoked", "user.deleted"]
    assert {event["data"]["reason"] for _, event in received[1:3]} == {"user_deleted"}
    assert len({event["data"]["session_id"] for _, event in received[1:3]}) == 2


def test_the_exchange_is_a_durable_topic_exchange(events_app, exchange):
    make_users(events_app, 1)
    relay_until_idle(events_app)
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange.name, exchange_type="topic", durable=True, passive=False)  # same: fine
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"):
            channel.exchange_declare(exchange.name, exchange_type="topic", durable=False)
    finally:
        connection.close()


def test_a_burst_of_1000_changes_is_1000_events_none_lost_none_twice(events_app, exchange):
    ids = make_users(events_app, 40)
    for n in range(960):
        rename(events_app, ids[n % 40], str(n // 40 + 1))
    assert counts(events_app) == {PENDING: 1000}
    assert relay_until_idle(events_app) == 1000
    received = by_id(exchange.drain(1000))
    assert len(received) == 1000
    assert counts(events_app) == {SENT: 1000}
    for user_id in map(str, ids):  # each user's in commit order
        names = [event["data"]["name"] for event in received.values() if event["subject"] == user_id]
        assert names == [str(n) for n in range(25)]


def test_one_users_events_keep_commit_order_under_concurrent_changes(events_app, exchange, backend):
    if backend == "sqlite":
        pytest.skip("SQLite takes one writer at a time: no concurrency to order")
    ids = make_users(events_app, 3)
    rounds, workers = 20, 6

    def work() -> None:
        for _ in range(rounds):
            for user_id in ids:
                with events_app.app_context():
                    # Read-modify-write under the row lock: the names count the commits.
                    target = db.session.get(User, user_id, with_for_update=True)
                    users.apply_update(target, {"name": str(int(target.name) + 1)}, actor_id=None)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    stop = threading.Event()
    publishing = threading.Thread(target=relay.run, args=(events_app, stop))  # publishing while they change
    publishing.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = 3 + 3 * rounds * workers
    try:
        received = exchange.drain(total, timeout=60)
    finally:
        stop.set()
        publishing.join()
    firsts = by_id(received)  # at least once: a redelivery (same id) counts once, where it first came
    assert len(firsts) == total
    for user_id in map(str, ids):
        names = [int(event["data"]["name"]) for event in firsts.values() if event["subject"] == user_id]
        assert names == list(range(rounds * workers + 1))


def test_broker_unreachable_then_reachable_everything_arrives(events_app, exchange, make_app):
    port = free_port()  # nothing listens there yet
    app = make_app(
        EVENTS_AMQP_URL=url_on_port(port), EVENTS_EXCHANGE=exchange.name, OUTBOX_POLL_INTERVAL_MS=10, MAIL_URL="none"
    )
    ids = make_users(app, 5)
    stop = threading.Event()
    publishing = threading.Thread(target=relay.run, args=(app, stop))
    publishing.start()
    forwarder = Forwarder(port)
    try:
        time.sleep(1.0)  # several connection attempts fail meanwhile
        assert counts(app) == {PENDING: 5}
        with app.app_context():
            waiting, age = relay.lag()
            assert waiting == 5 and age > 0.5
            metrics = outbox.backlog_exposition(app).decode()
        assert "auth_events_backlog 5.0" in metrics and "auth_events_lag_seconds" in metrics
        forwarder.open()
        assert len(by_id(exchange.drain(5, timeout=45))) == 5
        # The broker goes away again mid-stream, and comes back.
        forwarder.close()
        for n in range(50):
            rename(app, ids[n % 5], str(n + 1))  # names start at "0": each one a change
        time.sleep(0.5)
        forwarder.open()
        received = by_id(exchange.drain(50, timeout=45))
        assert len(received) == 50
        deadline = time.monotonic() + 10
        while counts(app) != {SENT: 55} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counts(app) == {SENT: 55}
    finally:
        stop.set()
        publishing.join()
        forwarder.close()


def test_relay_killed_mid_batch_loses_nothing(events_app, exchange, database_url, backend):
    ids = make_users(events_app, 20)
    for n in range(980):
        rename(events_app, ids[n % 20], str(n + 1))
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "DATABASE_URL": database_url,
        "EVENTS_AMQP_URL": BROKER_URL,
        "EVENTS_EXCHANGE": exchange.name,
        "EVENTS_BATCH_SIZE": "50",
        "OUTBOX_POLL_INTERVAL_MS": "10",
        "MAIL_URL": "none",
        "FLASK_APP": "wsgi",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "outbox", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        watch = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        channel = watch.channel()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:  # a millisecond per look
            if channel.queue_declare(exchange.queue, passive=True).method.message_count >= 100:
                break
        watch.close()
        assert worker.poll() is None, worker.stderr.read().decode()
        os.kill(worker.pid, signal.SIGKILL)  # no chance to finish its batch or mark anything
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.stderr.close()
    left = counts(events_app).get(PENDING, 0)
    assert 0 < left < 1000, "the kill must come mid-run"
    relay_until_idle(events_app)  # the next relay takes over (the lock died with its connection)
    received = by_id(exchange.drain(1000, timeout=60))
    assert len(received) == 1000
    assert counts(events_app) == {SENT: 1000}


def test_only_one_relay_publishes_at_a_time(events_app, backend):
    if backend == "sqlite":
        pytest.skip("SQLite: one worker, no lock (docs/OPERATIONS.md)")
    with events_app.app_context():
        first, second = relay.Leadership(), relay.Leadership()
        assert first.acquire()
        assert not second.acquire()
        first.release()
        assert second.acquire()
        second.release()


def test_waves_hold_at_most_one_event_per_user_in_order():
    batch = [relay.Pending(n, subject, "auth.user.updated", b"{}", str(n)) for n, subject in enumerate("aabacbb")]
    assert [[message.id for message in wave] for wave in relay.waves(batch)] == [[0, 2, 4], [1, 5], [3, 6]]


class RefusingPublisher:
    """A stand-in for a broker that refuses (basic.nack) one user's first event: a real broker
    cannot be made to nack on demand."""

    def __init__(self, refuse: str) -> None:
        self.refuse, self.published = refuse, []

    def publish_wave(self, wave, outcome) -> None:
        for message in wave:
            self.published.append(message.id)
            refused = message.subject == self.refuse and not outcome.nacked
            (outcome.nacked if refused else outcome.acked).append(message)


def test_a_refused_event_holds_back_that_users_later_events(events_app):
    first, second = make_users(events_app, 2)
    for n in range(3):
        rename(events_app, first, str(n + 1))
        rename(events_app, second, str(n + 1))
    publisher = RefusingPublisher(str(first))
    with events_app.app_context():
        relay.publish_batch(publisher, relay.due_events(100), events_app.config)
        # the refused event waits for its retry, and the user's later events wait behind it
        assert {message.subject for message in relay.due_events(100)} == set()
    assert counts(events_app) == {SENT: 4, PENDING: 4}
    with events_app.app_context():
        table = OutboxMessage.__table__
        waiting = db.session.execute(
            select(table.c.aggregate_id, table.c.last_error).where(table.c.status == PENDING)
        ).all()
    assert {row.aggregate_id for row in waiting} == {first}
    assert any(row.last_error and "nack" in row.last_error for row in waiting)


def readme_consumer() -> str:
    """The code between the consume-events markers of README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- consume-events -->\s*```python\n(.*?)```\s*<!-- /consume-events -->", text, re.S)
    assert match, "README.md lost its consume-events recipe"
    return match.group(1)


def test_readme_consumer_recipe_runs_as_written_and_dedupes_by_id(events_app, exchange, capsys):
    queue = f"test.readme.{uuid.uuid4().hex[:10]}"
    code = (
        readme_consumer()
        .replace("amqp://guest:guest@localhost:5672/%2F", BROKER_URL)
        .replace('"auth.events"', f'"{exchange.name}"')
        .replace('"profile-service.auth-events"', f'"{queue}"')
    )
    namespace: dict = {}
    consumer = threading.Thread(
        target=exec, args=(compile(code, "README.md#consume-events", "exec"), namespace), daemon=True
    )
    consumer.start()
    deadline = time.monotonic() + 10
    while "channel" not in namespace or not namespace["channel"].consumer_tags:
        assert time.monotonic() < deadline and consumer.is_alive(), "the recipe did not start consuming"
        time.sleep(0.02)
    try:
        client = events_app.test_client()
        body = Auth(client, events_app).signup()
        client.delete("/me", json={"password": PASSWORD}, headers=bearer(body["access_token"]))
        relay_until_idle(events_app)
        with events_app.app_context():  # a redelivery: the same event published again
            again = db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).first().payload
            db.session.rollback()
        publisher = relay.Publisher(BROKER_URL, exchange.name)
        publisher.publish_wave(
            [relay.Pending(0, again["subject"], again["type"], json.dumps(again).encode(), again["id"])],
            relay.Outcome(),
        )
        publisher.close()
        expected = [f"auth.user.created {body['user_id']}", f"auth.session.revoked {body['user_id']}",
                    f"auth.user.deleted {body['user_id']}"]  # fmt: skip
        deadline = time.monotonic() + 10
        printed: list[str] = []
        while time.monotonic() < deadline:
            printed += capsys.readouterr().out.splitlines()
            if len(printed) >= len(expected) and len(namespace["seen"]) == len(expected):
                time.sleep(0.5)  # time for the duplicate to arrive (and be ignored)
                printed += capsys.readouterr().out.splitlines()
                break
            time.sleep(0.02)
        assert [line for line in printed if line.startswith("auth.")] == expected
    finally:
        namespace["connection"].add_callback_threadsafe(namespace["channel"].stop_consuming)
        consumer.join(10)
        namespace["connection"].close()
        with pika.BlockingConnection(pika.URLParameters(BROKER_URL)) as connection:
            connection.channel().queue_delete(queue)


def test_flask_outbox_run_once_publishes_the_events_too(events_app, exchange):
    make_users(events_app, 3)
    result = events_app.test_cli_runner().invoke(args=["outbox", "run", "--once"])
    assert result.exit_code == 0, result.output
    assert len(by_id(exchange.drain(3))) == 3
    assert counts(events_app) == {SENT: 3}


def test_in_process_delivery_relays_events_as_well(events_app, exchange):
    stop = outbox.start_in_process(events_app)  # make run's way: threads of the app itself
    try:
        make_users(events_app, 2)
        assert len(by_id(exchange.drain(2, timeout=15))) == 2
    finally:
        stop.set()
        events_app.extensions.pop("outbox_thread")


def test_a_held_users_backlog_does_not_starve_the_others(events_app):
    first, second = make_users(events_app, 2)
    for n in range(30):
        rename(events_app, first, str(n + 1))
    rename(events_app, second, "1")
    with events_app.app_context():  # the first user's oldest waits for a retry
        table = OutboxMessage.__table__
        oldest = db.session.scalar(select(func.min(table.c.id)).where(table.c.aggregate_id == first))
        db.session.execute(
            table.update().where(table.c.id == oldest).values(next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
        )
        db.session.commit()
        due = relay.due_events(10)
    assert {message.subject for message in due} == {str(second)} and len(due) == 2


def test_flask_outbox_status_shows_the_events_lag(events_app):
    make_users(events_app, 2)
    result = events_app.test_cli_runner().invoke(args=["outbox", "status"])
    assert result.exit_code == 0, result.output
    assert "events pending 2  lag " in result.output

"""The outbox: written with the change, delivered by the worker, retried, dead-lettered, claimed safely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.extensions import db
from app.models import OutboxMessage, utcnow
from app.services import outbox
from tests.smtp import SMTPServer, deliver, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def queue(app, count: int = 1, link: str = "https://x/reset?token=SECRET-TOKEN") -> None:
    """Write `count` reset mails to the outbox."""
    with app.app_context():
        for index in range(count):
            outbox.enqueue_mail(
                "password_reset",
                to=f"user{index}@example.com",
                context={"name": "U", "link": link, "expires_in": "1 hour"},
                user_id=None,
                secrets=("link",),
            )
        db.session.commit()


def rows(app) -> list[OutboxMessage]:
    """Every outbox row."""
    with app.app_context():
        found = db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        db.session.expunge_all()
        return list(found)


def test_a_queued_mail_is_delivered_once_and_its_secret_blanked(mail_app, smtp_server):
    queue(mail_app)
    assert deliver(mail_app) == 1
    (message,) = smtp_server.inbox.wait(1)
    assert "SECRET-TOKEN" in message.get_body(preferencelist=("plain",)).get_content()
    (row,) = rows(mail_app)
    assert row.status == "sent" and row.attempts == 1 and row.sent_at is not None
    assert "SECRET-TOKEN" not in str(row.payload)
    assert deliver(mail_app) == 0 and len(smtp_server.inbox.messages) == 1


def test_smtp_down_then_up_the_mail_arrives(make_app):
    port = free_port()
    app = make_app(MAIL_URL=f"smtp+plain://127.0.0.1:{port}", OUTBOX_RETRY_DELAY=1, MAIL_TIMEOUT=2)
    queue(app)
    assert deliver(app) == 1  # refused: the server is down
    (row,) = rows(app)
    assert row.status == "pending" and row.attempts == 1
    assert "ConnectionRefusedError" in row.last_error and "SECRET-TOKEN" not in row.last_error
    assert row.next_attempt_at > utcnow()
    server = SMTPServer(port=port).start()
    try:
        with app.app_context():
            db.session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))
            db.session.commit()
        assert deliver(app) == 1
        assert len(server.inbox.wait(1)) == 1
        assert rows(app)[0].status == "sent"
    finally:
        server.stop()


def test_backoff_doubles_up_to_the_cap(app):
    with app.app_context():
        waits = [outbox.backoff(attempt).total_seconds() for attempt in (1, 2, 3, 10, 20)]
    assert 27 <= waits[0] <= 33 and 54 <= waits[1] <= 66 and 108 <= waits[2] <= 132
    assert 3240 <= waits[3] <= 3960 and 3240 <= waits[4] <= 3960


def test_a_message_is_dead_after_max_attempts_and_retry_revives_it(make_app, runner):
    port = free_port()
    app = make_app(MAIL_URL=f"smtp+plain://127.0.0.1:{port}", OUTBOX_MAX_ATTEMPTS=3, MAIL_TIMEOUT=2)
    queue(app)
    for _attempt in range(3):
        with app.app_context():
            db.session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))
            db.session.commit()
        deliver(app)
    (row,) = rows(app)
    assert (row.status, row.attempts) == ("dead", 3)
    status = app.test_cli_runner().invoke(args=["outbox", "status"])
    assert "pending 0  dead 1" in status.output, status.output
    server = SMTPServer(port=port).start()
    try:
        retried = app.test_cli_runner().invoke(args=["outbox", "retry"])
        assert "1 dead message(s) pending again" in retried.output
        assert deliver(app) == 1 and len(server.inbox.wait(1)) == 1
    finally:
        server.stop()


def test_status_shows_the_backlog_and_the_oldest_age(app):
    queue(app, 2)
    with app.app_context():
        db.session.execute(update(OutboxMessage).values(created_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()
        backlog = outbox.status()
    assert backlog.pending == 2 and backlog.dead == 0
    assert 299 <= backlog.oldest_pending_age <= 330


def test_a_crashed_claim_is_retaken_after_its_lease(make_app, smtp_server):
    """A worker that claimed and died before sending: the mail is late by the lease, not lost."""
    app = make_app(MAIL_URL=smtp_server.url(), OUTBOX_LEASE=1)
    queue(app)
    with app.app_context():
        (claimed,) = outbox.claim()  # ... and the worker dies here
        assert outbox.claim() == []  # under its lease nobody else takes it
    time.sleep(1.2)
    assert deliver(app) == 1
    assert len(smtp_server.inbox.wait(1)) == 1
    (row,) = rows(app)
    assert row.status == "sent" and row.attempts == 2


def test_a_worker_whose_lease_ran_out_does_not_overwrite_the_new_owner(make_app, smtp_server):
    app = make_app(MAIL_URL=smtp_server.url(), OUTBOX_LEASE=1)
    queue(app)
    with app.app_context():
        (slow,) = outbox.claim()
    time.sleep(1.2)
    with app.app_context():
        (fast,) = outbox.claim()
        assert outbox.process(fast) is True
        assert outbox.process(slow) is False  # it sent a duplicate (at least once) but records nothing
    (row,) = rows(app)
    assert row.status == "sent" and row.claim_id is None


def test_two_workers_never_claim_one_message(make_app, smtp_server, backend):
    """Workers claiming at once take disjoint sets (SKIP LOCKED on PostgreSQL/MariaDB; SQLite serializes)."""
    app = make_app(MAIL_URL=smtp_server.url(), OUTBOX_BATCH_SIZE=5)
    queue(app, 40)
    taken: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(index: int) -> None:
        try:
            start.wait()
            with app.app_context():
                while batch := outbox.claim():
                    taken[index].extend(message.id for message in batch)
                    for message in batch:
                        outbox.process(message)
                db.session.remove()
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if backend == "sqlite":
        # SQLite may refuse a concurrent writer ("database is locked"); never a double claim.
        errors = [error for error in errors if "locked" not in str(error)]
    assert errors == []
    everything = [message_id for ids in taken for message_id in ids]
    assert len(everything) == len(set(everything)), "a message was claimed twice"
    deliver(app)  # whatever a refused worker left
    assert len(smtp_server.inbox.wait(40)) == 40
    assert sorted(message["To"] for message in smtp_server.inbox.messages) == sorted(
        f"user{index}@example.com" for index in range(40)
    )


def test_release_gives_back_what_a_stopping_worker_did_not_try(app):
    queue(app, 3)
    stop = threading.Event()
    stop.set()
    with app.app_context():
        assert outbox.run_once(stop=stop) == 3
    assert [(row.status, row.attempts, row.claim_id) for row in rows(app)] == [("pending", 0, None)] * 3


def test_an_unknown_kind_fails_like_any_delivery(app):
    with app.app_context():
        outbox.enqueue("carrier-pigeon", "coo", {"x": 1})
        db.session.commit()
        (message,) = outbox.claim()
        assert outbox.process(message) is False
    assert "no handler" in rows(app)[0].last_error


def test_backlog_metrics(app, client):
    queue(app, 2)
    text = client.get("/metrics").get_data(as_text=True)
    assert "auth_outbox_backlog 2.0" in text
    assert "auth_outbox_dead 0.0" in text and "auth_outbox_oldest_age_seconds" in text


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_the_worker_process_delivers_and_stops_or_dies(database_url, smtp_server, how, tmp_path):
    """`flask outbox run` as its own process: SIGTERM stops it cleanly; SIGKILL between claim and send
    loses nothing (another worker sends it once the lease ends: at least once)."""
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("MAIL_", "OUTBOX_"))},
        "APP_ENV": "testing",
        "DATABASE_URL": database_url,
        "FLASK_APP": "wsgi",
        "MAIL_URL": smtp_server.url(),
        "OUTBOX_POLL_INTERVAL_MS": "50",
        "OUTBOX_LEASE": "2",
    }
    from tests.conftest import make_test_app

    app = make_test_app(database_url, MAIL_URL=smtp_server.url(), OUTBOX_LEASE=2)
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    queue(app)
    if how == "sigkill":
        with app.app_context():
            assert len(outbox.claim()) == 1  # a worker that dies holding the claim, before sending
    worker = subprocess.Popen([flask, "outbox", "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert smtp_server.inbox.wait(1, timeout=30), "the worker delivered nothing"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the row is marked sent just after the SMTP answer
            with app.app_context():
                if outbox.status().sent == 1:
                    break
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        code = worker.wait(20)
        output = worker.stderr.read()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stderr.close()
    if how == "sigterm":
        assert code == 0, output
        assert "stopped" in output
    assert len(smtp_server.inbox.messages) == 1
    with app.app_context():
        statuses = db.session.scalars(select(OutboxMessage.status).where(OutboxMessage.kind == "mail")).all()
        db.session.execute(OutboxMessage.__table__.delete())
        db.session.commit()
        db.engine.dispose()
    assert statuses == ["sent"]


def test_in_process_delivery_starts_with_the_first_request_only_when_asked(app, client, make_app, smtp_server):
    client.get("/health")
    assert "outbox_thread" not in app.extensions  # the suite's apps never start it
    dev = make_app(MAIL_URL=smtp_server.url(), OUTBOX_IN_PROCESS="true", OUTBOX_POLL_INTERVAL_MS=50)
    queue(dev)
    dev.test_client().get("/health")
    thread, stop = dev.extensions["outbox_thread"]
    try:
        assert smtp_server.inbox.wait(1, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()

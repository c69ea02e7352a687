"""The transactional outbox: write a message in the transaction of its change; deliver it later.

Producers call enqueue() (or enqueue_mail()) before they commit, so a message exists exactly
when its change does: a failed mail server can never roll the change back or fail the request.
`flask outbox run` (or, in development, a thread in the app: start_in_process) delivers:

1. claim(): take up to OUTBOX_BATCH_SIZE due messages with a lease (claim_id, claimed_until).
   `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL and MariaDB 10.6+ lets workers pass each
   other's rows; the conditional UPDATE that writes the lease is what decides, so on SQLite
   (one writer at a time) two workers cannot take one row either.
2. the kind's handler delivers it (mail: render and send over SMTP; task: run it in this
   transaction); then the row is marked sent, *only if the lease is still ours*, and the
   payload's secrets are blanked.
3. a failure schedules the next attempt with exponential backoff (OUTBOX_RETRY_DELAY doubling,
   up to OUTBOX_RETRY_MAX_DELAY, ±10% jitter); after OUTBOX_MAX_ATTEMPTS the message is dead
   (`flask outbox retry` makes it pending again).

Delivery is at least once: a worker that dies after the SMTP server accepted a mail and before
it marked the row sent leaves the row claimed; its lease ends (OUTBOX_LEASE) and another worker
sends it again. The Message-ID is fixed at enqueue time, so the copies carry the same one.
A crash before the send only delays the mail by the lease. Tasks (kind "task") write to the
database in the transaction that marks them sent, so their effects happen exactly once.

`aggregate_id` (the user) is recorded for kinds that must keep one subject's order (the events
publisher will claim per aggregate); mail needs no order and is claimed oldest first.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import ColumnElement, Table, delete, func, or_, select, update

from app.extensions import db, execute_dml
from app.models import OutboxMessage, utcnow
from app.models.outbox import DEAD, PENDING, SENT

log = logging.getLogger(__name__)

MAIL, TASK = "mail", "task"
REDACTED = "[redacted]"

DELIVERIES = Counter("auth_outbox_deliveries_total", "Outbox delivery attempts by result", ["kind", "result"])


@dataclass(frozen=True)
class Claimed:
    """A claimed message, detached from the ORM session (which commits under it)."""

    id: int
    kind: str
    topic: str
    aggregate_id: uuid.UUID | None
    payload: dict[str, Any]
    attempts: int
    claim_id: str


@dataclass(frozen=True)
class Handler:
    """How one kind of message is delivered, and what of its payload must not outlive delivery."""

    deliver: Callable[[Claimed], None]
    redact: Callable[[dict[str, Any]], dict[str, Any]]


def enqueue(kind: str, topic: str, payload: dict[str, Any], *, aggregate_id: uuid.UUID | None = None) -> None:
    """Add a message to the current transaction; the caller commits it with its change."""
    now = utcnow()
    db.session.add(
        OutboxMessage(
            kind=kind,
            topic=topic,
            aggregate_id=aggregate_id,
            payload=payload,
            status=PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
    )


def enqueue_mail(
    template: str,
    *,
    to: str,
    context: dict[str, Any],
    user_id: uuid.UUID | None,
    secrets: tuple[str, ...] = (),
) -> None:
    """Queue a mail from `template` to `to`; `secrets` name context values blanked once it is sent.

    A link with a token must travel in the payload until the mail is sent: the row holds it
    for that long (the database already guards the account), and the token is single use and
    expiring anyway. Once delivered, the payload keeps no secret.
    """
    from app.services import mail

    payload = {
        "template": template,
        "to": to,
        "context": context,
        "secrets": list(secrets),
        "message_id": mail.new_message_id(),
    }
    enqueue(MAIL, template, payload, aggregate_id=user_id)


def _deliver_mail(message: Claimed) -> None:
    """Render the mail and hand it to the SMTP server."""
    from app.services import mail

    payload = message.payload
    mail.send(
        mail.render(payload["template"], to=payload["to"], context=payload["context"], message_id=payload["message_id"])
    )


def _redact_mail(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without its secrets (the link with a token)."""
    hidden = set(payload.get("secrets", ()))
    context = {key: (REDACTED if key in hidden else value) for key, value in payload.get("context", {}).items()}
    return {**payload, "context": context}


def _run_task(message: Claimed) -> None:
    """Run a task in the current transaction (marked sent in the same commit)."""
    from app.services import recovery

    tasks = {"password_forgot": recovery.run_password_forgot}
    tasks[message.topic](message.payload)


def _redact_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Tasks keep nothing after they ran (a typed address, for instance)."""
    return {}


HANDLERS: dict[str, Handler] = {
    MAIL: Handler(_deliver_mail, _redact_mail),
    TASK: Handler(_run_task, _redact_task),
}


def _secret_values(payload: dict[str, Any]) -> list[str]:
    """The strings a failure message must not repeat."""
    values = [str(payload.get("context", {}).get(key)) for key in payload.get("secrets", ())]
    mail_url = current_app.config.get("MAIL_URL") or ""
    if "@" in mail_url and ":" in mail_url.split("://", 1)[-1].split("@", 1)[0]:
        values.append(mail_url.split("://", 1)[-1].split("@", 1)[0].split(":", 1)[1])
    return [value for value in values if value and value != "None"]


def scrub(text: str, payload: dict[str, Any]) -> str:
    """An error text fit to store: no secret of the payload, no SMTP password, bounded."""
    for secret in _secret_values(payload):
        text = text.replace(secret, REDACTED)
    return text[:500]


def backoff(attempts: int) -> timedelta:
    """The wait before attempt `attempts + 1`: doubling from OUTBOX_RETRY_DELAY, capped, ±10%."""
    config = current_app.config
    delay = min(config["OUTBOX_RETRY_DELAY"] * 2 ** max(attempts - 1, 0), config["OUTBOX_RETRY_MAX_DELAY"])
    return timedelta(seconds=delay * random.uniform(0.9, 1.1))


def claim(*, now: datetime | None = None, limit: int | None = None) -> list[Claimed]:
    """Take up to `limit` due messages under a new lease; commits. Several workers may call this at once."""
    config = current_app.config
    now = now or utcnow()
    table = OutboxMessage.__table__
    claimable = (table.c.status == PENDING, table.c.next_attempt_at <= now, _unclaimed(table, now))
    due = select(table.c.id).where(*claimable).order_by(table.c.next_attempt_at, table.c.id)
    due = due.limit(limit or config["OUTBOX_BATCH_SIZE"])
    if db.engine.dialect.name in ("postgresql", "mysql"):
        due = due.with_for_update(skip_locked=True)
    try:
        ids: Sequence[int] = db.session.scalars(due).all()
        if not ids:
            db.session.rollback()
            return []
        claim_id = uuid.uuid4().hex
        db.session.execute(
            update(table)
            .where(table.c.id.in_(ids), *claimable)
            .values(claim_id=claim_id, claimed_until=now + timedelta(seconds=config["OUTBOX_LEASE"]),
                    attempts=table.c.attempts + 1)
        )  # fmt: skip
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    rows = db.session.execute(select(table).where(table.c.claim_id == claim_id).order_by(table.c.id)).all()
    db.session.rollback()
    return [
        Claimed(row.id, row.kind, row.topic, row.aggregate_id, dict(row.payload), row.attempts, claim_id)
        for row in rows
    ]


def _unclaimed(table: Table, now: datetime) -> ColumnElement[bool]:
    """Not under a live lease (never claimed, or the claimer's lease ran out)."""
    return or_(table.c.claimed_until.is_(None), table.c.claimed_until < now)


def _ours(table: Table, message: Claimed) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The row is still under this claim (a lapsed lease may have passed it to another worker)."""
    return (table.c.id == message.id, table.c.claim_id == message.claim_id)


def process(message: Claimed) -> bool:
    """Deliver one claimed message and record the outcome; commits. True when it was delivered."""
    table = OutboxMessage.__table__
    handler = HANDLERS.get(message.kind)
    try:
        if handler is None:
            raise LookupError(f"no handler for outbox kind {message.kind!r}")
        handler.deliver(message)
        done = execute_dml(
            update(table)
            .where(*_ours(table, message))
            .values(status=SENT, sent_at=utcnow(), payload=handler.redact(message.payload), claim_id=None,
                    claimed_until=None, last_error=None)
        )  # fmt: skip
        if done != 1:
            # Our lease ran out and another worker took the row: its outcome stands.
            db.session.rollback()
            log.warning("outbox message %s: lease lost while delivering", message.id)
            return False
        db.session.commit()
    except Exception as error:
        db.session.rollback()
        _record_failure(message, error)
        return False
    DELIVERIES.labels(message.kind, "sent").inc()
    return True


def _record_failure(message: Claimed, error: Exception) -> None:
    """Schedule the next attempt, or mark the message dead after OUTBOX_MAX_ATTEMPTS; commits."""
    table = OutboxMessage.__table__
    reason = scrub(f"{type(error).__name__}: {error}", message.payload)
    dead = message.attempts >= current_app.config["OUTBOX_MAX_ATTEMPTS"]
    values: dict[str, Any] = {"claim_id": None, "claimed_until": None, "last_error": reason}
    if dead:
        values["status"] = DEAD
    else:
        values["next_attempt_at"] = utcnow() + backoff(message.attempts)
    db.session.execute(update(table).where(*_ours(table, message)).values(**values))
    db.session.commit()
    DELIVERIES.labels(message.kind, "dead" if dead else "failed").inc()
    log.warning(
        "outbox message %s (%s %s) attempt %s failed%s: %s",
        message.id, message.kind, message.topic, message.attempts, ", now dead" if dead else "", reason,
    )  # fmt: skip


def release(messages: list[Claimed]) -> None:
    """Give back claimed messages not tried (a worker stopping); commits."""
    table = OutboxMessage.__table__
    for message in messages:
        db.session.execute(
            update(table)
            .where(*_ours(table, message))
            .values(claim_id=None, claimed_until=None, attempts=table.c.attempts - 1)
        )
    db.session.commit()


def run_once(*, stop: threading.Event | None = None) -> int:
    """Claim one batch and deliver it; return how many messages were claimed."""
    batch = claim()
    for index, message in enumerate(batch):
        if stop is not None and stop.is_set():
            release(batch[index:])
            break
        process(message)
    return len(batch)


def run(app: Flask, stop: threading.Event) -> None:
    """Deliver until `stop` is set: batches back to back while there is work, a poll interval when idle."""
    interval = app.config["OUTBOX_POLL_INTERVAL"]
    failures = 0
    while not stop.is_set():
        try:
            with app.app_context():
                claimed = run_once(stop=stop)
            failures = 0
        except Exception:
            # The database is down, most likely: wait longer each time, up to a minute.
            failures += 1
            log.exception("outbox worker: claiming failed (%s in a row)", failures)
            claimed = 0
            stop.wait(min(interval * 2**failures, 60))
        if not claimed:
            stop.wait(interval)


@dataclass(frozen=True)
class Backlog:
    """What `flask outbox status` and the metrics show."""

    pending: int
    dead: int
    sent: int
    oldest_pending_age: float | None


def status(now: datetime | None = None) -> Backlog:
    """Counts by state and the age of the oldest pending message, in seconds."""
    now = now or utcnow()
    table = OutboxMessage.__table__
    query = select(table.c.status, func.count()).group_by(table.c.status)
    counts: dict[str, int] = {str(status): cast(int, count) for status, count in db.session.execute(query)}
    oldest = db.session.scalar(select(func.min(table.c.created_at)).where(table.c.status == PENDING))
    return Backlog(
        pending=counts.get(PENDING, 0),
        dead=counts.get(DEAD, 0),
        sent=counts.get(SENT, 0),
        oldest_pending_age=(now - oldest).total_seconds() if oldest is not None else None,
    )


def retry_dead(*, message_id: int | None = None) -> int:
    """Make dead messages pending again with a fresh count of attempts; commits; return how many."""
    table = OutboxMessage.__table__
    query = update(table).where(table.c.status == DEAD)
    if message_id is not None:
        query = query.where(table.c.id == message_id)
    count = execute_dml(query.values(status=PENDING, attempts=0, next_attempt_at=utcnow()))
    db.session.commit()
    return count


def purge_sent(*, older_than: timedelta = timedelta(days=7)) -> int:
    """Delete messages sent longer ago than `older_than`; commits; return how many."""
    table = OutboxMessage.__table__
    deleted = execute_dml(delete(table).where(table.c.status == SENT, table.c.sent_at < utcnow() - older_than))
    db.session.commit()
    return deleted


class BacklogCollector:
    """Prometheus gauges read from the outbox table at scrape time (any process sees the same backlog)."""

    def __init__(self, app: Flask) -> None:
        """Remember the app whose database to read."""
        self.app = app

    def collect(self) -> Iterator[Metric]:
        """auth_outbox_backlog, auth_outbox_dead, auth_outbox_oldest_age_seconds."""
        try:
            with self.app.app_context():
                backlog = status()
        except Exception:
            log.warning("outbox metrics: the database did not answer", exc_info=True)
            return
        yield GaugeMetricFamily("auth_outbox_backlog", "Outbox messages waiting for delivery", value=backlog.pending)
        yield GaugeMetricFamily(
            "auth_outbox_dead", "Outbox messages given up on (flask outbox retry)", value=backlog.dead
        )
        yield GaugeMetricFamily(
            "auth_outbox_oldest_age_seconds",
            "Age of the oldest message waiting for delivery (0 when none)",
            value=backlog.oldest_pending_age or 0.0,
        )


def backlog_exposition(app: Flask) -> bytes:
    """The backlog gauges in the Prometheus text format, for /metrics."""
    registry = CollectorRegistry()
    registry.register(BacklogCollector(app))
    return generate_latest(registry)


_in_process_lock = threading.Lock()


def start_in_process(app: Flask) -> threading.Event | None:
    """Start the delivery loop on a daemon thread of this process, once (development, OUTBOX_IN_PROCESS).

    Called from the first request, not at app creation: gunicorn forks after loading and
    `flask` commands never serve, so neither starts a thread that would die or idle.
    """
    with _in_process_lock:
        if app.extensions.get("outbox_thread") is not None:
            return None
        stop = threading.Event()
        thread = threading.Thread(target=run, args=(app, stop), name="outbox", daemon=True)
        app.extensions["outbox_thread"] = (thread, stop)
        thread.start()
    log.info("outbox: delivering in-process (OUTBOX_IN_PROCESS)")
    return stop

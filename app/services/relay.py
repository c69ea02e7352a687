"""The events relay: the outbox's events published to RabbitMQ, in order, at least once.

`flask outbox run` runs it on a thread beside mail delivery when EVENTS_AMQP_URL is set.

- One relay publishes at a time: it holds a database lock (PostgreSQL `pg_try_advisory_lock`,
  MariaDB `GET_LOCK`) on a connection of its own for as long as it runs; the other workers'
  relays wait and take over within a poll interval of its end (a crash closes the connection,
  and the lock goes with it). With SQLite, run one worker.
- It reads pending events in outbox id order (one user's events are in commit order there:
  app/services/events.py) and publishes them to EVENTS_EXCHANGE, a durable topic exchange, as
  persistent messages (delivery_mode 2) with the routing key `type` without `auth.`.
- Publisher confirms, batched: a batch is published in waves, each wave holding at most one
  event of each user, and the next wave goes out only when the broker has confirmed the whole
  wave. So a user's later event is never published while an earlier one is unconfirmed, and a
  burst over many users costs one confirm round trip per batch, not per event.
- An event is marked sent only once the broker confirmed it. A relay that dies between the
  confirm and the mark leaves it pending, and the next one publishes it again with the same
  `id`: at least once, and consumers deduplicate by `id` (the README's recipe). A negative
  confirm retries the event after a backoff, and holds back that user's later events meanwhile.
- The broker unreachable: nothing is marked, the relay reconnects on its own with exponential
  backoff (OUTBOX_POLL_INTERVAL doubling, up to 30 s, ±10%), and the events wait in the outbox.
  Their lag is a metric (auth_events_lag_seconds, app/services/outbox.py).

pika's BlockingConnection confirms each publish before the next returns (~1,200/s here); the
relay publishes a wave through the connection's underlying asynchronous channel instead and
waits for its confirms together (~8,000/s; bench/relay.py), pika being pinned for that reason.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pika
from flask import Flask
from pika.exceptions import AMQPError
from prometheus_client import Counter, Gauge
from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection

from app.extensions import db
from app.models import OutboxMessage, utcnow
from app.models.outbox import PENDING, SENT
from app.services import events

log = logging.getLogger(__name__)

LOCK_NAME = "auth.events.relay"
LOCK_KEY = 0x61757468_6576  # pg_try_advisory_lock's bigint: "auth" "ev"
CONFIRM_TIMEOUT = 30.0  # seconds without a confirm before the connection is taken for dead
MAX_RECONNECT_DELAY = 30.0

PUBLISHED = Counter("auth_events_published_total", "Events confirmed by the broker", ["type"])
NACKED = Counter("auth_events_nacked_total", "Events the broker refused (retried)")
CONNECTED = Gauge("auth_events_relay_connected", "1 while this process's relay holds a broker connection")


class BrokerGone(RuntimeError):
    """The broker connection failed or stopped confirming: reconnect, publish again."""


@dataclass(frozen=True)
class Pending:
    """An event row to publish."""

    id: int
    subject: str
    type: str
    body: bytes
    event_id: str


@dataclass
class Outcome:
    """What the broker said about a batch."""

    acked: list[Pending] = field(default_factory=list)
    nacked: list[Pending] = field(default_factory=list)


class Publisher:
    """One broker connection in confirm mode, publishing waves of events."""

    def __init__(self, url: str, exchange: str) -> None:
        """Connect, declare the exchange (durable topic) and turn on publisher confirms."""
        parameters = pika.URLParameters(url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = 5
        parameters.blocked_connection_timeout = CONFIRM_TIMEOUT
        self.exchange = exchange
        self.connection = pika.BlockingConnection(parameters)
        try:
            channel = self.connection.channel()
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            # The asynchronous channel under the blocking one: its basic_publish does not wait,
            # and confirms arrive on our callback while process_data_events runs.
            self._channel = channel._impl
            self._channel.confirm_delivery(self._on_confirm)
            self.connection.process_data_events(0)
        except BaseException:
            self.close()
            raise
        self._tag = 0
        self._unconfirmed: dict[int, Pending] = {}
        self._outcome = Outcome()

    def _on_confirm(self, frame: Any) -> None:
        """Basic.Ack / Basic.Nack, for one delivery tag or (multiple) every tag up to it."""
        method = frame.method
        tags = [method.delivery_tag]
        if method.multiple:
            tags = [tag for tag in self._unconfirmed if tag <= method.delivery_tag]
        into = self._outcome.acked if isinstance(method, pika.spec.Basic.Ack) else self._outcome.nacked
        for tag in sorted(tags):
            message = self._unconfirmed.pop(tag, None)
            if message is not None:
                into.append(message)

    def publish_wave(self, wave: list[Pending], outcome: Outcome) -> None:
        """Publish `wave` and wait until the broker confirmed (or refused) each; raises BrokerGone."""
        self._outcome = outcome
        try:
            for message in wave:
                properties = pika.BasicProperties(
                    delivery_mode=2,  # persistent
                    content_type="application/cloudevents+json; charset=utf-8",
                    message_id=message.event_id,
                    type=message.type,
                    app_id="auth",
                )
                self._channel.basic_publish(self.exchange, events.routing_key(message.type), message.body, properties)
                self._tag += 1
                self._unconfirmed[self._tag] = message
            deadline = time.monotonic() + CONFIRM_TIMEOUT
            while self._unconfirmed:
                if time.monotonic() > deadline:
                    raise BrokerGone(f"no confirm from the broker in {CONFIRM_TIMEOUT:.0f}s")
                self.connection.process_data_events(0.002)
        except AMQPError as error:
            raise BrokerGone(f"{type(error).__name__}: {error}") from error
        except OSError as error:
            raise BrokerGone(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        """Close the connection, quietly: it may be dead already."""
        try:
            if self.connection.is_open:
                self.connection.close()
        except Exception:  # closing a broken connection is allowed to fail
            pass


def waves(batch: list[Pending]) -> list[list[Pending]]:
    """Wave n holds the n-th event of each user: at most one event of a user per wave, in order."""
    per_subject: dict[str, list[Pending]] = {}
    for message in batch:
        per_subject.setdefault(message.subject, []).append(message)
    longest = max((len(messages) for messages in per_subject.values()), default=0)
    return [[messages[n] for messages in per_subject.values() if len(messages) > n] for n in range(longest)]


def due_events(limit: int, *, pages: int = 10) -> list[Pending]:
    """The next events to publish, in outbox id order; a user whose oldest is waiting for a retry waits whole.

    Rows of held users do not fill the batch: up to `pages` pages are read to find `limit` due ones.
    """
    table = OutboxMessage.__table__
    now = utcnow()
    held: set[str] = set()
    batch: list[Pending] = []
    after = 0
    for _ in range(pages):
        rows = db.session.execute(
            select(table.c.id, table.c.aggregate_id, table.c.topic, table.c.payload, table.c.next_attempt_at)
            .where(table.c.kind == events.EVENT, table.c.status == PENDING, table.c.id > after)
            .order_by(table.c.id)
            .limit(limit)
        ).all()
        db.session.rollback()
        for row in rows:
            subject = str(row.aggregate_id)
            if subject in held:
                continue
            if row.next_attempt_at > now:
                held.add(subject)
                continue
            body = json.dumps(row.payload, sort_keys=True, separators=(",", ":")).encode()
            batch.append(Pending(row.id, subject, row.topic, body, row.payload["id"]))
        if len(rows) < limit or len(batch) >= limit:
            break
        after = rows[-1].id
    return batch[:limit]


def record(outcome: Outcome, config: Mapping[str, Any]) -> None:
    """Mark the confirmed events sent and schedule the refused ones again; commits."""
    table = OutboxMessage.__table__
    now = utcnow()
    acked = [message.id for message in outcome.acked]
    for start in range(0, len(acked), 500):
        db.session.execute(
            update(table)
            .where(table.c.id.in_(acked[start : start + 500]))
            .values(status=SENT, sent_at=now, attempts=table.c.attempts + 1, last_error=None)
        )
    for message in outcome.nacked:
        attempts = db.session.scalar(select(table.c.attempts).where(table.c.id == message.id)) or 0
        delay = min(config["OUTBOX_RETRY_DELAY"] * 2**attempts, config["OUTBOX_RETRY_MAX_DELAY"])
        db.session.execute(
            update(table)
            .where(table.c.id == message.id)
            .values(attempts=attempts + 1, next_attempt_at=now + timedelta(seconds=delay),
                    last_error="refused by the broker (basic.nack)")
        )  # fmt: skip
    db.session.commit()
    for message in outcome.acked:
        PUBLISHED.labels(message.type).inc()
    NACKED.inc(len(outcome.nacked))
    if outcome.nacked:
        log.warning("events relay: the broker refused %s event(s); retrying them later", len(outcome.nacked))


def publish_batch(publisher: Publisher, batch: list[Pending], config: Mapping[str, Any]) -> Outcome:
    """Publish a batch wave by wave; a user with a refused event sits out the rest of the batch.

    What was confirmed before a failure is recorded before BrokerGone goes on up.
    """
    outcome = Outcome()
    refused: set[str] = set()
    try:
        for wave in waves(batch):
            wave = [message for message in wave if message.subject not in refused]
            if wave:
                publisher.publish_wave(wave, outcome)
                refused.update(message.subject for message in outcome.nacked)
    finally:
        if outcome.acked or outcome.nacked:
            record(outcome, config)
    return outcome


class Leadership:
    """The database lock that makes this relay the only one publishing."""

    def __init__(self) -> None:
        """Not held yet."""
        self.connection: Connection | None = None

    def acquire(self) -> bool:
        """Try to take the lock (no waiting); True when this relay holds it."""
        if self.connection is not None:
            return self.alive()
        connection = db.engine.connect()
        try:
            dialect = connection.dialect.name
            if dialect == "postgresql":
                held = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}).scalar()
            elif dialect == "mysql":
                held = connection.execute(text("SELECT GET_LOCK(:name, 0)"), {"name": LOCK_NAME}).scalar() == 1
            else:
                held = True  # SQLite: one worker (docs/OPERATIONS.md)
            connection.commit()
        except BaseException:
            connection.close()
            raise
        if not held:
            connection.close()
            return False
        self.connection = connection
        return True

    def alive(self) -> bool:
        """The lock's connection still answers (a lost connection has lost the lock)."""
        if self.connection is None:
            return False
        try:
            self.connection.execute(text("SELECT 1"))
            self.connection.commit()
            return True
        except Exception:
            self.release()
            return False

    def release(self) -> None:
        """Let go of the lock (closing its connection does it on every database)."""
        if self.connection is not None:
            try:
                self.connection.invalidate()  # never back to the pool with the lock on it
                self.connection.close()
            except Exception:  # a broken connection: the server dropped the lock already
                pass
            self.connection = None


def reconnect_delay(failures: int, interval: float) -> float:
    """Exponential backoff from the poll interval, capped, with ±10% jitter."""
    return float(min(interval * 2**failures, MAX_RECONNECT_DELAY) * random.uniform(0.9, 1.1))


def run(
    app: Flask, stop: threading.Event, *, until_idle: bool = False, connect: Callable[[], Publisher] | None = None
) -> int:
    """Publish events until `stop` is set (or, `until_idle`, until none is pending); return how many.

    Any failure (the broker, the database) drops the connection and tries again after a
    backoff; nothing is marked sent that the broker did not confirm.
    """
    config = app.config
    interval = config["OUTBOX_POLL_INTERVAL"]
    connect = connect or (lambda: Publisher(config["EVENTS_AMQP_URL"], config["EVENTS_EXCHANGE"]))
    leadership = Leadership()
    publisher: Publisher | None = None
    failures = 0
    published = 0
    try:
        while not stop.is_set():
            try:
                with app.app_context():
                    if not leadership.acquire():
                        if until_idle:
                            break  # another worker's relay publishes: nothing for us to finish
                        stop.wait(interval)  # another worker's relay publishes
                        continue
                    batch = due_events(config["EVENTS_BATCH_SIZE"])
                    if batch:
                        if publisher is None:
                            publisher = connect()
                            CONNECTED.set(1)
                            log.info("events relay: connected to the broker")
                        published += len(publish_batch(publisher, batch, config).acked)
                    failures = 0
            except Exception as error:  # the broker or the database: back off, reconnect, go on
                failures += 1
                if publisher is not None:
                    publisher.close()
                    publisher = None
                    CONNECTED.set(0)
                delay = reconnect_delay(failures, interval)
                log.warning("events relay: %s: %s (attempt %s; again in %.1fs)",
                            type(error).__name__, error, failures, delay)  # fmt: skip
                stop.wait(delay)
                continue
            if not batch:
                if until_idle:
                    break
                stop.wait(interval)
    finally:
        if publisher is not None:
            publisher.close()
            CONNECTED.set(0)
        with app.app_context():
            leadership.release()
    return published


def start(app: Flask, stop: threading.Event) -> threading.Thread | None:
    """The relay on a thread of its own, when EVENTS_AMQP_URL is set."""
    if not app.config.get("EVENTS_AMQP_URL"):
        return None
    thread = threading.Thread(target=run, args=(app, stop), name="events-relay", daemon=True)
    thread.start()
    return thread


def lag(now: datetime | None = None) -> tuple[int, float | None]:
    """How many events wait, and the age in seconds of the oldest (None when none)."""
    from sqlalchemy import func

    table = OutboxMessage.__table__
    now = now or utcnow()
    waiting = (table.c.kind == events.EVENT, table.c.status == PENDING)
    count = db.session.scalar(select(func.count()).where(*waiting)) or 0
    oldest: datetime | None = db.session.scalar(select(func.min(table.c.created_at)).where(*waiting))
    return count, ((now - oldest).total_seconds() if oldest is not None else None)

"""The events relay benchmark of issue 14: `python -m bench.relay [--events 20000] [--smoke]`.

Against its own PostgreSQL database (production settings) and the machine's RabbitMQ: fills the
outbox with EVENTS auth.user.updated events (CloudEvents with a full `user` object, ~700 bytes)
spread over 1,000 users, then times app/services/relay.py publishing all of them to a durable
topic exchange with a durable queue bound, as persistent messages with publisher confirms, and
marking them sent. A second run puts EVENTS/10 events on one user (the worst case: one wave, so
one confirm round trip, per event). Checks that the queue holds every event exactly once.
Writes bench/RELAY.md (smoke: bench/out/RELAY-smoke.md) and bench/out/relay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
import uuid

import pika

from bench import report
from bench.seed import BenchDatabase

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


def fill(app, count: int, users: int) -> None:
    """`count` pending events over `users` users, inserted in one go (as many commits would leave them)."""
    from app.extensions import db
    from app.models import OutboxMessage, utcnow
    from app.services import events

    subjects = [uuid.uuid4() for _ in range(users)]
    now = utcnow()
    with app.app_context():
        rows = []
        for number in range(count):
            subject = subjects[number % users]
            data = {
                "id": str(subject),
                "email": f"user{number % users}@bench.example",
                "username": f"user_{number % users}",
                "name": f"Bench User {number}",
                "role": "user",
                "is_active": True,
                "email_verified": True,
                "pending_email": None,
                "mfa_enabled": False,
                "created_at": "2026-12-01T00:00:00+00:00",
                "updated_at": now.isoformat(),
            }
            rows.append({
                "kind": events.EVENT, "topic": events.UPDATED, "aggregate_id": subject,
                "payload": events.cloudevent(events.UPDATED, subject, data), "status": "pending",
                "attempts": 0, "created_at": now, "next_attempt_at": now,
            })  # fmt: skip
        for start in range(0, count, 5000):
            db.session.execute(OutboxMessage.__table__.insert(), rows[start : start + 5000])
        db.session.commit()


def publish_all(app) -> tuple[float, int]:
    """The relay until the outbox has no pending event: seconds and events confirmed."""
    from app.services import relay

    started = time.perf_counter()
    published = relay.run(app, threading.Event(), until_idle=True)
    return time.perf_counter() - started, published


def queue_check(channel, queue: str, expected: int) -> bool:
    """The queue holds `expected` messages, each id once."""
    ids = set()
    count = 0
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        count += 1
        ids.add(json.loads(body)["id"])
    return count == expected == len(ids)


def run(args: argparse.Namespace) -> dict:
    """Both scenarios, with the database, exchange and queue removed whatever happens."""
    from app import create_app

    database = BenchDatabase(args.postgres_url)
    tag = secrets.token_hex(4)
    exchange, queue = f"bench.auth.events.{tag}", f"bench.auth.consumer.{tag}"
    env = {
        "APP_ENV": "production",
        "DATABASE_URL": database.url,
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "FLASK_APP": "wsgi",
        "EVENTS_AMQP_URL": args.amqp_url,
        "EVENTS_EXCHANGE": exchange,
        "EVENTS_BATCH_SIZE": str(args.batch_size),
        "OUTBOX_POLL_INTERVAL_MS": "10",
        "LOG_LEVEL": "WARNING",
    }
    connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
    channel = connection.channel()
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, routing_key="#")
    database.create()
    results: dict = {}
    try:
        database.migrate({**os.environ, **env})
        app = create_app(env)
        loads = os.getloadavg()
        for name, count, users in (
            ("1,000 users", args.events, 1000),
            ("one user", max(args.events // 10, 1), 1),
        ):
            fill(app, count, users)
            seconds, published = publish_all(app)
            complete = published == count and queue_check(channel, queue, count)
            results[name] = {"events": count, "users": users, "seconds": seconds, "per_s": count / seconds,
                             "complete": complete}  # fmt: skip
            print(f"{name}: {count:,} events in {seconds:.2f} s = {count / seconds:,.0f} events/s, "
                  f"complete: {complete}", flush=True)  # fmt: skip
        version = database.server_version()
        broker = connection._impl.server_properties.get("version", b"?")
    finally:
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        connection.close()
        database.drop()
    machine = {
        "RabbitMQ": broker.decode() if isinstance(broker, bytes) else str(broker),
        "load average (1, 5, 15 min) at the start": report.load_average(loads),
    }
    return report.standalone_header("relay", version, machine) | {
        "batch_size": args.batch_size,
        "scenarios": results,
        "complete": all(row["complete"] for row in results.values()),
    }


def markdown(results: dict) -> str:
    """bench/RELAY.md."""
    body = [
        "| events | over | seconds | events/s (sustained, with publisher confirms) | all arrived once |",
        "|---:|---|---:|---:|---|",
        *[
            f"| {row['events']:,} | {name} | {row['seconds']:.2f} | {row['per_s']:,.0f} | "
            f"{'yes' if row['complete'] else 'NO'} |"
            for name, row in results["scenarios"].items()
        ],
        "",
        "What is timed: `app/services/relay.py` (what `flask outbox run` runs) reading pending events from "
        "the outbox in id order, publishing them to a durable topic exchange with a durable queue bound, as "
        f"persistent messages (delivery mode 2), batches of {results['batch_size']} in waves of at most one "
        "event per user, each wave waiting for the broker's publisher confirms, and marking the confirmed "
        "events sent. The events are `auth.user.updated` CloudEvents with a full `user` object. Over one "
        "user every event is a wave of its own: a confirm round trip (and the broker's disk write) each, "
        "which is the floor for a burst on a single account.",
    ]
    return report.standalone_markdown("Events relay benchmark (issue 14)", results, body)


def options(parser: argparse.ArgumentParser) -> None:
    """This benchmark's own options."""
    parser.add_argument("--events", type=int, help="events over 1,000 users (default 20,000; smoke 2,000)")
    parser.add_argument("--batch-size", type=int, default=500, help="EVENTS_BATCH_SIZE (default 500)")
    parser.add_argument("--amqp-url", default=os.environ.get("TEST_AMQP_URL") or DEFAULT_AMQP)


def main(argv: list[str] | None = None) -> int:
    """Run, write the reports; non-zero if an event was missing or doubled."""
    return report.standalone_main(argv, "relay", ("events", 2000, 20_000), options, run, markdown)


if __name__ == "__main__":
    sys.exit(main())

"""The mail delivery benchmark of issue 18 (goal 6): `python -m bench.mail [--mails 2000] [--smoke]`.

Against its own PostgreSQL database (production settings) and an aiosmtpd server it starts on a
free loopback port (tests/smtp.py, the tests' own SMTP server): queues MAILS password-reset mails
for as many users the way /password/forgot does (app/services/recovery.py mail_link: a single-use
token, the link marked secret, the mail in the outbox), then times the outbox worker delivering all
of them (app/services/outbox.py run_once, what `flask outbox run` loops over: claim a batch, render
each mail, one SMTP session per mail over smtp+plain to the loopback server, mark it sent and blank
its link). Checks the server received every mail exactly once. Writes bench/MAIL.md (smoke:
bench/out/MAIL-smoke.md) and bench/out/mail.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
import uuid

from bench import report
from bench.seed import BenchDatabase


def queue_mails(app, count: int) -> None:
    """`count` users, and a password-reset mail queued for each exactly as /password/forgot queues it."""
    from app.extensions import db
    from app.models import User, utcnow
    from app.services import passwords, recovery

    with app.app_context():
        stored = passwords.hash_password(secrets.token_urlsafe(16))
        now = utcnow()
        users = [
            User(
                id=uuid.uuid4(),
                email=f"mail{n}@bench.example",
                username=f"mail{n}",
                username_key=f"mail{n}",
                name=f"Bench Mail {n}",
                password_hash=stored,
                role="user",
                is_active=True,
                email_verified=True,
                created_at=now,
                updated_at=now,
            )  # fmt: skip
            for n in range(count)
        ]
        db.session.add_all(users)
        db.session.commit()
        for start in range(0, count, 500):
            for user in users[start : start + 500]:
                recovery.mail_link(user, recovery.PASSWORD_RESET, "password_reset", to=user.email)
            db.session.commit()
        db.session.remove()


def deliver_all(app) -> tuple[float, int]:
    """The outbox worker's loop until nothing is due: seconds, and messages claimed."""
    from app.extensions import db
    from app.services import outbox

    started = time.perf_counter()
    total = 0
    with app.app_context():
        while claimed := outbox.run_once():
            total += claimed
        db.session.remove()
    return time.perf_counter() - started, total


def outbox_counts(app) -> dict[str, int]:
    """Outbox rows by status."""
    from sqlalchemy import text

    from app.extensions import db

    with app.app_context():
        rows = db.session.execute(text("SELECT status, count(*) FROM outbox GROUP BY status")).all()
        db.session.remove()
    return {status: count for status, count in rows}


def run(args: argparse.Namespace) -> dict:
    """Queue, deliver, check; the database dropped and the SMTP server stopped whatever happens."""
    from app import create_app
    from tests.smtp import SMTPServer

    database = BenchDatabase(args.postgres_url)
    smtp = SMTPServer().start()
    env = {
        "APP_ENV": "production",
        "DATABASE_URL": database.url,
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "FLASK_APP": "wsgi",
        "MAIL_URL": smtp.url(),
        "FRONTEND_URL": "https://bench.example",
        "LOG_LEVEL": "WARNING",
    }
    database.create()
    try:
        database.migrate({**os.environ, **env})
        app = create_app(env)
        loads = os.getloadavg()
        queue_started = time.perf_counter()
        queue_mails(app, args.mails)
        queue_seconds = time.perf_counter() - queue_started
        seconds, claimed = deliver_all(app)
        smtp.inbox.wait(args.mails, timeout=30)
        received = len(smtp.inbox.messages)
        ids = {message["Message-ID"] for message in smtp.inbox.messages}
        recipients = {message["To"] for message in smtp.inbox.messages}
        statuses = outbox_counts(app)
        complete = received == claimed == len(ids) == len(recipients) == args.mails and statuses == {"sent": args.mails}
        version = database.server_version()
        print(
            f"{args.mails:,} mails delivered in {seconds:.2f} s = {args.mails / seconds:,.0f} mails/s "
            f"(queued in {queue_seconds:.1f} s); received {received:,}, once each: {complete}",
            flush=True,
        )
    finally:
        smtp.stop()
        database.drop()
    machine = {
        "SMTP server": "aiosmtpd (tests/smtp.py) on 127.0.0.1, same machine",
        "load average (1, 5, 15 min) at the start": report.load_average(loads),
    }
    return report.standalone_header("mail", version, machine) | {
        "mails": args.mails,
        "seconds": seconds,
        "per_s": args.mails / seconds,
        "queue_seconds": queue_seconds,
        "received": received,
        "outbox": statuses,
        "complete": complete,
    }


def markdown(results: dict) -> str:
    """bench/MAIL.md."""
    body = [
        "| mails | seconds | mails/s (sustained, one SMTP session each) | all arrived once |",
        "|---:|---:|---:|---|",
        f"| {results['mails']:,} | {results['seconds']:.2f} | {results['per_s']:,.0f} | "
        f"{'yes' if results['complete'] else 'NO'} |",
        "",
        "What is timed: the outbox worker (`app/services/outbox.py` run_once, the loop of `flask outbox run`) "
        "delivering password-reset mails queued as /password/forgot queues them (`recovery.mail_link`: a "
        "single-use token, the link kept only until the mail is sent): claiming batches, rendering each mail "
        "(text and HTML templates), one SMTP session per mail (connect, EHLO, MAIL, RCPT, DATA, QUIT) over "
        "smtp+plain to an aiosmtpd server on the loopback interface, marking it sent and blanking its link. "
        "The SMTP server runs in the same process (its own thread) and so shares the CPU with the worker; a "
        "real relay over a network adds its round trips. Not timed: queueing "
        f"({results['queue_seconds']:.1f} s, the requests' work).",
    ]
    return report.standalone_markdown("Mail delivery benchmark (issue 18, goal 6)", results, body)


def options(parser: argparse.ArgumentParser) -> None:
    """This benchmark's own option."""
    parser.add_argument("--mails", type=int, help="mails to deliver (default 2,000; smoke 200)")


def main(argv: list[str] | None = None) -> int:
    """Run, write the reports; non-zero if a mail was missing or doubled."""
    return report.standalone_main(argv, "mail", ("mails", 200, 2000), options, run, markdown)


if __name__ == "__main__":
    sys.exit(main())

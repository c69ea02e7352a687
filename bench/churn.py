"""Revocation churn from another process: `python -m bench.churn --rate R --seconds S SESSIONS_FILE`.

The harness runs this beside a /checkToken load (issue 18, goal 5). It revokes real sessions of the
seeded database at R per second through the service's own revocation path
(app/services/sessions.py revoke_sessions, one transaction and one commit per revocation, as a
logout makes), so each commit sends the service's NOTIFY and every gunicorn worker's revocation
view (app/services/revocation_view.py) has to drop that user's entries and read them again.

SESSIONS_FILE holds `user_id<TAB>session_id` lines: sessions of the users whose tokens the load
presents, but never the sessions those tokens belong to, so every answer stays `valid: true` while
every revocation lands on a user the workers have cached (the worst case for the view). The
environment carries the service's settings (DATABASE_URL, JWT_SECRET_KEY, APP_ENV).

It prints `ready` once the app is built, then paces revocations for S seconds over a few threads
(a commit waits for the WAL flush; one thread alone would cap the rate at the disk's latency) and
prints one line `CHURN_JSON {...}` with what it did. The harness counts the achieved rate itself,
from the sessions' revoked_at in the database, over exactly its measured window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__.split("\n\n")[0])
    parser.add_argument("sessions", help="file of user_id<TAB>session_id lines, revoked in order")
    parser.add_argument("--rate", type=float, required=True, help="revocations per second")
    parser.add_argument("--seconds", type=float, required=True, help="how long to keep revoking")
    parser.add_argument(
        "--threads",
        type=int,
        help="revoking threads (default: one per 20/s of rate, 4 to 16, a connection each)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the app, say ready, wait for the go line on stdin, revoke at the rate, report."""
    args = parse_args(argv)
    args.threads = args.threads or min(16, max(4, int(args.rate // 20)))
    from sqlalchemy import text

    from app import create_app
    from app.extensions import db
    from app.models import Session
    from app.services import sessions

    keys = ("APP_ENV", "DATABASE_URL", "JWT_SECRET_KEY", "URL_PREFIX")
    # This process stands for another instance: its pool holds a connection per revoking thread.
    config = {key: os.environ[key] for key in keys if key in os.environ}
    app = create_app(config | {"DATABASE_POOL_SIZE": str(args.threads), "DATABASE_MAX_OVERFLOW": "0"})
    with open(args.sessions) as handle:
        pairs = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    targets = [(uuid.UUID(user), uuid.UUID(sid)) for user, sid in pairs]
    with app.app_context():
        db.session.execute(text("SELECT 1"))  # the pool is connected before the clock starts
        db.session.rollback()
    print("ready", flush=True)
    sys.stdin.readline()  # the harness writes a line when its load starts

    lock = threading.Lock()
    state: dict[str, Any] = {"next": 0, "revoked": 0, "failed": 0, "late": 0, "busy": 0.0}
    started = time.monotonic()
    deadline = started + args.seconds
    interval = 1.0 / args.rate if args.rate > 0 else None

    def worker() -> None:
        with app.app_context():
            while True:
                with lock:
                    index = state["next"]
                    if index >= len(targets):
                        return
                    state["next"] += 1
                due = started + index * interval if interval else deadline
                wait = due - time.monotonic()
                if due >= deadline:
                    return
                if wait > 0:
                    time.sleep(wait)
                user_id, sid = targets[index]
                began = time.perf_counter()
                try:
                    count = sessions.revoke_sessions(user_id, Session.id == sid, reason="logout")
                    db.session.commit()
                except Exception as error:  # counted and named in the report, never hidden
                    db.session.rollback()
                    count = -1
                    state.setdefault("error", f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
                with lock:
                    state["busy"] += time.perf_counter() - began
                    if count == 1:
                        state["revoked"] += 1
                    else:
                        state["failed"] += 1
                    if wait < -0.05:
                        state["late"] += 1

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.threads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    report = {
        "rate": args.rate,
        "seconds": elapsed,
        "revoked": state["revoked"],
        "failed": state["failed"],
        "late": state["late"],
        "threads": args.threads,
        "mean_ms": state["busy"] * 1000 / max(1, state["revoked"] + state["failed"]),
        "exhausted": state["next"] >= len(targets),
        "first_error": state.get("error"),
    }
    print("CHURN_JSON " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

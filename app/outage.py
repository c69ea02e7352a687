"""Database outages as the log tells them: one line when one starts, one per failed request, one when it ends.

An outage (the database unreachable, or a statement or lock wait past DATABASE_STATEMENT_TIMEOUT)
is expected operation, not a bug: each failed request is one line with its request id and the
cause's class, without a traceback, so an outage cannot flood the log (a traceback per request
wrote megabytes a minute). The state is per process: each worker says when it sees an outage
start and end. It ends at the first statement that succeeds once no request has failed for
QUIET_SECONDS, so a partial outage (one locked table) does not flap start/end on every request.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.observability import DATABASE_OUTAGE

log = logging.getLogger(__name__)
QUIET_SECONDS = 2.0


def describe(error: BaseException) -> str:
    """The cause in one short line: the driver's exception class and the first line of its message."""
    cause = getattr(error, "orig", None) or error
    first = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


class Outage:
    """One process's view of the database: up, or failing since when."""

    def __init__(self) -> None:
        """Start with the database up."""
        self.lock = threading.Lock()
        self.since: float | None = None
        self.last_failure = 0.0
        self.failures = 0
        DATABASE_OUTAGE.set(0)

    def failed(self, error: BaseException, request_id: str | None) -> None:
        """A request failed on the database: its own line, and the start line if it is the first."""
        now = time.monotonic()
        cause = describe(error)
        with self.lock:
            starting = self.since is None
            if starting:
                self.since = now
                self.failures = 0
            self.failures += 1
            self.last_failure = now
        if starting:
            DATABASE_OUTAGE.set(1)
            log.error("database outage started: %s", cause, extra={"request_id": request_id})
        log.warning("database unavailable, answered 503: %s", cause, extra={"request_id": request_id})

    def succeeded(self) -> None:
        """A statement succeeded: the outage ends if none failed for QUIET_SECONDS."""
        if self.since is None:  # the common case: no lock, no work
            return
        now = time.monotonic()
        with self.lock:
            if self.since is None or now - self.last_failure < QUIET_SECONDS:
                return
            lasted, failures, self.since = now - self.since, self.failures, None
        DATABASE_OUTAGE.set(0)
        log.warning("database outage ended after %.1f s; %d requests answered 503 meanwhile", lasted, failures)


def init_outage(app: Flask, engine: Engine) -> Outage:
    """Track the app's database: handle_unexpected reports failures, every statement success."""
    outage = Outage()
    event.listen(engine, "after_cursor_execute", lambda *_args: outage.succeeded())
    app.extensions["database_outage"] = outage
    return outage

"""Observability: Prometheus metrics, JSON logs with the request id, and one log line per request.

Metrics work under several gunicorn workers through prometheus_client's multiprocess mode:
deploy/gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh folder and marks dead
workers, and /metrics aggregates every worker's values. Logs never contain request bodies,
the Authorization header or query strings, so no password, token or secret can reach them.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from pythonjsonlogger.orjson import OrjsonFormatter

REQUESTS = Counter("auth_http_requests_total", "HTTP requests answered", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "auth_http_request_duration_seconds",
    "Time to answer, by endpoint",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LOGINS = Counter("auth_logins_total", "Login attempts by result", ["result"])
TOKENS_ISSUED = Counter("auth_tokens_issued_total", "Tokens issued", ["type"])
TOKENS_REVOKED = Counter("auth_tokens_revoked_total", "Revocations: single access tokens and whole sessions", ["kind"])
REUSE_DETECTED = Counter("auth_refresh_reuse_detected_total", "Spent refresh tokens presented again")

# Audit events that are also counted as metrics.
EVENT_METRICS = {
    "login_succeeded": lambda: LOGINS.labels("success").inc(),
    "login_failed": lambda: LOGINS.labels("failure").inc(),
    "login_throttled": lambda: LOGINS.labels("throttled").inc(),
    "refresh_reuse_detected": REUSE_DETECTED.inc,
}

log = logging.getLogger("app.requests")


def count_issued_pair() -> None:
    """An access and a refresh token were handed out."""
    TOKENS_ISSUED.labels("access").inc()
    TOKENS_ISSUED.labels("refresh").inc()


def count_event(event: str) -> None:
    """Count an audit event that has a metric."""
    counter = EVENT_METRICS.get(event)
    if counter is not None:
        counter()


class RequestIdFilter(logging.Filter):
    """Put the current request id on every record logged during a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach request_id (or None outside a request)."""
        from flask import has_request_context

        if getattr(record, "request_id", None) is None:  # the hot path passes its own
            record.request_id = g.get("request_id") if has_request_context() else None
        return True


class TextFormatter(logging.Formatter):
    """Readable lines for development: the request fields follow the message."""

    FIELDS = ("method", "path", "status", "duration_ms", "remote_addr")

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, plus key=value for each request field present."""
        line = super().format(record)
        extras = " ".join(f"{name}={getattr(record, name)}" for name in self.FIELDS if hasattr(record, name))
        return f"{line} {extras}" if extras else line


def configure_logging(app: Flask) -> None:
    """JSON lines on stderr (LOG_FORMAT=json, the production default) or readable text."""
    # A line per request is logged on the hot path too; these are the costs of a LogRecord nobody
    # here reads (the logging HOWTO, "Optimization"): the caller's file and line, thread and
    # process names. With orjson encoding they bring a line from ~30 µs to ~17 µs.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if app.config["LOG_FORMAT"] == "json":
        handler.setFormatter(
            OrjsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger("app")
    root.handlers[:] = [handler]
    root.setLevel(app.config["LOG_LEVEL"])
    root.propagate = False
    app.logger.handlers[:] = [handler]
    app.logger.propagate = False


def _endpoint() -> str:
    """The route template (bounded label values), never the raw path."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def start_timer() -> None:
    """Before each request: note the time."""
    g.started = time.perf_counter()


def record_request(response: Response) -> Response:
    """After each request: metrics, and a log line without query string, headers or body."""
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    endpoint = _endpoint()
    REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
    LATENCY.labels(endpoint).observe(elapsed)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
                "remote_addr": request.remote_addr,
            },
        )
    return response


def metrics_response() -> Response:
    """The Prometheus exposition of every worker's metrics (or this process's, outside gunicorn)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    from flask import current_app

    from app.services import outbox  # the mail backlog, read from the database at scrape time

    payload += outbox.backlog_exposition(current_app._get_current_object())
    return Response(payload, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def init_observability(app: Flask) -> None:
    """Logging, the request timer and the per-request record."""
    configure_logging(app)
    app.before_request(start_timer)
    app.after_request(record_request)

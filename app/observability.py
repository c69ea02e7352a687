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
from collections.abc import Callable, Mapping
from typing import Any

import click
from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.logformat import JsonFormatter, TextFormatter, iso_seconds, json_formatter, json_line

# Methods counted under their own name; any other (a made-up `FOOBAR`, WebDAV's `PROPFIND`) is
# `other`, so a client cannot add a metrics series per request.
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"))

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
# 1 while a live worker counts rate limits in-process because their storage (Redis) is down.
RATE_LIMIT_FALLBACK = Gauge(
    "auth_rate_limit_storage_fallback",
    "1 while rate limits are counted in-process because their storage is unreachable",
    ["limiter"],
    multiprocess_mode="livemax",
)
# 1 while a live worker sees the database failing (app/outage.py).
DATABASE_OUTAGE = Gauge(
    "auth_database_outage",
    "1 while requests fail because the database is unreachable or too slow",
    multiprocess_mode="livemax",
)
REUSE_DETECTED = Counter("auth_refresh_reuse_detected_total", "Spent refresh tokens presented again")

# Audit events that are also counted as metrics.
EVENT_METRICS: dict[str, Callable[[], None]] = {
    "login_succeeded": lambda: LOGINS.labels("success").inc(),
    "login_failed": lambda: LOGINS.labels("failure").inc(),
    "login_throttled": lambda: LOGINS.labels("throttled").inc(),
    "refresh_reuse_detected": REUSE_DETECTED.inc,
}

# (endpoint, method, status) -> its counter and histogram children: labels() takes a lock and
# checks its values on every call. Bounded: endpoints are route templates, methods and statuses few.
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

log = logging.getLogger("app.requests")
_service_log = logging.getLogger("app")
# The JSON handler configure_logging installed and the file descriptor of its stream, while the
# request line may be written there directly (_direct_fd says when).
_direct: tuple[logging.StreamHandler, Any, int] | None = None


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


def configure_logging(app: Flask) -> None:
    """JSON lines on stderr (LOG_FORMAT=json, the production default) or readable text."""
    # A line per request is logged on the hot path too; these are the costs of a LogRecord nobody
    # here reads (the logging HOWTO, "Optimization"): the caller's file and line, thread and
    # process names. With orjson encoding they bring a line from ~30 µs to ~17 µs. The process id
    # stays (one getpid()): gunicorn's own lines format %(process)d, and fail without it.
    logging._srcfile = None
    logging.logThreads = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if app.config["LOG_FORMAT"] == "json":
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    global _direct
    _direct = None
    if app.config["LOG_FORMAT"] == "json":
        try:
            _direct = (handler, handler.stream, handler.stream.fileno())
        except (AttributeError, OSError, ValueError):  # a stream without a descriptor (a test's capture)
            pass
    root = _service_log
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


def record(endpoint: str, method: str, status: int, elapsed: float, *, path: str, remote_addr: str | None,
           request_id: str) -> None:  # fmt: skip
    """One answered request: its metrics, and a log line without query string, headers or body.

    The one record of a request: Flask's after_request hook and the verification fast path
    (app/hotpath.py) both call it.
    """
    key = (endpoint, method if method in KNOWN_METHODS else "other", status)
    series = _series.get(key)
    if series is None:
        series = _series[key] = (REQUESTS.labels(key[0], key[1], str(status)), LATENCY.labels(endpoint))
    series[0].inc()
    series[1].observe(elapsed)
    if not log.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(elapsed * 1000, 2),
        "remote_addr": remote_addr,
    }
    fd = _direct_fd()
    if fd is not None:
        # The line JsonFormatter would write for log.info (app/logformat.py json_line), without
        # the LogRecord, the handler's lock and its flush: ~60% of the line's cost (bench/PROFILE.md).
        now = time.time()
        line = json_line(f"{iso_seconds(now)}.{int((now - int(now)) * 1000):03d}Z", "INFO", log.name, "request", fields)
        try:
            while line:  # one write(2) unless the descriptor takes less (a full pipe)
                line = line[os.write(fd, line) :]
            return
        except OSError:
            pass  # the handler's own error handling says what went wrong
    log.info("request", extra=fields)


def _direct_fd() -> int | None:
    """The descriptor the request line may be written to itself, or None to go through logging.

    Only while the request logger has nothing of its own and the service's logger has exactly
    the JSON handler configure_logging gave it, writing to the stream it had: any other
    configuration (a test's capture, a handler added by an operator) gets the line through
    logging, as before.
    """
    direct = _direct
    if direct is None or log.handlers or log.filters or _service_log.filters:
        return None
    handler, stream, fd = direct
    handlers = _service_log.handlers
    if len(handlers) != 1 or handlers[0] is not handler or handler.stream is not stream or handler.level > logging.INFO:
        return None
    return fd if isinstance(handler.formatter, JsonFormatter) else None


def record_request(response: Response) -> Response:
    """After each Flask request: record it."""
    from app.errors import request_id

    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    record(
        _endpoint(),
        request.method,
        response.status_code,
        elapsed,
        path=request.path,
        remote_addr=request.remote_addr,
        request_id=request_id(),
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

    payload += outbox.backlog_exposition(current_app._get_current_object())  # type: ignore[attr-defined]
    return Response(payload, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def metrics_served(config: Mapping[str, Any]) -> bool:
    """Whether /metrics answers at all: enabled, and guarded by a token or explicitly public."""
    return bool(config["METRICS_ENABLED"] and (config["METRICS_TOKEN"] or config["METRICS_PUBLIC"]))


def init_observability(app: Flask) -> None:
    """Logging, the request timer and the per-request record."""
    configure_logging(app)
    serving = click.get_current_context(silent=True) is None  # not a flask command
    if serving and app.config["METRICS_ENABLED"] and not metrics_served(app.config):
        app.logger.warning(
            "/metrics answers 404: set METRICS_TOKEN (scrapers send it as a Bearer token), "
            "or METRICS_PUBLIC=true when only a private network reaches this port"
        )
    # First of every before_request hook: a request a later hook refuses (a 429 of the failure
    # budget, a 415) is timed too, never logged with a negative duration.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    app.after_request(record_request)

"""Log line formats shared by the app and gunicorn: ISO 8601 UTC times, JSON or text, no query strings.

Kept free of Flask and prometheus_client: gunicorn's master imports it (deploy/gunicorn_logging.py)
before PROMETHEUS_MULTIPROC_DIR is set, and prometheus_client chooses its storage at import.
"""

from __future__ import annotations

import logging
import re
import time

from pythonjsonlogger.orjson import OrjsonFormatter

# "?" and what follows it up to the next whitespace: a query string in a request line or a URL.
# Anything after a "?" is treated as one; a question mark ending a sentence loses nothing.
_QUERY = re.compile(r"\?\S*")


def iso_time(record: logging.LogRecord) -> str:
    """The record's time as ISO 8601 UTC with milliseconds: 2026-12-01T21:23:18.016Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(OrjsonFormatter):
    """One JSON object per line, its `time` in ISO 8601 UTC."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """ISO 8601 UTC, whatever datefmt says."""
        return iso_time(record)


class TextFormatter(logging.Formatter):
    """Readable lines for development, ISO 8601 UTC times; the request fields follow the message."""

    FIELDS = ("method", "path", "status", "duration_ms", "remote_addr")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """ISO 8601 UTC, whatever datefmt says."""
        return iso_time(record)

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, plus key=value for each request field present."""
        line = super().format(record)
        extras = " ".join(f"{name}={getattr(record, name)}" for name in self.FIELDS if hasattr(record, name))
        return f"{line} {extras}" if extras else line


def json_formatter(*, request_id: bool = True) -> JsonFormatter:
    """The JSON lines of production: time, level, logger, message (and the request id)."""
    fields = "{asctime}{levelname}{name}{message}" + ("{request_id}" if request_id else "")
    return JsonFormatter(fields, style="{", rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})


def strip_query_strings(text: str) -> str:
    """`text` with every query string cut out (`GET /login?token=… HTTP/1.1` → `GET /login HTTP/1.1`)."""
    return _QUERY.sub("", text) if "?" in text else text


class QueryStringFilter(logging.Filter):
    """Cut query strings out of a record's message and traceback before any handler writes it.

    For loggers whose messages quote request lines (gunicorn's): a query string may carry a token
    or a password, and logs must never hold one (ASVS 4.0.3 7.1.1).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, scrubbed; likewise the traceback, which formatters then reuse."""
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = strip_query_strings(message), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = strip_query_strings(record.exc_text)
        return True

"""Log line formats shared by the app and gunicorn: ISO 8601 UTC times, JSON or text, no query strings.

Kept free of Flask and prometheus_client: gunicorn's master imports it (deploy/gunicorn_logging.py)
before PROMETHEUS_MULTIPROC_DIR is set, and prometheus_client chooses its storage at import.
"""

from __future__ import annotations

import logging
import re
import time

import orjson

# "?" and what follows it up to the next whitespace: a query string in a request line or a URL.
# Anything after a "?" is treated as one; a question mark ending a sentence loses nothing.
_QUERY = re.compile(r"\?\S*")


def iso_time(record: logging.LogRecord) -> str:
    """The record's time as ISO 8601 UTC with milliseconds: 2026-12-01T21:23:18.016Z."""
    return iso_seconds(record.created) + f".{int(record.msecs):03d}Z"


def iso_seconds(created: float) -> str:
    """`created` (epoch seconds) to the second, ISO 8601 UTC: 2026-12-01T21:23:18."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))


def json_line(time_: str, level: str, logger: str, message: str, fields: dict[str, object]) -> bytes:
    """One JSON log line, newline included: the production format, in one place.

    JsonFormatter writes every record with it; app/observability.py writes the request line with
    it directly, without a LogRecord, when the JSON handler is all that is configured.
    """
    return orjson.dumps({"time": time_, "level": level, "logger": logger, "message": message, **fields},
                        default=str, option=orjson.OPT_APPEND_NEWLINE)  # fmt: skip


# What every LogRecord has: a record's other attributes are the `extra` fields a caller passed.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message, request_id, then the extras.

    A traceback is `exc_info`, a stack `stack_info`. orjson escapes every string, so no field can
    break the line or forge another (ASVS 7.3.1). Written here rather than through a JSON-logging
    library because it runs once per request on the verification hot path: this is a dict and one
    orjson call, ~3 µs; the library's field machinery took ~14 µs (bench/PROFILE.md).
    """

    def __init__(self, *, request_id: bool = True) -> None:
        """The production line; `request_id=False` for gunicorn's own lines, which have none."""
        super().__init__()
        self.request_id = request_id
        self._skip = _RECORD_ATTRIBUTES | {"request_id"}

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """ISO 8601 UTC, whatever datefmt says."""
        return iso_time(record)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        fields: dict[str, object] = {}
        if self.request_id:
            fields["request_id"] = getattr(record, "request_id", None)
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc_info"] = record.exc_text
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        for name, value in record.__dict__.items():
            if name not in self._skip:
                fields[name] = value
        line = json_line(iso_time(record), record.levelname, record.name, record.getMessage(), fields)
        return line[:-1].decode()  # the handler adds the newline


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
    return JsonFormatter(request_id=request_id)


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

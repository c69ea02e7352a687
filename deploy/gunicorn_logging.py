"""gunicorn's own log lines in the app's format, and never with a query string.

deploy/gunicorn.conf.py selects `logger_for(LOG_FORMAT)`. gunicorn writes request lines into its
messages ("Error handling request /login?token=…", "Invalid request from ip=…: Invalid HTTP
request line: 'GET /x?token=… …'") and, with GUNICORN_ACCESS_LOG=1, into its access log (`%(r)s`,
`%(q)s`, the Referer): every one of them is cut at the "?" here (ASVS 4.0.3 7.1.1). With
LOG_FORMAT=json its lines are JSON like the app's (time in ISO 8601 UTC, level, logger,
message); with text they keep gunicorn's layout with an ISO 8601 UTC time.
"""

from __future__ import annotations

import logging

from gunicorn import glogging

from app.logformat import QueryStringFilter, TextFormatter, json_formatter, strip_query_strings


class Logger(glogging.Logger):
    """gunicorn's logger with the app's line format and query strings cut out."""

    log_format = "json"  # set by logger_for()

    def setup(self, cfg) -> None:
        """gunicorn's handlers, then the app's formatter on them and the query filter on both logs."""
        super().setup(cfg)
        for log, formatter in (
            (self.error_log, self._error_formatter),
            (self.access_log, self._access_formatter),
        ):
            if not any(isinstance(existing, QueryStringFilter) for existing in log.filters):
                log.addFilter(QueryStringFilter())
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(formatter())

    def _error_formatter(self) -> logging.Formatter:
        """JSON like the app's lines, or gunicorn's text layout with an ISO 8601 UTC time."""
        if self.log_format == "json":
            return json_formatter(request_id=False)
        return TextFormatter(self.error_fmt)

    def _access_formatter(self) -> logging.Formatter:
        """The access line is gunicorn's access_log_format; as JSON it becomes the message."""
        if self.log_format == "json":
            return json_formatter(request_id=False)
        return logging.Formatter(self.access_fmt)

    def atoms(self, resp, req, environ, request_time) -> dict:
        """The access log's atoms without a query string: `%(r)s` is METHOD PATH PROTOCOL, `%(q)s` is '-'."""
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["q"] = "-"
        return {name: strip_query_strings(value) if isinstance(value, str) else value for name, value in atoms.items()}


def logger_for(log_format: str) -> type[Logger]:
    """The logger class for LOG_FORMAT (json or text)."""
    return type("Logger", (Logger,), {"log_format": log_format, "__module__": __name__})

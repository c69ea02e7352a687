"""The hot path: /checkToken and /validate answered without Flask's per-request machinery.

Other services call these on every request they serve (DESIGN.md, "The hot path"), so the
common case (a well-formed request, no CORS) is served here: parse with orjson, apply the
per-address limit, call the one verification function (tokens.check_token / verify_token,
which consults the revocation view), and answer with the same body and headers as the Flask
view. Anything else (an Origin header, a query string, an odd body, an invalid token at
/validate, any exception such as a database outage) is handed to the full Flask stack
untouched, which produces the contract's answer, errors included. tests/test_hotpath.py holds
the two paths to the same answers.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import orjson
from flask import Flask

from app.api.base import unstorable
from app.http import HSTS, JSON_CONTENT_TYPE, NO_STORE, SECURITY_HEADERS, choose_request_id
from app.observability import LATENCY, REQUESTS
from app.services import tokens

log = logging.getLogger("app.requests")
MAX_TOKEN_LENGTH = 8192
Answer = tuple[str, list[tuple[str, str]], bytes]


def _default(value: Any) -> Any:
    """orjson hook: datetimes as marshmallow writes them (isoformat with offset)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError


class HotPath:
    """WSGI middleware in front of the Flask app for the two verification endpoints."""

    def __init__(self, app: Flask, inner: Callable) -> None:
        """Wrap `inner` (the Flask WSGI callable) for `app`."""
        self.app = app
        self.inner = inner
        prefix = app.config["URL_PREFIX"]
        self.check_path = f"{prefix}/checkToken"
        self.validate_path = f"{prefix}/validate"
        self.max_body = app.config["MAX_CONTENT_LENGTH"]
        self.limit = app.extensions["checktoken_limit"]
        self.base_headers = [*SECURITY_HEADERS.items(), *NO_STORE.items()]
        self.observe = {
            self.check_path: (REQUESTS.labels(self.check_path, "POST", "200"), LATENCY.labels(self.check_path)),
            self.validate_path: (REQUESTS.labels(self.validate_path, "GET", "200"), LATENCY.labels(self.validate_path)),
        }

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Answer the common case here; everything else goes to Flask."""
        path = environ.get("PATH_INFO")
        method = environ.get("REQUEST_METHOD")
        answer = None
        started = time.perf_counter()
        if path == self.check_path and method == "POST":
            answer = self._check_token(environ)
        elif path == self.validate_path and method == "GET":
            answer = self._validate(environ)
        if answer is None:
            return self.inner(environ, start_response)
        status, headers, body = answer
        request_id = choose_request_id(environ.get("HTTP_X_REQUEST_ID"))
        headers += [("X-Request-ID", request_id), *self.base_headers]
        if environ.get("wsgi.url_scheme") == "https":
            headers.append(HSTS)
        start_response(status, headers)
        self._record(environ, path, request_id, started)
        return [body]

    def _plain(self, environ: dict) -> bool:
        """No CORS and no query string: nothing the Flask stack would treat specially."""
        return "HTTP_ORIGIN" not in environ and not environ.get("QUERY_STRING")

    def _bearer(self, environ: dict) -> str | None:
        """The Bearer credential, if any."""
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None

    def _body(self, environ: dict) -> bytes | None:
        """The JSON body, read once and put back for Flask; None when not a plain JSON body."""
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if content_type != "application/json" or not 0 < length <= self.max_body:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    def _check_token(self, environ: dict) -> Answer | None:
        """POST /checkToken with {"token": "…"} (or an empty body and a Bearer credential)."""
        if not self._plain(environ) or environ.get("HTTP_TRANSFER_ENCODING"):
            return None
        if environ.get("CONTENT_LENGTH") in (None, "", "0"):
            token = self._bearer(environ)
        else:
            body = self._body(environ)
            if body is None:
                return None
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                return None
            if not isinstance(data, dict) or list(data) != ["token"]:
                return None
            token = data["token"] or self._bearer(environ)
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH or unstorable(token):
            return None
        if self.limit.retry_after(environ.get("REMOTE_ADDR")) is not None:
            return None  # Flask answers the 429 (and counts this request once more, harmlessly)
        with self.app.app_context():
            try:
                result = tokens.check_token(token)
            except Exception:
                return None  # e.g. the database is down: Flask answers 503, or whatever applies
        body = orjson.dumps(result, default=_default, option=orjson.OPT_SORT_KEYS)
        return "200 OK", [("Content-Type", JSON_CONTENT_TYPE), ("Content-Length", str(len(body)))], body

    def _validate(self, environ: dict) -> Answer | None:
        """GET /validate with a valid Bearer access token; any failure is Flask's to answer."""
        if not self._plain(environ):
            return None
        token = self._bearer(environ)
        if token is None or len(token) > MAX_TOKEN_LENGTH or unstorable(token):
            return None
        with self.app.app_context():
            try:
                verified = tokens.verify_token(token, expected_type=tokens.ACCESS)
            except Exception:
                return None
        body = b'{"success":true}'
        return (
            "200 OK",
            [
                ("Content-Type", JSON_CONTENT_TYPE),
                ("Content-Length", str(len(body))),
                ("X-User-Id", str(verified.user_id)),
                ("X-User-Email", verified.email),
                ("X-User-Roles", ",".join(verified.roles)),
                # TODO(lead): one builder with the Flask view once app/hotpath.py has it (i12 adds amr).
                ("X-User-Amr", ",".join(verified.amr)),
            ],
            body,
        )

    def _record(self, environ: dict, path: str, request_id: str, started: float) -> None:
        """The same metrics and log line as app/observability.py records for Flask's answers."""
        elapsed = time.perf_counter() - started
        counter, histogram = self.observe[path]
        counter.inc()
        histogram.observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": environ.get("REQUEST_METHOD"),
                    "path": path,
                    "status": 200,
                    "duration_ms": round(elapsed * 1000, 2),
                    "remote_addr": environ.get("REMOTE_ADDR"),
                },
            )

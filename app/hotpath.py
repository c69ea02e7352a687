"""The verification endpoints and GET /me: every answer built once, served before Flask.

Other services call /checkToken, /validate and /introspect on every request they serve, frontends
GET /me on every page load (docs/DESIGN.md, "The hot path"). Two things live here:

- `check_token_answer`, `validate_answer`, `introspect_answer` and `me_answer` build every answer
  these endpoints give once the token is in hand: the 200s, the `X-User-*` headers, the 429 of
  the per-address limit, the 401s of /validate and /me, the 503 of a database outage. They are
  the only implementation: the Flask views (app/api/auth.py, oauth.py, me.py) call them too.
- `HotPath`, WSGI middleware in front of Flask, takes every well-formed request to these
  paths (CORS included, through Flask-CORS's own functions), calls the same builders, and adds
  the same envelope (app/http.py) and the same record (app/observability.py) as Flask's hooks.

What the middleware hands to Flask untouched is what is not such an answer: a body that is not a
plain JSON object of one `token` string (Flask's request rules answer 400/413/415/422) or not a
plain form, a chunked body, a query string, any other method (405, the CORS preflight, HEAD,
PATCH /me). Nothing is verified or counted twice. tests/test_hotpath.py holds the two paths to
the same answers, every header compared, under the shipped configuration.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs

import orjson
from flask import Flask, current_app, json
from werkzeug.datastructures import EnvironHeaders

from app import oauth
from app.errors import PROBLEM_CONTENT_TYPE, AppError, MissingToken, RateLimited, as_app_error, error_body
from app.http import (
    JSON_CONTENT_TYPE,
    bearer,
    choose_request_id,
    cors_headers,
    envelope_headers,
    identity_headers,
    unstorable,
)
from app.oauth import FORM_CONTENT_TYPE, Form, OAuthError
from app.observability import record
from app.schemas.common import UserResponseSchema
from app.services import audit, introspection, token_codec, verification

MAX_TOKEN_LENGTH = 8192  # the body field's bound (app/schemas/auth.py); a longer one is Flask's 400
# status, headers, body: an answer before the envelope (request id, security headers, CORS) is added.
Answer = tuple[int, list[tuple[str, str]], bytes]
STATUS_LINES = {status.value: f"{status.value} {status.phrase.upper()}" for status in HTTPStatus}  # as werkzeug


def _default(value: Any) -> Any:
    """orjson hook: datetimes as marshmallow writes them (isoformat with offset)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError


def _json(status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> Answer:
    """A JSON answer."""
    return status, [("Content-Type", JSON_CONTENT_TYPE), ("Content-Length", str(len(body))), *headers], body


def _problem(error: AppError, request_id: str) -> Answer:
    """An error's problem+json answer (the body from app/errors.py, as Flask's handlers render it)."""
    body = json.dumps(error_body(error, request_id)).encode()
    return (
        error.status,
        [("Content-Type", PROBLEM_CONTENT_TYPE), ("Content-Length", str(len(body))), *error.headers.items()],
        body,
    )


def _failure(error: Exception, request_id: str) -> Answer:
    """A domain error as itself; anything else (a database outage, a bug) as app/errors.py says."""
    return _problem(error if isinstance(error, AppError) else as_app_error(error, request_id), request_id)


def check_token_answer(token: str, address: str | None, request_id: str) -> Answer:
    """The /checkToken answer for `token` from `address` (inside an app context)."""
    wait = current_app.extensions["checktoken_limit"].retry_after(address)
    if wait is not None:
        return _problem(RateLimited(wait), request_id)
    try:
        result = verification.check_token_result(token)
    except Exception as error:
        return _failure(error, request_id)
    return _json(200, orjson.dumps(result, default=_default, option=orjson.OPT_SORT_KEYS))


VALIDATED = b'{"success":true}'


def oauth_error_answer(error: OAuthError) -> Answer:
    """An RFC 6749 5.2 error body: how /oauth/token and /introspect (only they) answer errors."""
    return _json(error.status, orjson.dumps(error.body()), error.headers.items())


def introspect_answer(form: Form | None, authorization: str | None, address: str | None, request_id: str) -> Answer:
    """The /introspect answer (RFC 7662) for a parsed form (None: the body was no form) from `address`.

    The token is judged by verification.verify_token, as /checkToken's is, and counts against the
    same per-address limit; a failed client authentication spends the address's budget of failed
    secret checks (introspection.authenticate_caller says how, without a Redis call on success).
    """
    extensions = current_app.extensions  # once: a lookup through the proxy costs more than a block check
    wait = extensions["checktoken_limit"].retry_after(address)
    if wait is not None:
        return oauth_error_answer(oauth.rate_limited(wait))
    try:
        body = introspection.introspect(form, authorization, address, extensions["password_failure_budget"])
    except OAuthError as error:
        return oauth_error_answer(error)
    except Exception as error:
        return oauth_error_answer(
            oauth.from_app_error(error if isinstance(error, AppError) else as_app_error(error, request_id))
        )
    return _json(200, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def _bearer_answer(token: str | None, request_id: str, success: Callable[[Any], Answer]) -> Answer:
    """`success(verified)` for a valid user access token as the Bearer credential; else its problem answer."""
    try:
        if token is None:
            raise MissingToken()
        verified = verification.verify_token(token, expected_type=token_codec.ACCESS)
    except Exception as error:
        return _failure(error, request_id)
    return success(verified)


def validate_answer(token: str | None, request_id: str) -> Answer:
    """The /validate answer for the Bearer credential `token` (None when there is none)."""
    return _bearer_answer(token, request_id, lambda verified: _json(200, VALIDATED, identity_headers(verified)))


# GET /me's body: the contract's user object, dumped by the schema the OpenAPI document shows.
USER_RESPONSE = UserResponseSchema()


def me_answer(token: str | None, request_id: str) -> Answer:
    """The GET /me answer for the Bearer credential `token`: the user as verification found them.

    Frontends ask it on every page load (issue 18): the answer is the verified token's own state
    (verification.SignedInUser), so a remembered token costs no query, and no Flask request.
    """

    def user(verified: verification.VerifiedToken) -> Answer:
        body = USER_RESPONSE.dump({"user": verification.SignedInUser(verified)})
        return _json(200, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))

    return _bearer_answer(token, request_id, user)


class HotPath:
    """WSGI middleware in front of the Flask app for the verification endpoints and GET /me."""

    def __init__(self, app: Flask, inner: Callable) -> None:
        """Wrap `inner` (the Flask WSGI callable) for `app`."""
        self.app = app
        self.inner = inner
        prefix = app.config["URL_PREFIX"]
        self.check_path = f"{prefix}/checkToken"
        self.validate_path = f"{prefix}/validate"
        self.introspect_path = f"{prefix}/introspect"
        self.me_path = f"{prefix}/me"
        self.max_body = app.config["MAX_CONTENT_LENGTH"]
        self.cors = app.extensions["cors_options"]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Answer a well-formed verification request here; everything else goes to Flask."""
        path = environ.get("PATH_INFO")
        method = environ.get("REQUEST_METHOD")
        if environ.get("QUERY_STRING") or not (
            (path == self.check_path and method == "POST") or (path == self.validate_path and method == "GET")
            or (path == self.introspect_path and method == "POST") or (path == self.me_path and method == "GET")
        ):  # fmt: skip
            return self.inner(environ, start_response)
        introspect = path == self.introspect_path
        started = time.perf_counter()
        form = self._body_form(environ) if introspect else None
        token = self._body_token(environ) if path == self.check_path else None
        if token is False or (introspect and form is None):
            return self.inner(environ, start_response)  # not a plain {"token": "…"} or form: Flask's rules answer
        request_id = choose_request_id(environ.get("HTTP_X_REQUEST_ID"))
        address = environ.get("REMOTE_ADDR")
        credential = bearer(environ.get("HTTP_AUTHORIZATION"))
        with self.app.app_context():
            if introspect:
                # A failed client authentication is audited: with this request's origin, as Flask's hook sets it.
                audit.set_origin(ip=address, user_agent=environ.get("HTTP_USER_AGENT"))
                status, headers, body = introspect_answer(form, environ.get("HTTP_AUTHORIZATION"), address, request_id)
            elif path == self.check_path:
                token = token or credential
                if token is None:
                    return self.inner(environ, start_response)  # missing_token: the view's argument rule
                status, headers, body = check_token_answer(token, address, request_id)
            elif path == self.me_path:
                status, headers, body = me_answer(credential, request_id)
            else:
                status, headers, body = validate_answer(credential, request_id)
        present = {name for name, _ in headers}
        headers += envelope_headers(present, request_id, https=environ.get("wsgi.url_scheme") == "https")
        if self.cors.origins:
            headers += cors_headers(self.cors, EnvironHeaders(environ), method)
        start_response(STATUS_LINES[status], headers)
        record(path, method, status, time.perf_counter() - started, path=path, remote_addr=address,
               request_id=request_id)  # fmt: skip
        return [body]

    def _body_form(self, environ: dict) -> dict[str, list[str]] | None:
        """An /introspect body's parameters, or None when it is not a plain UTF-8 form (the view answers it)."""
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        if environ.get("HTTP_TRANSFER_ENCODING") or content_type != FORM_CONTENT_TYPE:
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if not 0 < length <= self.max_body:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # put back, for Flask if it gets the request
        try:
            return parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return None

    def _body_token(self, environ: dict) -> str | None | Literal[False]:
        """The body's token: None for no body, False for a body that is not a plain {"token": "…"}."""
        if environ.get("HTTP_TRANSFER_ENCODING"):
            return False
        if environ.get("CONTENT_LENGTH") in (None, "", "0"):
            return None
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        try:
            length = int(environ["CONTENT_LENGTH"])
        except ValueError:
            return False
        if content_type != "application/json" or not 0 < length <= self.max_body:
            return False
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # put back, for Flask if it gets the request
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(data, dict) or list(data) != ["token"]:
            return False
        token = data["token"]
        if token == "":
            return None  # "empty counts as missing" (app/schemas/auth.py): the Bearer credential, if any
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or unstorable(token):
            return False
        return token

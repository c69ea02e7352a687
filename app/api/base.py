"""What every controller shares: the blueprint class, request parsing, the caller's identity."""

from __future__ import annotations

import re
from functools import wraps
from http import HTTPStatus
from typing import Any

import flask_smorest
from apispec import BasePlugin
from flask import g, request
from flask_login import current_user, login_required
from flask_smorest.utils import prepare_response
from marshmallow import RAISE
from webargs.flaskparser import FlaskParser

from app.errors import (
    PROBLEM_MIMETYPE,
    Forbidden,
    InvalidBody,
    InvalidJSON,
    InvalidToken,
    MissingToken,
    MissingTokenField,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.extensions import db, jwt, login_manager
from app.http import bearer, unstorable
from app.models import User
from app.schemas.common import ProblemSchema
from app.services import audit, tokens

BEARER_SECURITY = [{"bearerAuth": []}]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# No request of the API nests deeper than 2; 32 leaves room and keeps every recursive step
# after parsing (the walk below, marshmallow) far from Python's recursion limit (ASVS 5.1.4).
MAX_JSON_DEPTH = 32
# A string, or an unterminated one up to the end: every match attempt succeeds, so the scan
# stays linear even for a body of escaped quotes (a pattern that can fail retries at each quote).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENERS = frozenset(b"[{")


class Parser(FlaskParser):
    """webargs parser whose failures are the service's own errors (400, never 422)."""

    DEFAULT_VALIDATION_STATUS = 400
    # Unknown fields are rejected everywhere, query strings included (docs/CONTRACT.md: never silently ignored).
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE, "querystring": RAISE}

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        """Field errors become ValidationFailed with `errors` keyed by field."""
        messages = error.messages
        if isinstance(messages, dict) and len(messages) == 1:
            (only,) = messages.values()
            if isinstance(only, dict):
                messages = only
        raise ValidationFailed(errors=messages if isinstance(messages, dict) else {"_schema": messages})

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        """A body that does not parse as JSON."""
        raise InvalidJSON()


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint with the service's parser."""

    ARGUMENTS_PARSER = Parser()

    def problem(self, status: int, description: str | None = None, *, schema=ProblemSchema):
        """Document an error response: a problem+json document, `description` naming its codes."""
        return self.alt_response(
            status,
            schema=schema,
            description=description or HTTPStatus(status).phrase,
            content_type=PROBLEM_MIMETYPE,
        )


class ProblemResponses(BasePlugin):
    """apispec plugin: document the errors every operation can answer, not only its own.

    400 where input is parsed, 413/415 where a body is read, 401 where a token is required,
    429 on the rate-limited endpoints, 503 everywhere (the database), each a problem+json
    document (the shared responses registered by Api below).
    """

    RATE_LIMITED = frozenset(
        {
            "/login",
            "/login/mfa",
            "/signup",
            "/refresh",
            "/checkToken",
            "/password/forgot",
            "/password/reset",
            "/email/verify",
        }
    )

    def operation_helper(self, path=None, operations=None, **kwargs):
        """Add the shared error responses to each operation of `path`."""
        for method, operation in (operations or {}).items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            wanted = {"503": "SERVICE_UNAVAILABLE"}
            if operation.get("parameters") or "requestBody" in operation:
                wanted["400"] = "BAD_REQUEST"
            if method in ("post", "put", "patch", "delete"):
                wanted.update({"413": "REQUEST_ENTITY_TOO_LARGE", "415": "UNSUPPORTED_MEDIA_TYPE"})
            if operation.get("security") and operation["security"] != [{}]:
                wanted["401"] = "UNAUTHORIZED"
            if any(path and path.endswith(limited) for limited in self.RATE_LIMITED):
                wanted["429"] = "TOO_MANY_REQUESTS"
            for status, name in wanted.items():
                responses.setdefault(status, name)


class ServerRelativePaths(BasePlugin):
    """apispec plugin: document paths without URL_PREFIX, which is the server URL (OpenAPI 3.0.3, 4.7.9)."""

    def __init__(self, prefix: str) -> None:
        """`prefix` is URL_PREFIX ('' or '/segment[/segment]')."""
        super().__init__()
        self.prefix = prefix

    def path_helper(self, path=None, **kwargs):
        """The path with the prefix taken off."""
        if self.prefix and path and path.startswith(f"{self.prefix}/"):
            return path[len(self.prefix) :]
        return None


class Api(flask_smorest.Api):
    """flask-smorest's Api whose documented errors are problem+json documents."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self):
        """Register the shared error responses with the problem+json media type."""
        for status in HTTPStatus:
            if status >= 400:
                response = {"description": status.phrase, "schema": self.ERROR_SCHEMA}
                prepare_response(response, self.spec, PROBLEM_MIMETYPE)
                self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_MIMETYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)


def has_body() -> bool:
    """Whether the request carries a body at all."""
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def check_body() -> None:
    """Before every request: a body must be JSON (415) and a JSON object (400)."""
    if request.method not in BODY_METHODS or not has_body():
        return
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()
    raw = request.get_data(cache=True)
    try:
        raw.decode("utf-8")  # RFC 8259 8.1; it also makes the byte scan below exact
    except UnicodeDecodeError:
        raise InvalidJSON() from None
    if nests_deeper_than(raw, MAX_JSON_DEPTH):
        raise InvalidJSON(f"The request body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep.")
    body = request.get_json(silent=True, cache=True)
    if body is None:
        raise InvalidJSON()
    if not isinstance(body, dict):
        raise InvalidBody()
    _refuse_unstorable_text(body, "")


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether UTF-8 JSON text opens more than `limit` arrays or objects inside one another.

    Counted on the bytes before parsing, strings skipped, without recursion: the json module
    and every walk over its result recurse once per level, and a body nested thousands deep
    would otherwise end in a RecursionError (a 500).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # nearly every body: no scan at all
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    depth = 0
    for byte in brackets:
        depth += 1 if byte in _OPENERS else -1
        if depth > limit:
            return True
    return False


def check_query() -> None:
    """Before every request: query values carry no NUL or lone surrogate either."""
    for name, value in request.args.items(multi=True):
        _refuse_unstorable_text(value, name)


def _refuse_unstorable_text(value: Any, path: str) -> None:
    """Reject, with the field's name, any string that no database could store or compare.

    docs/DESIGN.md: PostgreSQL rejects NUL in text; a lone surrogate cannot even be encoded. Both
    would otherwise surface as a 500 from deep in a driver.
    """
    if isinstance(value, str):
        if unstorable(value):
            message = "Must not contain NUL or unpaired surrogate characters."
            raise ValidationFailed(errors={path or "_schema": [message]})
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and unstorable(key):
                raise ValidationFailed(errors={"_schema": ["Field names must be plain text."]})
            _refuse_unstorable_text(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_unstorable_text(item, f"{path}.{index}")


def remember_origin() -> None:
    """Before every request: tell the audit trail where this request comes from."""
    audit.set_origin(ip=request.remote_addr, user_agent=request.headers.get("User-Agent"))


def bearer_token() -> str | None:
    """The Bearer credential of the current request, if any."""
    return bearer(request.headers.get("Authorization"))


def client_info() -> dict[str, str | None]:
    """The caller's user agent and address, for the session record."""
    return {"user_agent": request.headers.get("User-Agent"), "ip": request.remote_addr}


def token_argument(args: dict[str, Any], field: str) -> str:
    """A token from the body field, else from the Bearer header; 400 when neither (docs/CONTRACT.md)."""
    token = args.get(field) or bearer_token()
    if not token:
        raise MissingTokenField(
            f"Send the token as '{field}' in the body or as a Bearer credential.",
            errors={field: ["Missing data for required field."]},
        )
    return token


@jwt.encode_key_loader
def _encode_key(_identity):
    """Flask-JWT-Extended signs with the configured secret or the current private key."""
    return tokens.signing_key()


@jwt.additional_headers_loader
def _encode_headers(_identity):
    """…and names that key with its kid."""
    return tokens.signing_headers()


@login_manager.request_loader
def load_user_from_request(req) -> User | None:
    """Flask-Login's loader: the user behind a valid access token, through verify_token."""
    token = bearer_token()
    if token is None:
        g.auth_error = MissingToken()
        return None
    try:
        verified = tokens.verify_token(token, expected_type=tokens.ACCESS)
    except InvalidToken as error:
        g.auth_error = error
        return None
    user = db.session.get(User, verified.user_id)
    if user is not None:
        g.token = verified
    return user


@login_manager.unauthorized_handler
def unauthorized() -> None:
    """401 problem+json with the reason the loader recorded."""
    raise g.get("auth_error") or MissingToken()


def caller() -> User:
    """The signed-in user as the model object (not the proxy), for the services."""
    return current_user._get_current_object()


def admin_required(view):
    """Require a valid access token of an active admin (403 for anyone else)."""

    @wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if current_user.role != "admin":
            raise Forbidden("This needs the admin role.")
        return view(*args, **kwargs)

    return wrapper

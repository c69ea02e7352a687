"""flask-smorest and apispec, fitted to the service: its parser, its blueprint, problem+json documented."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import flask_smorest
from apispec import BasePlugin
from flask_smorest.utils import prepare_response
from marshmallow import RAISE
from webargs.flaskparser import FlaskParser

from app.api.cookies import REFRESH_COOKIE
from app.errors import PROBLEM_MIMETYPE, InvalidJSON, ValidationFailed
from app.schemas.common import ProblemSchema

BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]
# Cookie mode for browser apps (app/api/cookies.py): what /refresh and /logout read, what the
# answers that issue or end a pair may set.
REFRESH_COOKIE_PARAMETER: dict[str, Any] = {
    "in": "cookie",
    "name": REFRESH_COOKIE,
    "required": False,
    "schema": {"type": "string"},
    "description": "The refresh token of cookie mode, read when the body has none; the request must then "
    "carry an Origin that is the service's own or one of CORS_ORIGINS (else 403 origin_not_allowed).",
}
SET_COOKIE_HEADER: dict[str, dict[str, Any]] = {
    "Set-Cookie": {
        "description": f"In cookie mode only: `{REFRESH_COOKIE}=<refresh token>; Max-Age=<its lifetime>; Secure; "
        "HttpOnly; Path=/; SameSite=Strict` (with Expires); /logout, and a failed /refresh from the cookie, "
        "clear it with Max-Age=0.",
        "schema": {"type": "string"},
    }
}


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

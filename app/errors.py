"""One exception hierarchy (status + stable code) and the handlers that render problem+json.

Codes are the contract clients switch on; titles come from the HTTP status; details are for
humans. Internal causes are logged, never sent (RFC 9457, ASVS 7.4.1).
"""

from __future__ import annotations

import logging
import math
import time
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, g, json, request
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, TimeoutError
from werkzeug.exceptions import HTTPException

from app.http import choose_request_id

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_CONTENT_TYPE = "application/problem+json; charset=utf-8"
RETRY_AFTER_SECONDS = "5"


# The contract's error codes: each `code` clients switch on, with the statuses it comes with.
# Filled by every AppError subclass as it is defined (a code is a class, never a literal at a
# raise), by the reasons of InvalidToken and by Werkzeug's mapping below; tests/test_errors.py
# holds the README, docs/CONTRACT.md and the OpenAPI document to exactly this list.
CODES: dict[str, set[int]] = {}


def register(code: str, status: int) -> None:
    """Add a code of the contract."""
    CODES.setdefault(code, set()).add(status)


class AppError(Exception):
    """Base of every error the service reports; `status` and `code` are the contract."""

    status = 500
    code = "internal_error"
    detail = "The server could not complete the request."

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register the subclass's code with its status."""
        super().__init_subclass__(**kwargs)
        register(cls.code, cls.status)

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        """Carry an optional human detail, field errors, headers and extension members.

        `extensions` are RFC 9457 3.2 extension members, rendered at the top level of the body
        (e.g. the `mfa_token` of `mfa_required`); they never replace the envelope's own members.
        """
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})


register(AppError.code, AppError.status)


class BadRequest(AppError):
    """The request is malformed."""

    status = 400
    code = "bad_request"
    detail = "The request could not be understood."


class ValidationFailed(BadRequest):
    """Input failed validation; `errors` names each field and why."""

    code = "validation_error"
    detail = "The request body or query has invalid fields."


class UsernameReserved(ValidationFailed):
    """The username is on RESERVED_USERNAMES, which only an admin may assign."""

    code = "username_reserved"
    detail = "This username is reserved."


class InvalidJSON(BadRequest):
    """The body is not a JSON document."""

    code = "invalid_json"
    detail = "The request body is not valid JSON."


class InvalidBody(InvalidJSON):
    """The body is JSON, but not an object."""

    code = "invalid_body"
    detail = "The request body must be a JSON object."


class MissingTokenField(ValidationFailed):
    """A token was to be sent in the body (or as a Bearer credential) and is in neither."""

    code = "missing_token"
    detail = "A token is required."


class UnsupportedMediaType(AppError):
    """A body that is not application/json."""

    status = 415
    code = "unsupported_media_type"
    detail = "Request bodies must be application/json."


class Unauthorized(AppError):
    """Credentials or a token are missing or invalid."""

    status = 401
    code = "unauthorized"
    detail = "Authentication is required."


class InvalidCredentials(Unauthorized):
    """Wrong identifier or password; the same answer either way (ASVS 2.2, no enumeration)."""

    code = "invalid_credentials"
    detail = "The credentials are incorrect."


class TokenError(Unauthorized):
    """A token was expected and is not valid; carries a Bearer challenge (RFC 6750 3)."""

    code = "invalid_token"
    detail = "The token is not valid."

    def __init__(self, detail: str | None = None) -> None:
        """Build the WWW-Authenticate challenge from the code."""
        super().__init__(detail)
        self.headers["WWW-Authenticate"] = self.challenge()

    def challenge(self) -> str:
        """The Bearer challenge naming this error."""
        return f'Bearer realm="auth", error="invalid_token", error_description="{self.code}"'


class MissingToken(TokenError):
    """No token where one is required (RFC 6750 3.1: the challenge then names no error)."""

    code = "missing_token"
    detail = "An access token is required."

    def challenge(self) -> str:
        """A bare challenge."""
        return 'Bearer realm="auth"'


class InvalidToken(TokenError):
    """A presented token is not valid; `reason` is the /checkToken vocabulary, mapped onto a code."""

    REASON_CODES = {
        "expired": "token_expired",
        "revoked": "token_revoked",
        "invalid": "invalid_token",
        "wrong_type": "wrong_token_type",
        "user_inactive": "user_inactive",
    }

    def __init__(self, reason: str) -> None:
        """The reason, and its stable code."""
        self.reason = reason
        self.code = self.REASON_CODES[reason]
        super().__init__(f"The token is not valid ({reason}).")


for _code in InvalidToken.REASON_CODES.values():
    register(_code, InvalidToken.status)


class TokenReused(TokenError):
    """A spent refresh token came back: its whole session has been revoked."""

    code = "token_reused"
    detail = "This refresh token was already used; the session has been revoked."


class Forbidden(AppError):
    """Authenticated, but not allowed."""

    status = 403
    code = "forbidden"
    detail = "You are not allowed to do this."


class AccountDisabled(Forbidden):
    """The right password for a deactivated account."""

    code = "account_disabled"
    detail = "This account has been disabled."


class OriginNotAllowed(Forbidden):
    """A request that relies on the refresh-token cookie, from an origin that is neither the service's nor listed.

    The CSRF defence of cookie mode beside SameSite=Strict (docs/SECURITY.md, OWASP CSRF
    Prevention Cheat Sheet: verifying the Origin header).
    """

    code = "origin_not_allowed"
    detail = "This request carries the refresh-token cookie and must come from the service's own or a listed origin."


class NotFound(AppError):
    """No such resource."""

    status = 404
    code = "not_found"
    detail = "The resource was not found."


class Conflict(AppError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"
    detail = "The request conflicts with the current state."


class EmailTaken(Conflict):
    """Another account has this email."""

    code = "email_taken"
    detail = "An account with this email already exists."


class UsernameTaken(Conflict):
    """Another account has this username."""

    code = "username_taken"
    detail = "This username is taken."


class LastAdmin(Conflict):
    """The change would leave no active admin."""

    code = "last_admin"
    detail = "The last active admin cannot be demoted, deactivated or deleted."


class MfaRequired(Unauthorized):
    """The password was right and the account has a second factor: finish at POST /login/mfa."""

    code = "mfa_required"
    detail = "A second factor is required; send it to /login/mfa with the mfa_token."


class InvalidMfaToken(Unauthorized):
    """An mfa_token that is unknown, used, expired, or issued under another password."""

    code = "invalid_mfa_token"
    detail = "The mfa_token is not valid; sign in again."


class InvalidMfaCode(BadRequest):
    """A wrong, replayed or out-of-window TOTP code, or a wrong or used recovery code."""

    code = "invalid_mfa_code"
    detail = "The code is not valid."


class MfaAlreadyEnabled(Conflict):
    """The account already has a confirmed second factor."""

    code = "mfa_already_enabled"
    detail = "A second factor is already enabled; disable it first."


class MfaNotEnabled(Conflict):
    """The account has no confirmed second factor (nor, for confirmation, a pending enrolment)."""

    code = "mfa_not_enabled"
    detail = "No second factor is enabled for this account."


class MfaNotPending(Conflict):
    """Confirmation without an enrolment started by POST /me/mfa/totp."""

    code = "mfa_not_pending"
    detail = "No enrolment is pending; start one with POST /me/mfa/totp."


class ServiceUnavailable(AppError):
    """A dependency (the database) is down; try again later."""

    status = 503
    code = "service_unavailable"
    detail = "The service is temporarily unavailable; try again later."

    def __init__(self, detail: str | None = None) -> None:
        """Always tell the client when to come back."""
        super().__init__(detail, headers={"Retry-After": RETRY_AFTER_SECONDS})


class KeysUnavailable(ServiceUnavailable):
    """The signing keys could not be loaded (JWT_KEYS_DIR): nothing can be signed or verified."""

    code = "keys_unavailable"
    detail = "Signing keys are unavailable."


class AccountBusy(ServiceUnavailable):
    """The account's row stayed locked by a concurrent change past the wait bound."""

    code = "account_busy"
    detail = "The account is changing; try again."


class NotReady(ServiceUnavailable):
    """GET /ready: a dependency of serving is not there (the detail says which)."""

    code = "not_ready"
    detail = "The service is not ready."


class TooManyRequests(AppError):
    """Too many requests: come back after Retry-After seconds."""

    status = 429
    code = "rate_limited"
    detail = "Too many requests; slow down."

    def __init__(self, retry_after: int) -> None:
        """Say when to come back (at least a second)."""
        super().__init__(headers={"Retry-After": str(max(1, retry_after))})


class RateLimited(TooManyRequests):
    """Too many requests from this address (per-IP limits, app/ratelimit.py), or mails to one address."""


class TooManyAttempts(TooManyRequests):
    """Too many failed attempts for this account (app/services/throttle.py)."""

    code = "too_many_attempts"
    detail = "Too many failed attempts for this account; try again later."


class MailUnavailable(ServiceUnavailable):
    """No mail transport is configured (MAIL_URL unset), so the mail this needs cannot be sent."""

    code = "mail_unavailable"
    detail = "This service cannot send mail now."


class InvalidResetToken(BadRequest):
    """A password reset token that is unknown, used, expired, or issued under an older password."""

    code = "invalid_reset_token"
    detail = "The reset link is invalid or has expired; ask for a new one."


class InvalidVerificationToken(BadRequest):
    """A verification token that is unknown, used, expired, or for another address."""

    code = "invalid_verification_token"
    detail = "The verification link is invalid or has expired; ask for a new one."


class AlreadyVerified(Conflict):
    """The address is verified already."""

    code = "already_verified"
    detail = "This email address is already verified."


class EmailNotVerified(Forbidden):
    """EMAIL_VERIFICATION=required and the account's address is not verified yet."""

    code = "email_not_verified"
    detail = "Verify your email address first; the link is in the mail we sent."


class MfaUnavailable(ServiceUnavailable):
    """TOTP secrets cannot be encrypted or read: ENCRYPTION_KEY is unset, or lacks the key a secret needs."""

    code = "mfa_unavailable"
    detail = "The second factor is unavailable on this server; try again later or use a recovery code."


# Werkzeug's HTTP errors mapped to stable codes.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
}

for _status, _code in HTTP_CODES.items():
    register(_code, _status)
HTTP_ERROR = "http_error"  # any other status Werkzeug raises
register(HTTP_ERROR, 0)  # 0: no fixed status

DATABASE_DOWN = (OperationalError, DisconnectionError, TimeoutError)


def request_id() -> str:
    """The id of the current request: the caller's X-Request-ID if sane, else a new one."""
    rid = g.get("request_id")
    if rid is None:
        rid = g.request_id = choose_request_id(request.headers.get("X-Request-ID"))
    return rid


def problem_body(
    status: int,
    code: str,
    detail: str,
    *,
    request_id: str,
    errors: dict[str, Any] | None = None,
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An RFC 9457 problem document with the service's envelope (and any extension members).

    The one builder of error bodies: Flask's handlers and the verification fast path (app/hotpath.py)
    both render through it.
    """
    body: dict[str, Any] = {
        **(extensions or {}),
        "success": False,
        "status": status,
        "title": HTTPStatus(status).phrase,
        "code": code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    if status >= 500:
        body["request_id"] = request_id
    return body


def error_body(error: AppError, request_id: str) -> dict[str, Any]:
    """The problem document of a domain error."""
    return problem_body(
        error.status, error.code, error.detail, request_id=request_id, errors=error.errors, extensions=error.extensions
    )


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    """A problem+json response for the current Flask request."""
    g.problem_code = code  # the per-IP failure budgets tell failures apart by code (app/ratelimit.py)
    body = problem_body(status, code, detail, request_id=request_id(), errors=errors, extensions=extensions)
    response = current_app.response_class(json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_app_error(error: AppError) -> Response:
    """Render a domain error."""
    return problem(
        error.status, error.code, error.detail, errors=error.errors, headers=error.headers, extensions=error.extensions
    )


def handle_http_exception(error: HTTPException) -> Response:
    """Render Werkzeug's errors (404, 405, 413, …) as problem+json, keeping their headers."""
    status = error.code or 500
    headers = {}
    detail = (error.description or "") if status < 500 else "The server could not complete the request."
    valid_methods = getattr(error, "valid_methods", None)
    if status == 405 and valid_methods:
        headers["Allow"] = ", ".join(valid_methods)
        # RFC 9110 15.5.6 wants the Allow header; the document says it too, for clients that show only the body.
        detail = f"The method is not allowed for this URL; allowed: {headers['Allow']}."
    if status == 429:
        headers["Retry-After"] = str(_limit_retry_after())
    return problem(status, HTTP_CODES.get(status, HTTP_ERROR), detail, headers=headers)


def _limit_retry_after() -> int:
    """Seconds until the per-IP window Flask-Limiter refused this request in resets (at least 1)."""
    limiter = current_app.extensions.get("auth_limiter")
    current = getattr(limiter, "current_limit", None) if limiter is not None else None
    if current is None:
        return 1
    # limits rounds the window's end up to the next second; never say more than the window itself.
    return max(1, min(math.ceil(current.reset_at - time.time()), current.limit.get_expiry()))


def _malformed_body(error: Exception) -> bool:
    """The client's body could not be read as HTTP frames it (a bad chunk size, a cut-off body)."""
    try:
        from gunicorn.http.errors import NoMoreData, ParseException
    except ImportError:  # served by something other than gunicorn
        return False
    return isinstance(error, ParseException | NoMoreData)


def as_app_error(error: Exception, request_id: str) -> AppError:
    """What an unexpected exception is answered with: 503 for a database outage, else a logged 500.

    An outage is expected in operation (down, or past DATABASE_STATEMENT_TIMEOUT): one line, no
    traceback (app/outage.py). Anything else is a bug: its traceback is logged, never sent (ASVS 7.4.1).
    """
    if isinstance(error, DATABASE_DOWN) or (isinstance(error, DBAPIError) and error.connection_invalidated):
        current_app.extensions["database_outage"].failed(error, request_id)
        return ServiceUnavailable()
    log.exception("unhandled error [request_id=%s]", request_id, exc_info=error)
    return AppError()


def handle_unexpected(error: Exception) -> Response:
    """Answer a malformed body 400, and anything else as as_app_error says."""
    if _malformed_body(error):
        # gunicorn raises while the view reads a malformed chunked body: the client's fault, a 400.
        return problem(400, "bad_request", "The request body is not valid HTTP framing (chunked encoding).")
    return handle_app_error(as_app_error(error, request_id()))


def register_errorhandlers(app: Flask) -> None:
    """Install the three handlers: AppError, HTTPException, Exception."""
    app.register_error_handler(AppError, handle_app_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)

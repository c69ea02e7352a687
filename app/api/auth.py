"""Controllers of signup, login, refresh, logout, checkToken and validate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, g, request

from app import hotpath
from app.api import cookies
from app.api.access import bearer_token, client_info, login_required, token_argument
from app.api.openapi import BEARER_SECURITY, REFRESH_COOKIE_PARAMETER, SET_COOKIE_HEADER, Blueprint
from app.errors import TokenError, request_id
from app.models import User
from app.schemas.auth import (
    CheckTokenRequestSchema,
    LoginRequestSchema,
    LoginResponseSchema,
    LogoutRequestSchema,
    LogoutResponseSchema,
    RefreshRequestSchema,
    RefreshResponseSchema,
    SignupRequestSchema,
    SignupResponseSchema,
    TokenResponseSchema,
    ValidateResponseSchema,
)
from app.schemas.mfa import LoginMfaRequestSchema, MfaRequiredSchema
from app.services import accounts, mfa, sessions
from app.services.issuing import TokenPair

blp = Blueprint("auth", __name__, description="Accounts and tokens")


def signed_in(args: dict[str, Any], sign_in: Callable[..., tuple[User, TokenPair]]) -> dict[str, Any]:
    """The answer of a sign-in (signup, login, login/mfa): `sign_in(**args, **client_info())`'s user
    and new pair, the refresh token in the body or, asked with `cookie: true`, in the cookie."""
    cookie = cookies.wants_cookie(args)  # taken out of args (and the Origin checked) before the service runs
    user, pair = sign_in(**args, **client_info())
    return {"user": user, **cookies.token_body(pair, cookie=cookie)}


@blp.route("/signup", methods=["POST"])
@blp.arguments(SignupRequestSchema)
@blp.response(201, SignupResponseSchema, headers=SET_COOKIE_HEADER)
@blp.problem(403, "origin_not_allowed: `cookie: true` from a foreign Origin")
@blp.problem(409, "email_taken or username_taken")
def signup(args):
    """Create an account (role `user`) and sign it in.

    A reserved username (RESERVED_USERNAMES) is 400 `username_reserved` unless an admin sets it.
    """
    answer = signed_in(args, accounts.signup)
    return {"user_id": answer["user"].id, **answer}


@blp.route("/login", methods=["POST"])
@blp.arguments(LoginRequestSchema)
@blp.response(200, LoginResponseSchema, headers=SET_COOKIE_HEADER)
@blp.problem(
    401,
    "invalid_credentials; or, for an account with a second factor, `mfa_required` with `mfa_token` "
    "and `mfa_methods` (no tokens yet: finish at POST /login/mfa)",
    schema=MfaRequiredSchema,
)
@blp.problem(403, "account_disabled; origin_not_allowed: `cookie: true` from a foreign Origin")
def login(args):
    """Sign in with email or username and password; opens a new session (access tokens: `amr: ["pwd"]`).

    An account with a second factor gets 401 `mfa_required` instead, with an `mfa_token`
    (single use, 5 minutes, void when the password changes) for POST /login/mfa.
    """
    return signed_in(args, accounts.login)


@blp.route("/login/mfa", methods=["POST"])
@blp.arguments(LoginMfaRequestSchema)
@blp.response(200, LoginResponseSchema, headers=SET_COOKIE_HEADER)
@blp.problem(400, "invalid_mfa_code: wrong, replayed or out-of-window code, or a wrong or used recovery code")
@blp.problem(401, "invalid_mfa_token: unknown, used, expired, or issued before a password change")
@blp.problem(403, "origin_not_allowed: `cookie: true` from a foreign Origin")
@blp.problem(503, "mfa_unavailable: TOTP secrets cannot be read on this server (a recovery code still works)")
def login_mfa(args):
    """Finish a two-step login with a TOTP `code` or a `recovery_code`: the /login answer, `amr: ["pwd", "otp"]`.

    Wrong codes count against the account's login throttle like wrong passwords (429 too_many_attempts).
    `cookie: true` is given here (the /login that answered mfa_required issued no token).
    """
    return signed_in(args, mfa.complete_login)


@blp.route("/refresh", methods=["POST"])
@blp.arguments(RefreshRequestSchema)
@blp.response(200, RefreshResponseSchema, headers=SET_COOKIE_HEADER)
@blp.problem(401, "Invalid token, or token_reused (a cookie that failed is cleared)")
@blp.problem(403, "origin_not_allowed: the cookie, or `cookie: true`, from a missing or foreign Origin")
@blp.doc(security=BEARER_SECURITY + [{}], parameters=[REFRESH_COOKIE_PARAMETER])
def refresh(args):
    """Spend a refresh token for a new pair. A spent token presented again revokes its session.

    The token is the body's `refresh_token`, else the `__Host-refresh_token` cookie, else the
    Bearer credential. Spending the cookie sets the next one there too, as `cookie: true` does.
    """
    cookie = cookies.wants_cookie(args)
    from_cookie = None if args.get("refresh_token") else cookies.refresh_token_from_cookie()
    try:
        pair = sessions.rotate_refresh(from_cookie or token_argument(args, "refresh_token"))
    except TokenError:
        if from_cookie is not None:
            cookies.clear_cookie()  # spent, revoked or expired: of no more use to the browser
        raise
    return cookies.token_body(pair, cookie=cookie or from_cookie is not None)


@blp.route("/logout", methods=["POST"])
@login_required
@blp.arguments(LogoutRequestSchema)
@blp.response(200, LogoutResponseSchema, headers=SET_COOKIE_HEADER)
@blp.problem(401)
@blp.problem(403, "origin_not_allowed: the cookie from a missing or foreign Origin")
@blp.doc(security=BEARER_SECURITY, parameters=[REFRESH_COOKIE_PARAMETER])
def logout(args):
    """Revoke this access token and its session; `all: true` ends every session of the user.

    Without a `refresh_token` in the body, the `__Host-refresh_token` cookie's session is revoked
    too, and the answer clears the cookie.
    """
    from_cookie = None if args.get("refresh_token") else cookies.refresh_token_from_cookie()
    sessions.logout(g.token, refresh_token=args.get("refresh_token") or from_cookie, everywhere=args["all"])
    if from_cookie is not None:
        cookies.clear_cookie()
    return {"message": "Signed out of every session." if args["all"] else "Signed out."}


@blp.route("/checkToken", methods=["POST"])
@blp.arguments(CheckTokenRequestSchema)
@blp.response(200, TokenResponseSchema)
@blp.problem(503, "Validity cannot be established now")
def check_token(args):
    """Tell a service whether an access token is valid, and whose it is.

    The answer is built by app/hotpath.py, which serves the well-formed requests before Flask;
    this view serves the rest (and everything when HOT_PATH is off) through the same builder.
    """
    token = token_argument(args, "token")
    return as_response(hotpath.check_token_answer(token, request.remote_addr, request_id()))


@blp.route("/validate", methods=["GET"])
@blp.response(
    200,
    ValidateResponseSchema,
    headers={
        "X-User-Id": {"description": "The user's id (a UUID).", "schema": {"type": "string", "format": "uuid"}},
        "X-User-Email": {
            "description": "The user's email, percent-encoded UTF-8 (RFC 3986): every byte of a non-ASCII "
            "character, and `%` itself, as `%XX`; any other ASCII character as is, so a plain ASCII "
            "address arrives unchanged. Decode with a percent-decoder that leaves `+` alone "
            "(`urllib.parse.unquote`, `decodeURIComponent`), never a form decoder. docs/GATEWAYS.md.",
            "schema": {"type": "string"},
        },
        "X-User-Roles": {"description": "The user's roles, comma-separated.", "schema": {"type": "string"}},
        "X-User-Amr": {
            "description": 'comma-separated RFC 8176 methods: "pwd", or "pwd,otp" after a second factor',
            "schema": {"type": "string"},
        },
    },
)
@blp.problem(401)
@blp.doc(security=BEARER_SECURITY)
def validate():
    """For gateways (nginx auth_request, Traefik ForwardAuth): 200 with X-User-* headers, or 401."""
    return as_response(hotpath.validate_answer(bearer_token(), request_id()))


def as_response(answer: hotpath.Answer) -> Response:
    """A verification answer (app/hotpath.py) as a Flask response; Flask's hooks add the envelope."""
    status, headers, body = answer
    return Response(body, status=status, headers=headers)

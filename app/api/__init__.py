"""The blueprints (controllers), registered under URL_PREFIX."""

from __future__ import annotations

from flask import Flask

from app.api import audit, auth, me, meta, mfa, users
from app.api.base import Api, ProblemResponses

BLUEPRINTS = (auth.blp, me.blp, mfa.blp, users.blp, audit.blp, meta.blp)
API_DESCRIPTION = """Accounts and JWTs.

* Errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code`;
  validation failures add `errors: {field: [messages]}`. Unknown body fields are rejected (400).
* Access tokens travel as `Authorization: Bearer <token>`. Token responses are `Cache-Control: no-store`.
* A token is valid when its signature verifies with the configured algorithm (HS256 by default;
  ES256/EdDSA/RS256 keys are published at /.well-known/jwks.json), it carries exp, iat, nbf, jti,
  sub, type, iss and sid (and aud when configured), it is within its lifetime (small leeway),
  has the right type, its jti and session are not revoked, and its user exists, is active and
  was not reset or deactivated after it was issued.
  `/checkToken` reasons: expired, revoked (also for a deleted user), invalid, wrong_type, user_inactive.
  If the database cannot be reached the answer is 503, never valid.
* Refresh tokens rotate on every use; a spent one presented again revokes its session (401 token_reused).
  A session ends SESSION_MAX_LIFETIME after its login however often it is refreshed.
* Too many requests from one address, or failed logins on one account, get 429 with Retry-After.
* `POST /me/password` revokes every other session; the caller's session stays signed in.
  An admin password reset or a deactivation voids every token of the account.
* A wrong password on `POST /me/password` or `DELETE /me` is 401 invalid_credentials.
* A user editing their own record via `PATCH /users/{id}` with role, is_active or password gets 403.
* User and session ids are UUIDs; a malformed id is a 404 like an unknown one.
* Second factor (TOTP, RFC 6238, with 10 single-use recovery codes): `POST /me/mfa/totp` then
  `POST /me/mfa/totp/confirm`. Then `POST /login` answers 401 `mfa_required` with an `mfa_token`,
  and `POST /login/mfa` finishes the login. Access tokens carry `amr`: `["pwd"]`, or
  `["pwd", "otp"]` after a second factor (a recovery code counts as "otp" too); refreshing keeps
  it; `/checkToken` answers it and `/validate` sends it as `X-User-Amr`. Wrong codes count
  against the same per-account throttle as wrong passwords.
"""


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint under URL_PREFIX and document the Bearer scheme."""
    prefix = app.config["URL_PREFIX"]
    api = Api(app, spec_kwargs={"info": {"description": API_DESCRIPTION}, "extra_plugins": [ProblemResponses()]})
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint, url_prefix=prefix or None)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})

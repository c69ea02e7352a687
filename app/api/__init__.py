"""The blueprints (controllers), registered under URL_PREFIX."""

from __future__ import annotations

from flask import Flask

from app.api import audit, auth, docs, me, meta, mfa, recovery, users
from app.api.openapi import Api, ProblemResponses, ServerRelativePaths

BLUEPRINTS = (auth.blp, me.blp, mfa.blp, recovery.blp, users.blp, audit.blp, meta.blp)
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
* Browser apps: `"cookie": true` on /signup, /login, /login/mfa and /refresh sets the refresh token as
  the cookie `__Host-refresh_token` (HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age its lifetime)
  instead of the body; /refresh and /logout read it when the body has none, and /logout clears it.
  Such requests need an Origin that is the service's own or in CORS_ORIGINS (403 origin_not_allowed);
  credentialed CORS is for CORS_ORIGINS only.
* Too many requests from one address, or failed logins on one account, get 429 with Retry-After.
* `POST /me/password` revokes every other session; the caller's session stays signed in.
  An admin password reset or a deactivation voids every token of the account.
* A wrong password on `POST /me/password` or `DELETE /me` is 401 invalid_credentials.
* A user editing their own record via `PATCH /users/{id}` with role, is_active or password gets 403.
* Password recovery: `POST /password/forgot` answers 202 alike for every address (an active account
  gets a reset link); `POST /password/reset` spends the token once, revokes every session and voids
  every earlier token. Links work once, expire, and die with a password change or a newer mail.
* With mail configured, `PATCH /me` with a new `email` leaves `email` as it is and sets `pending_email`
  until the link mailed to the new address is followed (`POST /email/verify`); without mail (503
  `mail_unavailable` from the endpoints that must send one) the change is immediate and unverified.
* `EMAIL_VERIFICATION=required`: a login before the address is verified is 403 email_not_verified.
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
    plugins = [ServerRelativePaths(prefix), ProblemResponses()]
    api = Api(app, spec_kwargs={"info": {"description": API_DESCRIPTION}, "extra_plugins": plugins})
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint, url_prefix=prefix or None)
    app.register_blueprint(docs.blp, url_prefix=prefix or None)  # not an API operation: undocumented
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})

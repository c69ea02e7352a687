"""Request and response schemas of signup, login, refresh, logout, checkToken and validate."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validates_schema

from app.schemas.common import UserSchema
from app.schemas.fields import Email, Password, StrictBoolean, Text, Username

COOKIE_DESCRIPTION = (
    "Browser apps: true sets the refresh token as the HttpOnly cookie `__Host-refresh_token` "
    "(Secure; SameSite=Strict; Path=/; Max-Age its lifetime) and leaves it out of the body. "
    "A request with a foreign `Origin` is 403 origin_not_allowed."
)


def cookie_field() -> StrictBoolean:
    """The `cookie` flag of the requests that issue a pair (signup, login, login/mfa, refresh)."""
    return StrictBoolean(load_default=False, metadata={"description": COOKIE_DESCRIPTION})


class NewAccountSchema(Schema):
    """An account's own fields, as /signup and an admin's POST /users take them."""

    email = Email(required=True)
    password = Password(required=True)
    name = Text(required=True, max_length=100)
    username = Username(allow_none=True)
    password_confirm = Password()

    @validates_schema
    def _confirmation_matches(self, data, **kwargs):
        """password_confirm, when given, must equal password."""
        if "password_confirm" in data and data.get("password") != data["password_confirm"]:
            raise ValidationError("Does not match password.", field_name="password_confirm")

    @post_load
    def _drop_confirmation(self, data, **kwargs):
        """Checked above, and of no use past the schema: no controller or service sees it."""
        data.pop("password_confirm", None)
        return data


class SignupRequestSchema(NewAccountSchema):
    """POST /signup. Unknown fields (role, is_active, id, …) are rejected, never applied."""

    cookie = cookie_field()


class LoginRequestSchema(Schema):
    """POST /login: a password and exactly one of email or username."""

    email = Email()
    username = fields.String(validate=lambda s: 0 < len(s) <= 254)
    password = Password(required=True)
    cookie = cookie_field()

    @validates_schema
    def _one_identifier(self, data, **kwargs):
        """Exactly one identifier."""
        given = [name for name in ("email", "username") if data.get(name)]
        if len(given) != 1:
            raise ValidationError("Give exactly one of email or username.", field_name="_schema")


class TokenPairSchema(Schema):
    """The token fields of signup, login and refresh."""

    access_token = fields.String()
    refresh_token = fields.String(
        metadata={"description": "Absent in cookie mode: then it is in the `__Host-refresh_token` cookie"}
    )
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"description": "Access token lifetime, seconds"})


class SignupResponseSchema(TokenPairSchema):
    """201 from /signup."""

    success = fields.Boolean(dump_default=True)
    user_id = fields.UUID()
    user = fields.Nested(UserSchema)


class LoginResponseSchema(TokenPairSchema):
    """200 from /login."""

    success = fields.Boolean(dump_default=True)
    user = fields.Nested(UserSchema)


class RefreshRequestSchema(Schema):
    """POST /refresh: the refresh token here, else the `__Host-refresh_token` cookie, else the Bearer credential."""

    refresh_token = fields.String(
        validate=lambda s: len(s) <= 8192, metadata={"description": "Empty counts as missing"}
    )
    cookie = cookie_field()


class RefreshResponseSchema(TokenPairSchema):
    """200 from /refresh: a new pair; the presented refresh token is now spent."""

    success = fields.Boolean(dump_default=True)


class LogoutRequestSchema(Schema):
    """POST /logout: optionally also a refresh token (else the cookie's), or `all` to end every session."""

    refresh_token = fields.String(validate=lambda s: 0 < len(s) <= 8192)
    all = StrictBoolean(load_default=False)


class LogoutResponseSchema(Schema):
    """200 from /logout."""

    success = fields.Boolean(dump_default=True)
    message = fields.String()


class CheckTokenRequestSchema(Schema):
    """POST /checkToken: the token here or as the Bearer credential."""

    token = fields.String(validate=lambda s: len(s) <= 8192, metadata={"description": "Empty counts as missing"})


class TokenResponseSchema(Schema):
    """200 from /checkToken: `valid` and who, or `valid: false` and why."""

    success = fields.Boolean(dump_default=True)
    valid = fields.Boolean()
    user_id = fields.String()
    email = fields.String()
    roles = fields.List(fields.String())
    expires_at = fields.DateTime()
    jti = fields.String()
    sid = fields.String()
    amr = fields.List(
        fields.String(),
        metadata={"description": 'RFC 8176 methods of the login: ["pwd"], or ["pwd", "otp"] after a second factor'},
    )
    reason = fields.String(
        metadata={
            "enum": ["expired", "revoked", "invalid", "wrong_type", "user_inactive"],
            "description": "Only when valid is false",
        }
    )


class ValidateResponseSchema(Schema):
    """200 from /validate; the identity is in the X-User-* headers."""

    success = fields.Boolean(dump_default=True)

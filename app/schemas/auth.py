"""Request and response schemas of signup, login, refresh, logout, checkToken and validate."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validates_schema

from app.schemas.common import UserSchema
from app.schemas.fields import Email, Password, StrictBoolean, Text, Username


class SignupRequestSchema(Schema):
    """POST /signup. Unknown fields (role, is_active, id, …) are rejected, never applied."""

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


class LoginRequestSchema(Schema):
    """POST /login: a password and exactly one of email or username."""

    email = Email()
    username = fields.String(validate=lambda s: 0 < len(s) <= 254)
    password = Password(required=True)

    @validates_schema
    def _one_identifier(self, data, **kwargs):
        """Exactly one identifier."""
        given = [name for name in ("email", "username") if data.get(name)]
        if len(given) != 1:
            raise ValidationError("Give exactly one of email or username.", field_name="_schema")


class TokenPairSchema(Schema):
    """The token fields of signup, login and refresh."""

    access_token = fields.String()
    refresh_token = fields.String()
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
    """POST /refresh: the refresh token here or as the Bearer credential."""

    refresh_token = fields.String(
        validate=lambda s: len(s) <= 8192, metadata={"description": "Empty counts as missing"}
    )


class RefreshResponseSchema(TokenPairSchema):
    """200 from /refresh: a new pair; the presented refresh token is now spent."""

    success = fields.Boolean(dump_default=True)


class LogoutRequestSchema(Schema):
    """POST /logout: optionally also a refresh token, or `all` to end every session."""

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
    user_id = fields.String(metadata={"description": "A user's token"})
    client_id = fields.String(
        metadata={"description": "A service client's token (POST /oauth/token): no user_id, email, sid"}
    )
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

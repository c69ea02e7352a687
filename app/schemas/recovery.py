"""Schemas of account recovery and email verification."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.schemas.fields import Email, Password


class Token(fields.String):
    """A token from a mail: URL-safe text of bounded length (anything else cannot be one)."""

    def __init__(self, **kwargs) -> None:
        """Required, load-only (never echoed), at most 512 characters."""
        super().__init__(
            required=True,
            load_only=True,
            validate=validate.Length(min=1, max=512),
            metadata={"description": "The token from the link in the mail"},
            **kwargs,
        )


class ForgotPasswordSchema(Schema):
    """POST /password/forgot."""

    email = Email(required=True)


class ResetPasswordSchema(Schema):
    """POST /password/reset."""

    token = Token()
    new_password = Password(required=True)


class VerifyEmailSchema(Schema):
    """POST /email/verify."""

    token = Token()


class AcceptedSchema(Schema):
    """202: the request is taken; a mail follows when it applies."""

    success = fields.Boolean(dump_default=True)
    message = fields.String()

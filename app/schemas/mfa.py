"""Schemas of the second factor: enrolment, confirmation, removal, recovery codes, the two-step login."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.schemas.auth import cookie_field
from app.schemas.fields import Password


def _code(**kwargs) -> fields.String:
    """A 6-digit TOTP code (load-only: codes are never echoed)."""
    return fields.String(
        load_only=True,
        validate=validate.Regexp(r"^[0-9]{6}$", error="Must be the 6 digits the authenticator app shows."),
        metadata={"description": "The 6-digit code of the authenticator app", "example": "123456"},
        **kwargs,
    )


def _recovery_code() -> fields.String:
    """A recovery code as shown at enrolment (dashes and case do not matter)."""
    return fields.String(
        load_only=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "One of the recovery codes, e.g. abcd-efgh-ijkl-mnop; each works once"},
    )


class _OneFactor(Schema):
    """Exactly one of `code` and `recovery_code`."""

    code = _code()
    recovery_code = _recovery_code()

    @validates_schema
    def _exactly_one(self, data, **kwargs):
        """One second factor, not both, not none."""
        if ("code" in data) == ("recovery_code" in data):
            raise ValidationError("Give exactly one of code or recovery_code.", field_name="_schema")


class EnrolRequestSchema(Schema):
    """POST /me/mfa/totp: the password again."""

    password = Password(required=True)


class EnrolResponseSchema(Schema):
    """200 from POST /me/mfa/totp: the seed, shown this once; MFA is not on until confirmed."""

    success = fields.Boolean(dump_default=True)
    secret = fields.String(metadata={"description": "The TOTP seed, base32 (for typing into an app)"})
    otpauth_uri = fields.String(metadata={"description": "otpauth://totp/… (issuer and account = email)"})
    qr_svg = fields.String(metadata={"description": "The otpauth URI as a QR code, an SVG document"})


class ConfirmRequestSchema(Schema):
    """POST /me/mfa/totp/confirm: a first code from the app."""

    code = _code(required=True)


class RecoveryCodesResponseSchema(Schema):
    """The recovery codes, shown only in this answer."""

    success = fields.Boolean(dump_default=True)
    recovery_codes = fields.List(
        fields.String(), metadata={"description": "10 single-use codes; store them offline. Shown only now."}
    )


class DisableRequestSchema(_OneFactor):
    """DELETE /me/mfa: the password and a code (or a recovery code)."""

    password = Password(required=True)


class RegenerateRequestSchema(Schema):
    """POST /me/mfa/recovery-codes: the password and a TOTP code."""

    password = Password(required=True)
    code = _code(required=True)


class LoginMfaRequestSchema(_OneFactor):
    """POST /login/mfa: the mfa_token of the `mfa_required` answer and a code (or a recovery code)."""

    mfa_token = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=128))
    cookie = cookie_field()


class MfaRequiredSchema(Schema):
    """The extension members of the 401 `mfa_required` problem document."""

    success = fields.Boolean(metadata={"example": False})
    status = fields.Integer(metadata={"example": 401})
    title = fields.String()
    code = fields.String(metadata={"example": "mfa_required"})
    detail = fields.String()
    mfa_token = fields.String(metadata={"description": "Single use, for 5 minutes: send it to POST /login/mfa"})
    mfa_methods = fields.List(fields.String(), metadata={"example": ["totp", "recovery_code"]})

"""Schemas shared across resources: the problem document, the user, messages."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.errors import CODES
from app.models import ROLES


class ProblemSchema(Schema):
    """RFC 9457 problem document (every error)."""

    success = fields.Boolean(metadata={"example": False})
    status = fields.Integer(metadata={"example": 401})
    title = fields.String(metadata={"example": "Unauthorized"})
    code = fields.String(
        metadata={
            "description": "Stable snake_case code to switch on (app/errors.py CODES; docs/CONTRACT.md §7)",
            "example": "invalid_credentials",
            "enum": sorted(CODES),
        }
    )
    detail = fields.String()
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Field errors, on validation failures"},
    )
    request_id = fields.String(metadata={"description": "On 5xx only: quote it when reporting a problem"})


class UserSchema(Schema):
    """A user as every response shows it; never a password hash or anything derived from it."""

    id = fields.UUID(dump_only=True)
    email = fields.String()
    username = fields.String(allow_none=True)
    name = fields.String()
    role = fields.String(metadata={"enum": list(ROLES)})
    is_active = fields.Boolean()
    email_verified = fields.Boolean()
    pending_email = fields.String(
        allow_none=True, metadata={"description": "A new address waiting for its confirmation link, else null"}
    )
    mfa_enabled = fields.Boolean(metadata={"description": "A second factor (TOTP) is on for this account"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


def per_page_field(default: int) -> fields.Integer:
    """The `per_page` query parameter of a list endpoint: 1 to 100, `default` when absent."""
    return fields.Integer(load_default=default, validate=validate.Range(min=1, max=100))


class PageQuerySchema(Schema):
    """The query parameters every list endpoint takes: `page` (from 1) and `per_page`."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    per_page = per_page_field(20)


class PageSchema(Schema):
    """What every list endpoint answers beside its `items` (app/services/pages.py Page)."""

    success = fields.Boolean(dump_default=True)
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()


class UserResponseSchema(Schema):
    """A single user."""

    success = fields.Boolean(dump_default=True)
    user = fields.Nested(UserSchema)


class MessageResponseSchema(Schema):
    """A success with a human message."""

    success = fields.Boolean(dump_default=True)
    message = fields.String()

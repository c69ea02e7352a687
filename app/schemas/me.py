"""Schemas of the self-service endpoints under /me."""

from __future__ import annotations

from marshmallow import Schema, fields

from app.schemas.fields import Email, Password, Text, Username


class UserUpdateMeSchema(Schema):
    """PATCH /me: only these fields; role, is_active and id are rejected."""

    name = Text(max_length=100)
    email = Email()
    username = Username(allow_none=True)


class PasswordChangeSchema(Schema):
    """POST /me/password."""

    current_password = Password(required=True)
    new_password = Password(required=True)


class DeleteMeSchema(Schema):
    """DELETE /me: the password again, to confirm."""

    password = Password(required=True)


class SessionSchema(Schema):
    """One login session."""

    id = fields.UUID()
    created_at = fields.DateTime()
    last_used_at = fields.DateTime()
    user_agent = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    current = fields.Boolean(metadata={"description": "The session of the token making this call"})


class SessionListSchema(Schema):
    """GET /me/sessions: the live sessions, newest use first."""

    success = fields.Boolean(dump_default=True)
    items = fields.List(fields.Nested(SessionSchema))

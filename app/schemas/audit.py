"""Schemas of the audit trail endpoint."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.services.audit import EVENTS


class AuditQuerySchema(Schema):
    """GET /audit query parameters."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    user = fields.UUID(metadata={"description": "Events where this user is the actor or the target"})
    event = fields.String(validate=validate.OneOf(EVENTS))


class AuditEventSchema(Schema):
    """One audit event."""

    id = fields.Integer()
    event = fields.String(metadata={"enum": list(EVENTS)})
    actor_id = fields.UUID(allow_none=True, metadata={"description": "Who acted; null for the CLI or anonymous"})
    target_id = fields.UUID(allow_none=True)
    ip = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    created_at = fields.DateTime()
    details = fields.Dict(allow_none=True)


class AuditListSchema(Schema):
    """A page of audit events, newest first."""

    success = fields.Boolean(dump_default=True)
    items = fields.List(fields.Nested(AuditEventSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()

"""Schemas of the audit trail endpoint."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.models.audit import EVENTS
from app.schemas.common import PageQuerySchema, PageSchema, per_page_field


class AuditQuerySchema(PageQuerySchema):
    """GET /audit query parameters."""

    per_page = per_page_field(50)
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


class AuditListSchema(PageSchema):
    """A page of audit events, newest first."""

    items = fields.List(fields.Nested(AuditEventSchema))

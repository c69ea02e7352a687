"""Schemas of the operational endpoints."""

from __future__ import annotations

from marshmallow import Schema, fields


class HealthSchema(Schema):
    """Liveness and readiness."""

    success = fields.Boolean(dump_default=True)
    status = fields.String()


class JWKSetSchema(Schema):
    """RFC 7517 JWK set."""

    keys = fields.List(fields.Dict())

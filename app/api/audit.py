"""Controller of the audit trail: GET /audit (admins)."""

from __future__ import annotations

from app.api.access import admin_required
from app.api.openapi import BEARER_SECURITY, Blueprint
from app.schemas.audit import AuditListSchema, AuditQuerySchema
from app.services import audit

blp = Blueprint("audit", __name__, description="Audit trail")


@blp.route("/audit", methods=["GET"])
@admin_required
@blp.arguments(AuditQuerySchema, location="query")
@blp.response(200, AuditListSchema)
@blp.problem(403)
@blp.doc(security=BEARER_SECURITY)
def list_events(args):
    """Security events, newest first, filtered by user (actor or target) and event (admins)."""
    return audit.list_events(
        page=args["page"], per_page=args["per_page"], user_id=args.get("user"), event=args.get("event")
    )

"""Controllers of the second factor under /me/mfa: enrol, confirm, disable, new recovery codes."""

from __future__ import annotations

from app.api.access import caller, login_required
from app.api.openapi import BEARER_SECURITY, Blueprint
from app.schemas.common import MessageResponseSchema
from app.schemas.mfa import (
    ConfirmRequestSchema,
    DisableRequestSchema,
    EnrolRequestSchema,
    EnrolResponseSchema,
    RecoveryCodesResponseSchema,
    RegenerateRequestSchema,
)
from app.services import mfa

blp = Blueprint("mfa", __name__, description="The signed-in user's second factor (TOTP and recovery codes)")


@blp.route("/me/mfa/totp", methods=["POST"])
@login_required
@blp.arguments(EnrolRequestSchema)
@blp.response(200, EnrolResponseSchema)
@blp.problem(401, "invalid_credentials: wrong password")
@blp.problem(409, "mfa_already_enabled")
@blp.problem(503, "mfa_unavailable: no ENCRYPTION_KEY on this server")
@blp.doc(security=BEARER_SECURITY)
def enrol(args):
    """Start a TOTP enrolment: the seed (shown this once), its otpauth URI and QR code. Not on until confirmed."""
    return mfa.start_enrolment(caller(), password=args["password"])


@blp.route("/me/mfa/totp/confirm", methods=["POST"])
@login_required
@blp.arguments(ConfirmRequestSchema)
@blp.response(200, RecoveryCodesResponseSchema)
@blp.problem(400, "invalid_mfa_code")
@blp.problem(409, "mfa_already_enabled, or mfa_not_pending (no enrolment started)")
@blp.problem(503, "mfa_unavailable")
@blp.doc(security=BEARER_SECURITY)
def confirm(args):
    """Turn the second factor on with a first code; answers the 10 recovery codes, shown only now."""
    return {"recovery_codes": mfa.confirm_enrolment(caller(), code=args["code"])}


@blp.route("/me/mfa", methods=["DELETE"])
@login_required
@blp.arguments(DisableRequestSchema)
@blp.response(200, MessageResponseSchema)
@blp.problem(400, "invalid_mfa_code")
@blp.problem(401, "invalid_credentials: wrong password")
@blp.problem(409, "mfa_not_enabled")
@blp.problem(503, "mfa_unavailable (with a TOTP code; a recovery code still works)")
@blp.doc(security=BEARER_SECURITY)
def disable(args):
    """Turn the second factor off: the password and a `code` or a `recovery_code`; the user gets a notice."""
    mfa.disable(caller(), **args)
    return {"message": "Second factor disabled."}


@blp.route("/me/mfa/recovery-codes", methods=["POST"])
@login_required
@blp.arguments(RegenerateRequestSchema)
@blp.response(200, RecoveryCodesResponseSchema)
@blp.problem(400, "invalid_mfa_code")
@blp.problem(401, "invalid_credentials: wrong password")
@blp.problem(409, "mfa_not_enabled")
@blp.problem(503, "mfa_unavailable")
@blp.doc(security=BEARER_SECURITY)
def regenerate_codes(args):
    """New recovery codes (password and a TOTP code); every earlier one is void."""
    return {"recovery_codes": mfa.regenerate_recovery_codes(caller(), **args)}

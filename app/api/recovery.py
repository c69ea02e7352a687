"""Controllers of account recovery and email verification: /password/*, /email/verify, /me/email/verify."""

from __future__ import annotations

from app.api.access import caller, client_info, login_required
from app.api.openapi import BEARER_SECURITY, Blueprint
from app.schemas.common import MessageResponseSchema, UserResponseSchema
from app.schemas.recovery import AcceptedSchema, ForgotPasswordSchema, ResetPasswordSchema, VerifyEmailSchema
from app.services import recovery

blp = Blueprint("recovery", __name__, description="Password recovery and email verification")

FORGOT_MESSAGE = "If an active account has this address, a reset link is on its way."


@blp.route("/password/forgot", methods=["POST"])
@blp.arguments(ForgotPasswordSchema)
@blp.response(202, AcceptedSchema)
@blp.problem(429, "rate_limited: too many requests from this address, or for this email")
@blp.problem(503, "mail_unavailable")
def forgot_password(args):
    """Ask for a reset link. The same answer whether or not the account exists; an active one gets a mail."""
    recovery.request_password_reset(email=args["email"], **client_info())
    return {"message": FORGOT_MESSAGE}


@blp.route("/password/reset", methods=["POST"])
@blp.arguments(ResetPasswordSchema)
@blp.response(200, MessageResponseSchema)
@blp.problem(400, "invalid_reset_token, or validation_error (the password policy)")
def reset_password(args):
    """Set a new password with the token from a reset mail; every session of the account is signed out."""
    recovery.reset_password(**args)
    return {"message": "Password changed; sign in with the new one."}


@blp.route("/email/verify", methods=["POST"])
@blp.arguments(VerifyEmailSchema)
@blp.response(200, UserResponseSchema)
@blp.problem(400, "invalid_verification_token")
@blp.problem(409, "email_taken: the new address was taken meanwhile")
def verify_email(args):
    """Confirm an address (or a new address) with the token from a verification mail."""
    return {"user": recovery.verify_email(**args)}


@blp.route("/me/email/verify", methods=["POST"])
@login_required
@blp.response(202, AcceptedSchema)
@blp.problem(409, "already_verified")
@blp.problem(429, "rate_limited")
@blp.problem(503, "mail_unavailable")
@blp.doc(security=BEARER_SECURITY)
def send_verification():
    """Send a new verification mail to the signed-in user's address."""
    recovery.send_verification(caller())
    return {"message": "A verification link is on its way."}

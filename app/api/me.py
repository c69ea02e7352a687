"""Controllers of the self-service endpoints: /me, /me/password, /me/sessions."""

from __future__ import annotations

from flask import g

from app import hotpath
from app.api.access import bearer_token, caller, login_required
from app.api.auth import as_response
from app.api.openapi import BEARER_SECURITY, Blueprint
from app.errors import request_id
from app.schemas.common import MessageResponseSchema, UserResponseSchema
from app.schemas.me import DeleteMeSchema, PasswordChangeSchema, SessionListSchema, UserUpdateMeSchema
from app.services import accounts

blp = Blueprint("me", __name__, description="The signed-in user's own account")


@blp.route("/me", methods=["GET"])
@blp.response(200, UserResponseSchema)
@blp.problem(401)
@blp.doc(security=BEARER_SECURITY)
def get_me():
    """The signed-in user (as verification found them: no query of its own).

    Served by the fast path (app/hotpath.py) through the same builder, which verifies the token
    itself: this view is what answers HEAD, or a request with a query string.
    """
    return as_response(hotpath.me_answer(bearer_token(), request_id()))


@blp.route("/me", methods=["PATCH"])
@login_required
@blp.arguments(UserUpdateMeSchema)
@blp.response(200, UserResponseSchema)
@blp.problem(409, "email_taken or username_taken")
@blp.doc(security=BEARER_SECURITY)
def update_me(args):
    """Change one's own name, email or username (a new email is unverified).

    A reserved username (RESERVED_USERNAMES) is 400 `username_reserved` unless an admin sets it.
    """
    return {"user": accounts.update_me(caller(), args)}


@blp.route("/me", methods=["DELETE"])
@login_required
@blp.arguments(DeleteMeSchema)
@blp.response(200, MessageResponseSchema)
@blp.problem(401, "invalid_credentials: wrong password")
@blp.problem(409, "last_admin")
@blp.doc(security=BEARER_SECURITY)
def delete_me(args):
    """Delete one's own account and every token of it; needs the password."""
    accounts.delete_me(caller(), password=args["password"])
    return {"message": "Account deleted."}


@blp.route("/me/password", methods=["POST"])
@login_required
@blp.arguments(PasswordChangeSchema)
@blp.response(200, MessageResponseSchema)
@blp.problem(401, "invalid_credentials: wrong current password")
@blp.doc(security=BEARER_SECURITY)
def change_password(args):
    """Change the password; every other session is revoked, this one stays signed in."""
    accounts.change_password(caller(), current_sid=g.token.sid, **args)
    return {"message": "Password changed; other sessions were signed out."}


@blp.route("/me/sessions", methods=["GET"])
@login_required
@blp.response(200, SessionListSchema)
@blp.doc(security=BEARER_SECURITY)
def list_sessions():
    """The signed-in user's live sessions; `current` marks the caller's."""
    return {"items": accounts.list_sessions(caller(), current_sid=g.token.sid)}


@blp.route("/me/sessions/<session_id>", methods=["DELETE"])
@login_required
@blp.response(200, MessageResponseSchema)
@blp.problem(404)
@blp.doc(security=BEARER_SECURITY)
def revoke_session(session_id):
    """Revoke one of one's own sessions and every token of it."""
    accounts.revoke_session(caller(), session_id)
    return {"message": "Session revoked."}

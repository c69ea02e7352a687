"""Controllers of user management: /users (admins), /users/{id} (admins or the user)."""

from __future__ import annotations

from app.api.access import admin_required, caller, login_required
from app.api.openapi import BEARER_SECURITY, Blueprint
from app.schemas.common import MessageResponseSchema, UserResponseSchema
from app.schemas.users import (
    UserCreateSchema,
    UserDeleteSchema,
    UserListQuerySchema,
    UserListSchema,
    UserUpdateSchema,
)
from app.services import mfa, users

blp = Blueprint("users", __name__, description="User management")


@blp.route("/users", methods=["GET"])
@admin_required
@blp.arguments(UserListQuerySchema, location="query")
@blp.response(200, UserListSchema)
@blp.problem(403)
@blp.doc(security=BEARER_SECURITY)
def list_users(args):
    """List users, paginated and filtered (admins)."""
    return users.list_users(**args)


@blp.route("/users", methods=["POST"])
@admin_required
@blp.arguments(UserCreateSchema)
@blp.response(201, UserResponseSchema)
@blp.problem(409, "email_taken or username_taken")
@blp.doc(security=BEARER_SECURITY)
@blp.problem(403)
def create_user(args):
    """Create a user with a role and status (admins)."""
    return {"user": users.create_user(actor=caller(), **args)}


@blp.route("/users/<user_id>", methods=["GET"])
@login_required
@blp.response(200, UserResponseSchema)
@blp.problem(404)
@blp.doc(security=BEARER_SECURITY)
@blp.problem(403)
def get_user(user_id):
    """One user (admins, or the user themself)."""
    return {"user": users.visible_user(actor=caller(), target_id=user_id)}


@blp.route("/users/<user_id>", methods=["PATCH"])
@login_required
@blp.arguments(UserUpdateSchema)
@blp.response(200, UserResponseSchema)
@blp.problem(409, "email_taken, username_taken or last_admin")
@blp.doc(security=BEARER_SECURITY)
@blp.problem(403)
@blp.problem(404)
def update_user(args, user_id):
    """Change a user: admins any field; the user themself name, email and username.

    A reserved username (RESERVED_USERNAMES) is 400 `username_reserved` unless an admin sets it.
    """
    return {"user": users.update_user(actor=caller(), target_id=user_id, changes=args)}


@blp.route("/users/<user_id>", methods=["DELETE"])
@login_required
@blp.arguments(UserDeleteSchema)
@blp.response(200, MessageResponseSchema)
@blp.problem(400, "validation_error: `password` is required to delete one's own account")
@blp.problem(401, "invalid_credentials: wrong password for one's own account")
@blp.problem(409, "last_admin")
@blp.doc(security=BEARER_SECURITY)
@blp.problem(403)
@blp.problem(404)
def delete_user(args, user_id):
    """Delete a user and all their tokens (admins; or the user themself, with their password as for DELETE /me)."""
    users.delete_user(actor=caller(), target_id=user_id, password=args.get("password"))
    return {"message": "User deleted."}


@blp.route("/users/<user_id>/mfa", methods=["DELETE"])
@admin_required
@blp.response(200, MessageResponseSchema)
@blp.problem(403, "forbidden: not an admin, or one's own account (use DELETE /me/mfa)")
@blp.problem(404)
@blp.problem(409, "mfa_not_enabled")
@blp.doc(security=BEARER_SECURITY)
def remove_mfa(user_id):
    """Remove a user's second factor (admins; the user lost it): audited, and the user is told."""
    mfa.remove_by_admin(actor=caller(), target_id=user_id)
    return {"message": "Second factor removed."}

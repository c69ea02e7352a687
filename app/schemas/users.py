"""Schemas of the admin user management endpoints under /users."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.models import ROLES
from app.schemas.auth import NewAccountSchema
from app.schemas.common import PageQuerySchema, PageSchema, UserSchema
from app.schemas.fields import Email, Password, StrictBoolean, Text, Username

ROLE = validate.OneOf(ROLES)


class UserCreateSchema(NewAccountSchema):
    """POST /users: as signup, plus role and is_active."""

    role = fields.String(validate=ROLE, load_default="user")
    is_active = StrictBoolean(load_default=True)


class UserUpdateSchema(Schema):
    """PATCH /users/{id}. Admins may set every field; a user on their own record only
    name, email and username."""

    name = Text(max_length=100)
    email = Email()
    username = Username(allow_none=True)
    role = fields.String(validate=ROLE)
    is_active = StrictBoolean()
    password = Password()


class UserDeleteSchema(Schema):
    """DELETE /users/{id}: an admin deleting someone else sends no body; deleting one's own account
    needs `password`, exactly as DELETE /me does."""

    password = Password(metadata={"description": "Required when the account is the caller's own"})


class UserListQuerySchema(PageQuerySchema):
    """GET /users query parameters."""

    email = Email(metadata={"description": "Exact match, case-insensitive"})
    q = fields.String(
        validate=validate.Length(min=1, max=100),
        metadata={"description": "Substring of email, username or name, case-insensitive"},
    )
    role = fields.String(validate=ROLE)
    is_active = fields.Boolean()


class UserListSchema(PageSchema):
    """A page of users."""

    items = fields.List(fields.Nested(UserSchema))

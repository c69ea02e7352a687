"""The JSON Lines record of `flask users import` and `flask users export`: one user a line.

The identifier fields are signup's own (app/schemas/fields.py): the same normalization and the
same refusals. Unknown fields are refused, as everywhere in the service.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from marshmallow import Schema, ValidationError, fields, validate, validates

from app.schemas.fields import Email, StrictBoolean, Text, Username
from app.schemas.users import ROLE

CLOCK_LEEWAY = timedelta(days=1)  # a created_at just ahead of this clock is another machine's clock


class UserRecordSchema(Schema):
    """One user of `flask users import` / `flask users export`."""

    email = Email(required=True)
    username = Username(allow_none=True)
    name = Text(max_length=100, allow_none=True, metadata={"description": "absent or null: the email's local part"})
    role = fields.String(validate=ROLE)
    is_active = StrictBoolean()
    email_verified = StrictBoolean()
    created_at = fields.AwareDateTime(format="iso")
    password_hash = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "werkzeug, bcrypt, Django pbkdf2_sha256 or argon2id; null: the user must reset"},
    )

    @validates("created_at")
    def _not_in_the_future(self, value: datetime, **_kwargs) -> None:
        """An account cannot have been made after now."""
        if value > datetime.now(UTC) + CLOCK_LEEWAY:
            raise ValidationError("Must not be in the future.")

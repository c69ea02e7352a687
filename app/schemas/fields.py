"""Field types shared by the request schemas: strict text, normalized email, username, password."""

from __future__ import annotations

import re
import unicodedata

from flask import current_app
from marshmallow import ValidationError, fields, validate

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$")


def _has_control_chars(value: str) -> bool:
    """True for NUL and other control characters (PostgreSQL rejects NUL; none belong in a name)."""
    return any(unicodedata.category(ch) == "Cc" for ch in value)


class Text(fields.String):
    """A trimmed, non-empty string without control characters, of bounded length."""

    def __init__(self, *, max_length: int, **kwargs) -> None:
        """Bound the length; `required` and friends pass through."""
        super().__init__(validate=validate.Length(min=1, max=max_length), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        """Trim and refuse control characters."""
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if _has_control_chars(text):
            raise ValidationError("Must not contain control characters.")
        return text


class Email(fields.String):
    """An email address, trimmed and lower-cased (API.md: compared case-insensitively)."""

    def _deserialize(self, value, attr, data, **kwargs):
        """Normalize, then validate the shape and length (RFC 5321: at most 254)."""
        text = super()._deserialize(value, attr, data, **kwargs).strip().lower()
        if _has_control_chars(text) or len(text) > 254:
            raise ValidationError("Not a valid email address.")
        validate.Email(error="Not a valid email address.")(text)
        return text


class Username(fields.String):
    """3–32 letters, digits, '.', '_' or '-', starting with a letter or digit; never an email."""

    def _deserialize(self, value, attr, data, **kwargs):
        """Trim and check the pattern; case is kept, uniqueness ignores it."""
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not USERNAME_RE.match(text):
            raise ValidationError(
                "Must be 3 to 32 characters: letters, digits, '.', '_' or '-', starting with a letter or digit."
            )
        return text


class Password(fields.String):
    """A password: load-only, never trimmed, bounded above so hashing cost stays bounded."""

    def __init__(self, **kwargs) -> None:
        """Passwords are never serialized."""
        super().__init__(load_only=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        """Refuse empty and over-long values; the full policy applies to new passwords only."""
        text = super()._deserialize(value, attr, data, **kwargs)
        if text == "":
            raise ValidationError("Must not be empty.")
        limit = current_app.config["PASSWORD_MAX_LENGTH"]
        if len(text) > limit:
            raise ValidationError(f"Must be at most {limit} characters long.")
        return text


class StrictBoolean(fields.Boolean):
    """A JSON boolean: true or false, not "yes" or 1."""

    def _deserialize(self, value, attr, data, **kwargs):
        """Only real booleans (1 == True in Python, so a set lookup is not enough)."""
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value

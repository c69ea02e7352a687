"""Field types shared by the request schemas: strict text, normalized email, username, password.

The identifier rules they apply live in app/identifiers.py, which the services call too.
"""

from __future__ import annotations

from flask import current_app
from marshmallow import ValidationError, fields, validate

from app.identifiers import (
    USERNAME_MAX,
    USERNAME_MIN,
    has_bidi_controls,
    has_control_chars,
    normalize_email,
    normalize_username,
)


class Text(fields.String):
    """A trimmed, non-empty string without control or bidirectional formatting characters, of bounded length."""

    def __init__(self, *, max_length: int, **kwargs) -> None:
        """Bound the length; `required` and friends pass through."""
        super().__init__(validate=validate.Length(min=1, max=max_length), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        """Trim and refuse control and bidirectional formatting characters."""
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if has_control_chars(text):
            raise ValidationError("Must not contain control characters.")
        if has_bidi_controls(text):  # a name shown reversed to an admin (CVE-2021-42574's trick)
            raise ValidationError("Must not contain bidirectional formatting characters.")
        return text


class Normalized(fields.String):
    """A string taken in its stored form: `normalize` turns what the client sent into it, or refuses
    it (a ValidationError); DESCRIPTION tells clients the rule in the OpenAPI document."""

    DESCRIPTION = ""

    def __init__(self, **kwargs) -> None:
        """Describe the rule in the OpenAPI document, unless the schema describes the field itself."""
        kwargs.setdefault("metadata", {})
        kwargs["metadata"].setdefault("description", self.DESCRIPTION)
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        """Normalize and validate."""
        return self.normalize(super()._deserialize(value, attr, data, **kwargs))

    @staticmethod
    def normalize(value: str) -> str:
        """The stored form of `value`."""
        raise NotImplementedError


class Email(Normalized):
    """An email address in its stored form (`normalize_email`); compared exactly, so case-insensitively."""

    DESCRIPTION = (
        "Stored and compared normalized: the part before @ lower-cased (fullwidth forms mapped, NFC), "
        "the domain as its IDNA A-label (UTS 46, e.g. xn--bcher-kva.example). Invisible, control and "
        "bidi characters, and a part before @ that mixes scripts or imitates an ASCII name, are a 400."
    )
    normalize = staticmethod(normalize_email)


class Username(Normalized):
    """A username in its stored form (`normalize_username`): case kept, unique by `username_key`; never an email."""

    DESCRIPTION = (
        f"{USERNAME_MIN} to {USERNAME_MAX} letters, digits, '.', '_' or '-', starting with a letter or "
        "digit; RFC 8265 PRECIS. Stored as typed after width mapping (fullwidth to ordinary) and NFC; "
        "unique and matched case-insensitively by its UsernameCaseMapped form, so ADMIN and its "
        "fullwidth twin are the same name. One script (UTS 39 Highly Restrictive); a non-ASCII imitation "
        "of an ASCII name, and invisible, control or bidi characters, are a 400. Reserved names "
        "(RESERVED_USERNAMES) are a 400 username_reserved unless an admin sets them."
    )
    normalize = staticmethod(normalize_username)


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

"""The identifier rules, once: what an email or username is normalized to, and which look-alikes are refused.

Pure functions (no request, no database) below both layers that need them: the request schemas'
fields (app/schemas/fields.py) and the services (users.username_key). They raise marshmallow's
ValidationError, the one error type both callers turn into a field error.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import idna
import precis_i18n
from marshmallow import ValidationError, validate

USERNAME_MIN, USERNAME_MAX = 3, 32
USERNAME_PUNCTUATION = frozenset("._-")

INVISIBLE_MESSAGE = "Must not contain invisible, control or bidirectional formatting characters."
USERNAME_SHAPE_MESSAGE = (
    f"Must be {USERNAME_MIN} to {USERNAME_MAX} characters: letters, digits, '.', '_' or '-', "
    "starting with a letter or digit."
)
EMAIL_MESSAGE = "Not a valid email address."

# Control (Cc), format (Cf: soft hyphen, ZWSP/ZWNJ/ZWJ, bidi overrides and isolates, BOM), line
# and paragraph separators, private use, surrogates and unassigned code points: none is visible
# or can be judged by a person reading the identifier (ASVS 5.1.4, UTS 39 section 3.1).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) outside those categories: the
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other
# variation selectors, musical formatting. They render as nothing.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A),
    (0xE0100, 0xE01EF),
)
# UTS 39 section 5.2 "Highly Restrictive": one script, or Latin with the scripts Japanese,
# Chinese or Korean are written in together. Common and Inherited (digits, '.', marks) never count.
_SCRIPT_SETS = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
_NEUTRAL_SCRIPTS = ["COMMON", "INHERITED"]


def has_control_chars(value: str) -> bool:
    """True for NUL and other control characters (PostgreSQL rejects NUL; none belong in a name)."""
    if value.isascii():  # ASCII's non-printable characters are exactly its controls
        return not value.isprintable()
    return any(unicodedata.category(ch) == "Cc" for ch in value)


# Bidirectional embeddings, overrides and isolates (LRE..RLO, LRI..PDI): text shown in one order and
# stored in another (Trojan Source, CVE-2021-42574). Free text refuses these only: other format
# characters (ZWNJ, ZWJ) are part of how names are written in Persian, Indic scripts and emoji.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def has_bidi_controls(value: str) -> bool:
    """True if `value` holds a bidirectional embedding, override or isolate character."""
    return not value.isascii() and not _BIDI_CONTROLS.isdisjoint(value)


def has_invisible_chars(value: str) -> bool:
    """True if `value` holds a control, format, separator, unassigned or otherwise invisible character."""
    if value.isascii():  # the common case, and ASCII's only invisible characters are its controls
        return not value.isprintable()
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return True
        code = ord(ch)
        if any(low <= code <= high for low, high in _INVISIBLE_RANGES):
            return True
    return False


def width_mapped(text: str) -> str:
    """Map fullwidth and halfwidth forms to their ordinary twins (RFC 8264 section 9.1 width mapping)."""
    return "".join(
        unicodedata.normalize("NFKC", ch) if unicodedata.decomposition(ch).startswith(("<wide>", "<narrow>")) else ch
        for ch in text
    )


def _unicode_tables():
    """confusable_homoglyphs' script and look-alike tables, loaded on the first non-ASCII identifier.

    Importing the package parses its Unicode data into ~6 MiB of Python objects per process
    (bench/PROFILE.md, "Memory"); ASCII identifiers, nearly all of them, never need it.
    """
    from confusable_homoglyphs import categories, confusables

    return categories, confusables


def mixes_scripts(text: str) -> bool:
    """True if `text` mixes scripts beyond what UTS 39's Highly Restrictive level allows."""
    if text.isascii():  # Latin letters among Common digits and punctuation: one script
        return False
    categories, confusables = _unicode_tables()
    if not confusables.is_mixed_script(text, allowed_aliases=_NEUTRAL_SCRIPTS):
        return False
    scripts = categories.unique_aliases(text) - set(_NEUTRAL_SCRIPTS)
    return not any(scripts <= allowed for allowed in _SCRIPT_SETS)


def ascii_lookalike(text: str) -> str | None:
    """The ASCII text `text` passes for: when it is not ASCII yet each other character has an ASCII homoglyph.

    `admın` (dotless i) gives `admin`; `müller` gives None (ü has no ASCII twin), so real
    names in other alphabets stay possible while a forged ASCII name does not.
    """
    if text.isascii():
        return None
    _, confusables = _unicode_tables()
    twin = []
    for ch in text:
        if ch.isascii():
            twin.append(ch)
            continue
        found = confusables.is_confusable(ch, greedy=True) or []
        ascii_twins = [glyph["c"] for entry in found for glyph in entry["homoglyphs"] if glyph["c"].isascii()]
        if not ascii_twins:
            return None
        twin.append(ascii_twins[0])
    return "".join(twin)


def _refuse_lookalikes(text: str) -> None:
    """Raise ValidationError if `text` mixes scripts or is a non-ASCII copy of an ASCII name."""
    if mixes_scripts(text):
        raise ValidationError("Must not mix scripts (for example Latin with Cyrillic or Greek).")
    twin = ascii_lookalike(text)
    if twin is not None:
        raise ValidationError(f"Must not imitate the plain name {twin!r} with look-alike characters.")


def normalize_email(value: str) -> str:
    """The stored form of an email address: local part width-mapped, NFC, lower-cased; domain as
    its IDNA A-label (UTS 46). Raises ValidationError.

    A-labels, because they are what DNS and SMTP use, one form per domain, ASCII in the
    X-User-Email header and in logs, and a look-alike domain shows as the `xn--` form it is.
    """
    text = value.strip()
    if has_invisible_chars(text):
        raise ValidationError(INVISIBLE_MESSAGE)
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValidationError(EMAIL_MESSAGE)
    local = unicodedata.normalize("NFC", width_mapped(local)).lower()
    try:
        domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise ValidationError("Not a valid email domain.") from None
    _refuse_lookalikes(local)
    normalized = f"{local}@{domain}"
    if len(normalized) > 254:  # RFC 5321: at most 254
        raise ValidationError(EMAIL_MESSAGE)
    validate.Email(error=EMAIL_MESSAGE)(normalized)
    return normalized


@lru_cache(maxsize=1)
def _profiles() -> tuple[precis_i18n.profile.Profile, precis_i18n.profile.Profile]:
    """RFC 8265's UsernameCasePreserved and UsernameCaseMapped profiles."""
    return precis_i18n.get_profile("UsernameCasePreserved"), precis_i18n.get_profile("UsernameCaseMapped")


def username_key(value: str | None) -> str | None:
    """The uniqueness key of a username: its RFC 8265 UsernameCaseMapped form; None if it has none."""
    if not value:
        return None
    try:
        return _profiles()[1].enforce(value.strip())
    except ValueError:  # UnicodeEncodeError: a character the profile disallows
        return None


def normalize_username(value: str) -> str:
    """The stored (display) form of a username: RFC 8265 UsernameCasePreserved, so width-mapped
    and NFC but with the case typed. Raises ValidationError.

    Uniqueness and login use `username_key` of it; look-alike checks run on that key.
    """
    text = value.strip()
    if has_invisible_chars(text):
        raise ValidationError(INVISIBLE_MESSAGE)
    try:
        display = _profiles()[0].enforce(text)
    except ValueError:
        raise ValidationError(USERNAME_SHAPE_MESSAGE) from None
    key = username_key(display)
    if key is None or not _username_shaped(display) or not USERNAME_MIN <= len(key) <= USERNAME_MAX:
        raise ValidationError(USERNAME_SHAPE_MESSAGE)
    _refuse_lookalikes(key)
    return display


def _username_shaped(text: str) -> bool:
    """Letters, combining marks, digits and '._-', starting with a letter or digit, of bounded length."""
    if not USERNAME_MIN <= len(text) <= USERNAME_MAX:
        return False
    first = unicodedata.category(text[0])
    if not (first.startswith("L") or first == "Nd"):
        return False
    return all(
        ch in USERNAME_PUNCTUATION or unicodedata.category(ch)[0] in "LM" or unicodedata.category(ch) == "Nd"
        for ch in text
    )

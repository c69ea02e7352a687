"""The identifier rules of app/identifiers.py as pure functions: normalization and refusals."""

from __future__ import annotations

import unicodedata

import pytest
from marshmallow import ValidationError

from app.identifiers import (
    ascii_lookalike,
    has_invisible_chars,
    mixes_scripts,
    normalize_email,
    normalize_username,
    username_key,
    width_mapped,
)
from tests.helpers import python_output

INVISIBLES = [
    "\u00ad",  # soft hyphen
    "\u200b",  # zero-width space
    "\u200c",  # zero-width non-joiner
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\ufeff",  # BOM
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\u061c",  # Arabic letter mark
    "\u2028",  # line separator
    "\u2029",  # paragraph separator
    "\u0007",  # BEL
    "\u034f",  # combining grapheme joiner
    "\u3164",  # Hangul filler
    "\ufe0f",  # variation selector 16
    "\ue000",  # private use
]


@pytest.mark.parametrize("char", INVISIBLES)
def test_has_invisible_chars_finds_each(char):
    assert has_invisible_chars(f"ad{char}min")


@pytest.mark.parametrize("text", ["admin", "müller", "たなか", "a.b-c_d", "Иван"])
def test_has_invisible_chars_passes_visible_text(text):
    assert not has_invisible_chars(text)


def test_width_mapped_maps_fullwidth_and_halfwidth_only():
    assert width_mapped("ＡＤＭＩＮ１") == "ADMIN1"
    assert width_mapped("ｶﾀ") == "カタ"
    assert width_mapped("ﬁ") == "ﬁ"  # a ligature is a compatibility form, not a width one: left alone


@pytest.mark.parametrize(
    ("text", "mixed"),
    [
        ("admin", False),
        ("\u0430dmin", True),  # Cyrillic а + Latin
        ("\u03b1dmin", True),  # Greek α + Latin
        ("иван", False),
        ("user_1.x", False),  # Common characters never count
        ("たなか太郎", False),  # Hiragana + Han: UTS 39 Highly Restrictive allows it
        ("tanakaたなか", False),
        ("김철수kim", False),  # Hangul + Latin
        ("иванたなか", True),
    ],
)
def test_mixes_scripts(text, mixed):
    assert mixes_scripts(text) is mixed


@pytest.mark.parametrize(
    ("text", "twin"),
    [
        ("admın", "admin"),  # dotless i
        ("\u0430\u0441\u0435", "ace"),  # all Cyrillic
        ("admin", None),  # ASCII itself is no imitation
        ("müller", None),
        ("ışık", None),  # ş has no ASCII twin: a Turkish word, not a forgery
        ("иван", None),
    ],
)
def test_ascii_lookalike(text, twin):
    assert ascii_lookalike(text) == twin


# --- emails -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (" New.Person@Example.COM ", "new.person@example.com"),
        ("ａｄｍｉｎ@example.com", "admin@example.com"),
        ("user@BÜCHER.example", "user@xn--bcher-kva.example"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
        ("user@ｅｘａｍｐｌｅ.com", "user@example.com"),
        ("Jos\u0065\u0301@example.com", "jos\u00e9@example.com"),  # NFC
        ("Иван@пример.рф", "иван@xn--e1afmkfd.xn--p1ai"),
    ],
)
def test_normalize_email(given, stored):
    assert normalize_email(given) == stored


@pytest.mark.parametrize(
    "given",
    [
        "admın@example.com",
        "\u0430dmin@example.com",
        "ad\u200bmin@example.com",
        "ad\u00admin@example.com",
        "admin@exam\u202eple.com",
        "admin@exam\u2028ple.com",
        "admin@exam\u200bple.com",
        "admin@-bad.example",
        "admin@exa..mple.com",
        "no-at-sign",
        "@example.com",
        "x@",
        "a" * 250 + "@example.com",
    ],
)
def test_normalize_email_refuses(given):
    with pytest.raises(ValidationError):
        normalize_email(given)


# --- usernames ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "display", "key"),
    [
        ("Admin", "Admin", "admin"),
        ("ａｄｍｉｎ", "admin", "admin"),
        ("ＡＤＭＩＮ", "ADMIN", "admin"),
        (" Jo_e ", "Jo_e", "jo_e"),
        ("müller", "müller", "müller"),
        ("Mu\u0308ller", "Müller", "müller"),  # NFC
        ("Işık", "Işık", "işık"),
    ],
)
def test_normalize_username_and_key(given, display, key):
    assert normalize_username(given) == display
    assert username_key(given) == key
    assert username_key(display) == key


@pytest.mark.parametrize(
    "given",
    [
        "admın",
        "\u0430dmin",
        "\u03b1dmin",
        "ad\u200bmin",
        "ad\u00admin",
        "admin\u202e",
        "ab",
        "a" * 33,
        "_abc",
        "a@b.example",
        "a b c",
        "a!b",
        "ǅab",  # compatibility character: PRECIS disallows it
    ],
)
def test_normalize_username_refuses(given):
    with pytest.raises(ValidationError):
        normalize_username(given)


@pytest.mark.parametrize("given", [None, "", "a\u200bb", "a b"])
def test_username_key_is_none_for_impossible_names(given):
    assert username_key(given) is None


def test_the_ascii_shortcuts_agree_with_the_unicode_rules():
    """The ASCII shortcuts of has_invisible_chars, has_control_chars and mixes_scripts give the Unicode answers."""
    from confusable_homoglyphs import confusables

    from app import identifiers as identifier_rules

    for code in range(128):
        ch = chr(code)
        by_category = unicodedata.category(ch) in identifier_rules._REFUSED_CATEGORIES
        assert identifier_rules.has_invisible_chars(f"a{ch}b") is by_category, code
        is_control = unicodedata.category(ch) == "Cc"
        assert identifier_rules.has_control_chars(f"a{ch}b") is is_control, code
        mixed = confusables.is_mixed_script(f"a{ch}b", allowed_aliases=identifier_rules._NEUTRAL_SCRIPTS)
        assert identifier_rules.mixes_scripts(f"a{ch}b") is bool(mixed), code


def test_the_lookalike_tables_load_on_the_first_non_ascii_identifier_only():
    """A worker does not carry confusable_homoglyphs' ~6 MiB of tables until a non-ASCII name needs them."""
    code = (
        "import sys, wsgi; from app.identifiers import normalize_username as n; "
        "n('alice.smith'); print('confusable_homoglyphs' in sys.modules); "
        "n('müller'); print('confusable_homoglyphs' in sys.modules)"
    )
    assert python_output(code)[-2:] == ["False", "True"]

"""The request rules every endpoint shares, run before each request: a body is a JSON object of storable text.

Bound as before_request hooks by app.register_hooks.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request

from app.errors import InvalidBody, InvalidJSON, UnsupportedMediaType, ValidationFailed
from app.http import CONSOLE_BLUEPRINT, unstorable
from app.services import audit

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_ENDPOINTS = frozenset({"oauth.token", "oauth.introspect"})
# No request of the API nests deeper than 2; 32 leaves room and keeps every recursive step
# after parsing (the walk below, marshmallow) far from Python's recursion limit (ASVS 5.1.4).
MAX_JSON_DEPTH = 32
# A string, or an unterminated one up to the end: every match attempt succeeds, so the scan
# stays linear even for a body of escaped quotes (a pattern that can fail retries at each quote).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENERS = frozenset(b"[{")


def has_body() -> bool:
    """Whether the request carries a body at all."""
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def check_body() -> None:
    """Before every request: a body must be JSON (415) and a JSON object (400).

    Not for the OAuth endpoints: RFC 6749 4.4.2 and RFC 7662 2.1 send forms, which those views
    check themselves (app/oauth.py) and answer in OAuth's words.
    """
    if request.method not in BODY_METHODS or not has_body() or request.endpoint in FORM_ENDPOINTS:
        return
    if request.blueprint == CONSOLE_BLUEPRINT:
        # The admin console's pages post HTML forms (app/console/): the same text rule, no JSON.
        _refuse_unstorable_text(request.form.to_dict(flat=False), "")
        return
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()
    raw = request.get_data(cache=True)
    try:
        raw.decode("utf-8")  # RFC 8259 8.1; it also makes the byte scan below exact
    except UnicodeDecodeError:
        raise InvalidJSON() from None
    if nests_deeper_than(raw, MAX_JSON_DEPTH):
        raise InvalidJSON(f"The request body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep.")
    body = request.get_json(silent=True, cache=True)
    if body is None:
        raise InvalidJSON()
    if not isinstance(body, dict):
        raise InvalidBody()
    _refuse_unstorable_text(body, "")


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether UTF-8 JSON text opens more than `limit` arrays or objects inside one another.

    Counted on the bytes before parsing, strings skipped, without recursion: the json module
    and every walk over its result recurse once per level, and a body nested thousands deep
    would otherwise end in a RecursionError (a 500).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # nearly every body: no scan at all
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    depth = 0
    for byte in brackets:
        depth += 1 if byte in _OPENERS else -1
        if depth > limit:
            return True
    return False


def check_query() -> None:
    """Before every request: query values carry no NUL or lone surrogate either."""
    for name, value in request.args.items(multi=True):
        _refuse_unstorable_text(value, name)


def _refuse_unstorable_text(value: Any, path: str) -> None:
    """Reject, with the field's name, any string that no database could store or compare.

    docs/DESIGN.md: PostgreSQL rejects NUL in text; a lone surrogate cannot even be encoded. Both
    would otherwise surface as a 500 from deep in a driver.
    """
    if isinstance(value, str):
        if unstorable(value):
            message = "Must not contain NUL or unpaired surrogate characters."
            raise ValidationFailed(errors={path or "_schema": [message]})
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and unstorable(key):
                raise ValidationFailed(errors={"_schema": ["Field names must be plain text."]})
            _refuse_unstorable_text(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_unstorable_text(item, f"{path}.{index}")


def remember_origin() -> None:
    """Before every request: tell the audit trail where this request comes from."""
    audit.set_origin(ip=request.remote_addr, user_agent=request.headers.get("User-Agent"))

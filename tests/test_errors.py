"""The problem envelope (app/errors.py): extension members ride on any AppError."""

from __future__ import annotations

import re
from pathlib import Path

from app.errors import (
    CODES,
    AppError,
    BadRequest,
    Conflict,
    RateLimited,
    TooManyAttempts,
    TooManyRequests,
    UnsupportedMediaType,
    handle_app_error,
)


def test_extension_members_are_rendered_at_the_top_level(app):
    with app.test_request_context():
        response = handle_app_error(Conflict(extensions={"hint": "retry", "ids": [1, 2]}))
    body = response.get_json()
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    assert body["hint"] == "retry" and body["ids"] == [1, 2]
    assert body["code"] == "conflict" and body["success"] is False


def test_extension_members_never_replace_the_envelope(app):
    with app.test_request_context():
        error = AppError(extensions={"code": "forged", "status": 200, "success": True, "detail": "x"})
        body = handle_app_error(error).get_json()
    assert (body["code"], body["status"], body["success"]) == ("internal_error", 500, False)
    assert body["detail"] != "x"


def test_errors_without_extensions_are_unchanged(app):
    with app.test_request_context():
        body = handle_app_error(Conflict()).get_json()
    assert set(body) == {"success", "status", "title", "code", "detail"}


# The registry of codes (issue 10, item 3): the README, docs/CONTRACT.md and the OpenAPI document
# say exactly what app/errors.py can answer, no more and no less.
ROOT = Path(__file__).resolve().parent.parent
CODE = re.compile(r"`([a-z]+(?:_[a-z]+)+|[a-z]+)`")


def documented_codes_by_status() -> dict[str, set[int]]:
    """docs/CONTRACT.md §7: each line `- 400: `a`, `b`` (or `404 `x`; 405 `y``) read as code → statuses."""
    text = (ROOT / "docs/CONTRACT.md").read_text()
    section = text[text.index("## 7. Error codes") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    found: dict[str, set[int]] = {}
    for item in re.split(r"\n- ", section)[1:]:
        for part in re.split(r";\s*", item):
            statuses = [int(s) for s in re.findall(r"\b([1-5]\d\d)\b", part.split("`", 1)[0])] or [0]
            for code in CODE.findall(part):
                found.setdefault(code, set()).update(statuses)
    return found


def test_every_error_code_is_registered_with_its_status():
    assert CODES["invalid_credentials"] == {401}
    assert CODES["missing_token"] == {400, 401}  # the body field of /checkToken, a Bearer credential elsewhere
    assert CODES["too_many_attempts"] == {429} and CODES["rate_limited"] == {429}
    assert CODES["token_expired"] == {401}  # an InvalidToken reason
    assert issubclass(RateLimited, TooManyRequests) and issubclass(TooManyAttempts, TooManyRequests)
    assert not issubclass(UnsupportedMediaType, BadRequest)


def test_contract_lists_every_code_with_its_statuses():
    documented = documented_codes_by_status()
    assert documented == CODES


def test_readme_lists_every_code():
    text = (ROOT / "README.md").read_text()
    paragraph = text[text.index("Error codes (the `code` field)") :].split("\n\n", 1)[0]
    assert set(CODE.findall(paragraph)) - {"code", "request_id", "mfa_token", "mfa_methods", "X-Request-ID"} == set(
        CODES
    )


def test_openapi_document_enumerates_the_codes(client):
    schema = client.get("/openapi.json").get_json()["components"]["schemas"]["Problem"]
    assert schema["properties"]["code"]["enum"] == sorted(CODES)

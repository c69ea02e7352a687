"""The problem envelope (app/errors.py): extension members ride on any AppError."""

from __future__ import annotations

from app.errors import AppError, Conflict, handle_app_error


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

"""The admin console: server-rendered pages under URL_PREFIX/admin for the admins (ADMIN_CONSOLE).

Its own session (Flask-Login in Flask's signed cookie, app/http.py ConsoleOnlySession), separate
from API tokens both ways: a Bearer token opens no console page, the cookie opens no API
endpoint. Every form carries a CSRF token (Flask-WTF), checked before any view runs. Pages are
HTML, errors included; the API keeps its problem+json.
"""

from __future__ import annotations

from flask import Flask, render_template, request, session
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app.errors import AppError, as_app_error, request_id
from app.extensions import csrf, login_manager
from app.http import CONSOLE_BLUEPRINT, CONSOLE_HEADERS
from app.services import console


def init_console(app: Flask) -> None:
    """Mount the console under URL_PREFIX/admin, with its session loader, CSRF check, headers and error pages."""
    from app.console.views import bp

    csrf.init_app(app)
    login_manager.user_loader(load_admin)
    mount = f"{app.config['URL_PREFIX']}/admin"
    app.extensions["console_path"] = mount  # where app/http.py ConsoleOnlySession opens the signed session
    app.register_blueprint(bp, url_prefix=mount)


def load_admin(user_id: str):
    """Flask-Login's loader for the console cookie: the admin while the sign-in holds (app/services/console.py)."""
    if request.blueprint != CONSOLE_BLUEPRINT:  # the API is never signed in by a cookie
        return None
    return console.signed_in_admin(user_id=user_id, sid=session.get("sid"), signed_in_at=session.get("at"))


def _check_csrf() -> None:
    """Every state-changing request carries the session's CSRF token (ASVS 4.2.2); CSRFError otherwise."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()


def _headers(response):
    """The console's CSP and Referrer-Policy; the envelope (app/http.py) adds the rest."""
    for name, value in CONSOLE_HEADERS.items():
        response.headers[name] = value
    return response


def _page(status: int, title: str, detail: str, headers: dict[str, str] | None = None):
    """An error page (the console speaks HTML)."""
    page = render_template("console/error.html", status=status, title=title, detail=detail, plain=True)
    return page, status, headers or {}


def _app_error(error: AppError):
    """A domain error the view did not turn into a message: its status and its detail."""
    from flask import g

    g.problem_code = error.code
    messages = [text for texts in (error.errors or {}).values() for text in (texts if isinstance(texts, list) else [])]
    detail = " ".join([error.detail, *map(str, messages)])
    return _page(error.status, error.code.replace("_", " ").capitalize(), detail, error.headers)


def _csrf_error(error: CSRFError):
    """A post without the session's CSRF token (forged, or from a page older than the session)."""
    return _page(
        400,
        "The form could not be accepted",
        "It did not carry this session's security token: it may have been sent from another site, "
        "or the page is older than your sign-in. Reload the page and try again.",
    )


def _http_error(error: HTTPException):
    """Werkzeug's errors (404 of a view, 405, 429 of the per-IP limit) as pages."""
    from app.errors import _limit_retry_after

    status = error.code or 500
    headers = {"Retry-After": str(_limit_retry_after())} if status == 429 else {}
    detail = (error.description or error.name) if status < 500 else "The server could not complete the request."
    return _page(status, error.name, detail, headers)


def _unexpected(error: Exception):
    """A database outage (503) or a bug (500, logged with its traceback, never shown)."""
    if isinstance(error, HTTPException):
        return _http_error(error)
    found = as_app_error(error, request_id())
    return _page(found.status, "Something went wrong", f"{found.detail} (request id {request_id()})", found.headers)


def register_handlers(bp) -> None:
    """The console blueprint's hooks and error pages."""
    bp.before_request(_check_csrf)
    bp.after_request(_headers)
    bp.register_error_handler(CSRFError, _csrf_error)
    bp.register_error_handler(AppError, _app_error)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(Exception, _unexpected)

"""The admin console through Flask's test client, over https (its cookie is Secure)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import PASSWORD

BASE = "https://localhost"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
FLASH = re.compile(r'class="flash flash-(\w+)"[^>]*>([^<]*)<')


class Console:
    """A browser-like client of the console: keeps its cookie, sends the last page's CSRF token back."""

    def __init__(self, app, prefix: str = "") -> None:
        """A fresh client (no cookie yet)."""
        self.client = app.test_client()
        self.prefix = prefix
        self.token: str | None = None

    def get(self, path: str, **kwargs):
        """GET a console page and remember the CSRF token it carries."""
        response = self.client.get(self.prefix + path, base_url=BASE, **kwargs)
        found = TOKEN.search(response.get_data(as_text=True))
        if found:
            self.token = found.group(1)
        return response

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kwargs):
        """POST a form as a browser would (same-origin Referer), with the session's CSRF token unless told not."""
        form = dict(data or {})
        if csrf:
            if self.token is None:
                self.get("/admin/sign-in")
            form.setdefault("csrf_token", self.token)
        headers = {"Referer": f"{BASE}{self.prefix}/admin", **kwargs.pop("headers", {})}
        return self.client.post(self.prefix + path, data=form, base_url=BASE, headers=headers, **kwargs)

    def sign_in(self, identifier: str, password: str = PASSWORD):
        """The sign-in form, filled and sent; the raw response."""
        self.get("/admin/sign-in")
        return self.post("/admin/sign-in", {"identifier": identifier, "password": password})

    def cookie(self):
        """The console's cookie as the client keeps it, or None."""
        return self.client.get_cookie("__Host-admin_session", domain="localhost")


def flashes(response) -> list[tuple[str, str]]:
    """The (category, message) notices on a page."""
    import html

    return [(kind, html.unescape(text)) for kind, text in FLASH.findall(response.get_data(as_text=True))]


@pytest.fixture
def console(app):
    """A console client of the test app."""
    return Console(app)


@pytest.fixture
def signed_in(console, admin):
    """A console client signed in as the `admin` fixture's account; (client, admin login body)."""
    response = console.sign_in(admin["user"]["email"])
    assert response.status_code == 303, response.get_data(as_text=True)
    console.get("/admin")
    return console, admin

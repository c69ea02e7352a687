"""The admin console in a real browser (headless Chromium) against the real service (gunicorn, TLS, production).

Every action is done as an admin would: by the page's own links, forms and buttons, without
JavaScript of the test's (only Playwright's clicks and keys). Each page is checked with axe-core
(no serious or critical violation), for requests to any other host, and for console errors.
SCREENSHOTS_DIR=docs/img makes the README's screenshots.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pyotp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from tests import browser as browsers
from tests.e2e.server import running_server
from tests.helpers import PASSWORD
from tests.smtp import text_of

pytestmark = pytest.mark.e2e
browser = browsers.browser  # the fixture

ADMIN = "ada@example.com"
MFA_ADMIN = "mia@example.com"
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def service(request, tmp_path, smtp_server):
    """The service (PostgreSQL; SQLite when it is unreachable outside CI) with mail and MFA on."""
    backend = "postgresql"
    if request.config.backend_problems.get(backend):
        backend = "sqlite"
    env = {
        "MAIL_URL": smtp_server.url(),
        "FRONTEND_URL": "https://app.example",
        "OUTBOX_IN_PROCESS": "true",
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    with running_server(tmp_path, backend, **env) as server:
        yield server


def signup(server, email: str, name: str) -> dict:
    """An account through the API; the signup body."""
    status, _, body = server.call("POST", "/signup", {"email": email, "password": PASSWORD, "name": name})
    assert status == 201, body
    return body


def promote(server, email: str) -> None:
    """Make the account an admin in the database (as `flask create-admin` would)."""
    engine = create_engine(server.database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE users SET role = 'admin' WHERE email = :email"), {"email": email})
    engine.dispose()


def enable_mfa(server, email: str) -> tuple[str, list[str]]:
    """Turn on the second factor through the API; (secret, recovery codes)."""
    _, _, login = server.call("POST", "/login", {"email": email, "password": PASSWORD})
    status, _, enrol = server.call("POST", "/me/mfa/totp", {"password": PASSWORD}, token=login["access_token"])
    assert status == 200, enrol
    code = pyotp.TOTP(enrol["secret"]).now()
    status, _, confirmed = server.call("POST", "/me/mfa/totp/confirm", {"code": code}, token=login["access_token"])
    assert status == 200, confirmed
    return enrol["secret"], confirmed["recovery_codes"]


class Watch:
    """What a page did that it should not: requests to another host, failed assets, console or page errors.

    A page the service answers with an error status on purpose (the 403 of a refused sign-in)
    makes Chromium log "Failed to load resource" for that document; that line is the status
    the test asserts, not a fault of the page, so it is the one console error let through.
    """

    def __init__(self, page, base: str) -> None:
        """Listen on `page`."""
        self.origin = urlsplit(base)[:2]
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.failed_assets: list[str] = []
        self.error_documents: set[str] = set()
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _request(self, request) -> None:
        """Any request to a scheme and host other than the service's."""
        if urlsplit(request.url)[:2] != self.origin:
            self.foreign.append(request.url)

    def _response(self, response) -> None:
        """Error statuses: expected for pages the test provokes, never for a stylesheet, script or icon."""
        if response.status >= 400:
            if response.request.resource_type == "document":
                self.error_documents.add(response.url)
            else:
                self.failed_assets.append(f"{response.status} {response.url}")

    def _console(self, message) -> None:
        """Console errors, but the status line of a document answered with an error on purpose."""
        if message.type != "error":
            return
        if message.text.startswith("Failed to load resource") and message.location.get("url") in self.error_documents:
            return
        self.errors.append(f"{message.text} ({message.location.get('url')})")

    def clean(self) -> None:
        """Nothing went elsewhere, nothing failed."""
        assert self.foreign == [], self.foreign
        assert self.failed_assets == [], self.failed_assets
        assert self.errors == [], self.errors


def accessible(page) -> None:
    """axe-core (shipped in axe-playwright-python, no CDN) finds no serious or critical violation."""
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], bad


def shoot(page, name: str) -> None:
    """A screenshot for the README when SCREENSHOTS_DIR is set."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def flash(page) -> str:
    """The notice the last action left."""
    return page.locator(".flash").first.inner_text()


def open_user(page, email: str) -> None:
    """From the users list: search for the address and follow its link."""
    page.get_by_label("Search").fill(email)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=email).click()
    page.wait_for_load_state()


def test_an_admin_manages_users_in_the_browser(browser, service, smtp_server):
    base = service.base
    signup(service, ADMIN, "Ada Admin")
    promote(service, ADMIN)
    carol = signup(service, "carol@example.com", "Carol Member")
    signup(service, "dave@example.com", "Dave Member")
    signup(service, "erin@example.com", "Erin Member")
    for index in range(3):
        signup(service, f"member{index}@example.com", f"Member {index}")
    enable_mfa(service, "dave@example.com")
    _, _, carol_login = service.call("POST", "/login", {"email": "carol@example.com", "password": PASSWORD})

    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch = Watch(page, base)

    # Signed out: the sign-in page, used with the keyboard alone.
    page.goto(f"{base}/admin")
    assert page.url == f"{base}/admin/sign-in"
    accessible(page)
    shoot(page, "console-sign-in")
    page.keyboard.type(ADMIN)  # the identifier field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/admin")
    cookie = next(c for c in context.cookies() if c["name"] == "__Host-admin_session")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.get_by_role("heading", name="Users").is_visible()
    accessible(page)
    shoot(page, "console-users")

    # Search.
    page.get_by_label("Search").fill("carol")
    page.get_by_role("button", name="Search").click()
    page.wait_for_load_state()
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "carol@example.com" in rows.first.inner_text()

    # One user's page.
    page.get_by_role("link", name="carol@example.com").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Carol Member").is_visible()
    assert page.get_by_role("heading", name="Sessions").is_visible()
    accessible(page)
    shoot(page, "console-user")

    # Revoke one session: her login's access token stops working.
    assert service.call("POST", "/checkToken", {"token": carol_login["access_token"]})[2]["valid"] is True
    page.get_by_role("button", name="Revoke").first.click()
    page.wait_for_load_state()
    assert "session has ended" in flash(page)
    revoked = [
        service.call("POST", "/checkToken", {"token": token})[2]["valid"]
        for token in (carol_login["access_token"], carol["access_token"])
    ]
    assert False in revoked

    # Deactivate, then reactivate.
    page.get_by_role("button", name="Deactivate").click()
    page.wait_for_load_state()
    assert "deactivated" in flash(page)
    status, _, body = service.call("POST", "/login", {"email": "carol@example.com", "password": PASSWORD})
    assert status == 403 and body["code"] == "account_disabled"
    page.get_by_role("button", name="Reactivate").click()
    page.wait_for_load_state()
    assert "active again" in flash(page)

    # A reset mail, and it arrives.
    page.get_by_role("button", name="Send a password reset mail").click()
    page.wait_for_load_state()
    assert "reset mail" in flash(page)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        resets = [
            m
            for m in smtp_server.inbox.to("carol@example.com")
            if "reset" in text_of(m).lower() and "token=" in text_of(m)
        ]
        if resets:
            break
        time.sleep(0.2)
    assert resets, [m["Subject"] for m in smtp_server.inbox.messages]

    # Remove a user's second factor.
    page.get_by_role("link", name="← All users").click()
    open_user(page, "dave@example.com")
    page.get_by_role("button", name="Remove two-step sign-in").click()
    page.wait_for_load_state()
    assert "second factor is removed" in flash(page)
    status, _, body = service.call("POST", "/login", {"email": "dave@example.com", "password": PASSWORD})
    assert status == 200, body  # no second step any more

    # Delete, with the confirmation step.
    page.get_by_role("link", name="← All users").click()
    open_user(page, "erin@example.com")
    page.get_by_role("link", name="Delete…").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Delete erin@example.com?").is_visible()
    accessible(page)
    shoot(page, "console-delete")
    page.get_by_role("button", name="Delete for good").click()
    page.wait_for_load_state()
    assert "deleted" in flash(page) and page.url.startswith(f"{base}/admin")
    status, _, _ = service.call("POST", "/login", {"email": "erin@example.com", "password": PASSWORD})
    assert status == 401

    # A forged post (this browser's own cookie, no CSRF token) is refused and changes nothing.
    forged = page.request.post(f"{base}/admin/users/{carol['user_id']}/deactivate", form={"x": "1"}, max_redirects=0)
    assert forged.status == 400
    status, _, _ = service.call("POST", "/login", {"email": "carol@example.com", "password": PASSWORD})
    assert status == 200

    # Readable at phone width: nothing wider than the screen but the scrollable tables.
    page.set_viewport_size(PHONE)
    page.goto(f"{base}/admin")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    accessible(page)
    shoot(page, "console-users-phone")
    page.goto(f"{base}/admin/users/{carol['user_id']}")
    wide = page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => !e.closest('.table-wrap'))"
        ".filter(e => e.getBoundingClientRect().right > innerWidth)"
        ".map(e => e.tagName + '.' + e.className).slice(0, 8)"
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], wide

    # Sign out.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/admin/sign-in")
    page.goto(f"{base}/admin")
    assert page.url == f"{base}/admin/sign-in"
    watch.clean()
    context.close()


def test_a_plain_user_is_refused_and_an_admin_passes_the_second_step(browser, service):
    base = service.base
    signup(service, "paul@example.com", "Paul Plain")
    signup(service, MFA_ADMIN, "Mia Admin")
    promote(service, MFA_ADMIN)
    secret, _ = enable_mfa(service, MFA_ADMIN)

    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    watch = Watch(page, base)
    page.goto(f"{base}/admin/sign-in")
    page.get_by_label("Email or username").fill("paul@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "for administrators" in page.locator("#sign-in-error").inner_text()
    page.goto(f"{base}/admin")
    assert page.url == f"{base}/admin/sign-in"

    page.get_by_label("Email or username").fill(MFA_ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/admin/sign-in/code")
    accessible(page)
    shoot(page, "console-second-step")
    # The enrolment spent this step's code; the next step's is accepted too (RFC 6238, one step of skew).
    page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).at(time.time() + 30))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{base}/admin")
    assert MFA_ADMIN in page.locator(".who").inner_text()
    watch.clean()
    context.close()

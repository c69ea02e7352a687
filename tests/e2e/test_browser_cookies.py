"""Cookie mode in a real browser: headless Chromium, the real service (gunicorn, HTTPS, production settings).

Two small HTTPS servers of the test's own serve the frontend page, from an allowed origin (listed
in CORS_ORIGINS) and from another one. Both are https://localhost on other ports: the same site
as the service, so the browser does send the SameSite=Strict cookie from either, and only the
Origin check stands between the other page and the cookie (the CSRF case that SameSite alone
does not stop). The page's script is the README's ("Browser apps") fetch calls.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser import browser  # noqa: F401 (a fixture)
from tests.e2e.server import free_port, running_server
from tests.helpers import PASSWORD

pytestmark = pytest.mark.e2e
COOKIE = "__Host-refresh_token"
LIFETIME = 2592000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>frontend</title></head><body>
<script>
const AUTH = "%(service)s";
let accessToken = null;  // in memory only; the refresh token is in an HttpOnly cookie

async function call(path, body, token) {
  const response = await fetch(AUTH + path, {
    method: "POST",
    credentials: "include",
    headers: {"Content-Type": "application/json", ...(token ? {Authorization: `Bearer ${token}`} : {})},
    body: JSON.stringify(body || {}),
  });
  return {status: response.status, body: await response.json()};
}

async function login(email, password) {
  const answer = await call("/login", {email, password, cookie: true});
  if (answer.status === 200) accessToken = answer.body.access_token;
  return answer;
}

async function refresh() {
  const answer = await call("/refresh", {});
  if (answer.status === 200) accessToken = answer.body.access_token;
  return answer;
}

async function logout() {
  const answer = await call("/logout", {}, accessToken);
  accessToken = null;
  return answer;
}

// What a page of a foreign origin could try: a CORS request (stopped by the preflight), or a
// "simple" no-cors POST, which goes out with the cookie but whose answer the page cannot read.
async function tryRefresh() {
  try { return await refresh(); } catch (error) { return {blocked: String(error)}; }
}
async function blindRefresh() {
  const response = await fetch(AUTH + "/refresh", {method: "POST", mode: "no-cors", credentials: "include"});
  return response.type;
}
</script></body></html>
"""


class PageServer:
    """An HTTPS server on https://localhost:PORT answering every GET with the page."""

    def __init__(self, port: int, page: bytes, cert, key) -> None:
        """Listen on `port` with the development certificate."""

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.origin = f"https://localhost:{port}"
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, browser):  # noqa: F811 (the fixture)
    """The service, an allowed frontend origin and a foreign one: (server, allowed, foreign)."""
    tmp_path = tmp_path_factory.mktemp("browser")
    allowed_port, foreign_port = free_port(), free_port()
    with running_server(tmp_path, "sqlite", CORS_ORIGINS=f"https://localhost:{allowed_port}") as server:
        page = (PAGE % {"service": server.base}).encode()
        certs = tmp_path / "certs"
        pages = [PageServer(port, page, certs / "cert.pem", certs / "key.pem") for port in (allowed_port, foreign_port)]
        try:
            yield server, *pages
        finally:
            for page_server in pages:
                page_server.close()


@pytest.fixture
def context(browser):  # noqa: F811 (the fixture)
    """A fresh browser profile (its own cookie jar); the development certificate is self-signed."""
    context = browser.new_context(ignore_https_errors=True)
    yield context
    context.close()


def open_page(context, origin: str):
    """A tab on the frontend page of `origin`."""
    page = context.new_page()
    page.goto(f"{origin}/app.html")
    return page


def the_cookie(context, server) -> dict | None:
    """The refresh cookie as the browser holds it for the service."""
    found = [cookie for cookie in context.cookies(server.base) if cookie["name"] == COOKIE]
    assert len(found) <= 1
    return found[0] if found else None


def new_user(server) -> str:
    """A signed-up account's email."""
    email = f"browser{time.monotonic_ns()}@example.com"
    status, _, body = server.call("POST", "/signup", {"email": email, "password": PASSWORD, "name": "Browser"})
    assert status == 201, body
    return email


def valid(server, token: str) -> bool:
    """/checkToken's verdict."""
    status, _, body = server.call("POST", "/checkToken", {"token": token})
    assert status == 200, body
    return body["valid"]


def test_an_allowed_origin_logs_in_refreshes_and_logs_out_with_the_cookie(site, context):
    server, allowed, _ = site
    email = new_user(server)
    page = open_page(context, allowed.origin)

    login = page.evaluate("([email, password]) => login(email, password)", [email, PASSWORD])
    assert login["status"] == 200, login
    assert "refresh_token" not in login["body"] and valid(server, login["body"]["access_token"])
    cookie = the_cookie(context, server)
    assert cookie is not None, "the browser did not store the cookie"
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (True, True, "Strict", "/")
    assert cookie["domain"] == "localhost"  # host-only: __Host- has no Domain attribute
    assert abs(cookie["expires"] - (time.time() + LIFETIME)) < 60
    # JavaScript on the page cannot read it (cookies are not port-specific: without HttpOnly it would show).
    document_cookie = page.evaluate("document.cookie")
    assert COOKIE not in document_cookie and cookie["value"] not in document_cookie

    refreshed = page.evaluate("refresh()")
    assert refreshed["status"] == 200, refreshed
    assert "refresh_token" not in refreshed["body"] and valid(server, refreshed["body"]["access_token"])
    rotated = the_cookie(context, server)
    assert rotated["value"] != cookie["value"] and rotated["httpOnly"] is True

    logout = page.evaluate("logout()")
    assert logout["status"] == 200, logout
    assert the_cookie(context, server) is None, "logout did not clear the cookie"
    assert not valid(server, refreshed["body"]["access_token"])
    after = page.evaluate("refresh()")
    assert (after["status"], after["body"]["code"]) == (400, "missing_token")


def test_a_page_of_another_origin_cannot_refresh(site, context):
    server, allowed, foreign = site
    email = new_user(server)
    page = open_page(context, allowed.origin)
    assert page.evaluate("([email, password]) => login(email, password)", [email, PASSWORD])["status"] == 200
    held = the_cookie(context, server)["value"]
    log_before = server.log_path.read_text()

    other = open_page(context, foreign.origin)
    attempt = other.evaluate("tryRefresh()")
    assert "blocked" in attempt, attempt  # CORS: no Access-Control-Allow-Origin for it
    assert other.evaluate("blindRefresh()") == "opaque"
    # The blind POST reached the service with the cookie and was refused before anything changed.
    deadline = time.monotonic() + 5
    while not refused_refreshes(server.log_path.read_text()[len(log_before) :]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert refused_refreshes(server.log_path.read_text()[len(log_before) :]) >= 1
    assert the_cookie(context, server)["value"] == held, "the foreign page changed the cookie"
    # Nothing was spent: the allowed page still refreshes with the same cookie.
    assert page.evaluate("refresh()")["status"] == 200


def refused_refreshes(log: str) -> int:
    """Requests to /refresh the service answered 403 (its JSON request log lines)."""
    count = 0
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("path") == "/refresh" and entry.get("status") == 403:
            count += 1
    return count


def test_replaying_an_old_cookie_value_revokes_the_session(site, context):
    server, allowed, _ = site
    email = new_user(server)
    page = open_page(context, allowed.origin)
    assert page.evaluate("([email, password]) => login(email, password)", [email, PASSWORD])["status"] == 200
    old = the_cookie(context, server)
    newest = page.evaluate("refresh()")
    assert newest["status"] == 200
    # A thief who copied the earlier value plays it back.
    context.add_cookies([{**old, "sameSite": "Strict"}])
    assert the_cookie(context, server)["value"] == old["value"]
    reused = page.evaluate("refresh()")
    assert (reused["status"], reused["body"]["code"]) == (401, "token_reused"), reused
    assert not valid(server, newest["body"]["access_token"]), "the session survived the reuse"
    assert the_cookie(context, server) is None

"""End to end: the real server (gunicorn with TLS, production settings) walked over HTTPS."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.e2e.server import running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["postgresql", "sqlite"])
def server(request, tmp_path):
    """The service under gunicorn with TLS and production settings, on a fresh database."""
    problem = request.config.backend_problems.get(request.param)
    if problem is not None:
        pytest.skip(f"{request.param} unreachable: {problem}")
    with running_server(tmp_path, request.param) as server:
        yield server


def test_full_flow_over_https(server):
    status, headers, _ = server.call("GET", "/ready")
    assert status == 200
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert not any(ch.isdigit() for ch in headers.get("Server", "")), "the server version must not show"

    status, _, signup = server.call(
        "POST", "/signup", {"email": "e2e@example.com", "password": "correct horse battery staple", "name": "E2E"}
    )
    assert status == 201, signup
    status, headers, login = server.call(
        "POST", "/login", {"email": "E2E@example.com", "password": "correct horse battery staple"}
    )
    assert status == 200 and headers["Cache-Control"] == "no-store"

    status, _, check = server.call("POST", "/checkToken", {"token": login["access_token"]})
    assert status == 200 and check["valid"] is True and check["user_id"] == signup["user_id"]
    status, headers, _ = server.call("GET", "/validate", token=login["access_token"])
    assert status == 200 and headers["X-User-Email"] == "e2e@example.com"

    status, _, refreshed = server.call("POST", "/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 200
    status, _, reused = server.call("POST", "/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 401 and reused["code"] == "token_reused"

    status, _, out = server.call("POST", "/logout", token=signup["access_token"])
    assert status == 200 and out["success"] is True
    status, _, check = server.call("POST", "/checkToken", {"token": signup["access_token"]})
    assert check == {"success": True, "valid": False, "reason": "revoked"}

    status, headers, missing = server.call("GET", "/nope")
    assert status == 404 and headers.get_content_type() == "application/problem+json"


@pytest.mark.parametrize("hot_path", ["true", "false"])
def test_internationalized_email_and_deep_json_through_gunicorn(request, tmp_path, hot_path):
    # Issue 9.5 and 9.7 through a real WSGI server: gunicorn refuses a header that is not
    # latin-1 (a 500 before), and a body nested 1,000 deep was a RecursionError.
    if request.config.backend_problems.get("postgresql"):
        pytest.skip("postgresql unreachable")
    with running_server(tmp_path, "postgresql", tls=False, workers=1, HOT_PATH=hot_path) as server:
        password = "correct horse battery staple"
        status, _, signup = server.call(
            "POST", "/signup", {"email": "i18n@example.com", "password": password, "name": "I"}
        )
        assert status == 201, signup
        token = signup["access_token"]
        for email in ("пользователь@пример.рф", "ışık@example.com", "ｆｕｌｌ@example.com"):
            status, _, changed = server.call("PATCH", "/me", {"email": email}, token=token)
            assert status == 200, changed
            status, headers, _ = server.call("GET", "/validate", token=token)
            assert status == 200
            assert urllib.parse.unquote(headers["X-User-Email"], errors="strict") == changed["user"]["email"]
        deep = urllib.request.Request(
            server.base + "/checkToken",
            data=b'{"token": ' + b"[" * 1000 + b"]" * 1000 + b"}",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(deep, timeout=30)
        assert answer.value.code == 400 and json.loads(answer.value.read())["code"] == "invalid_json"


def test_a_malformed_chunked_body_is_400_not_500(tmp_path):
    """gunicorn raises while the view reads a bad chunk size; that is the client's fault."""
    import socket

    with running_server(tmp_path, "sqlite", tls=False, workers=1) as server:
        host, port = server.base.removeprefix("http://").split(":")
        for path in ("/login", "/checkToken", "/signup"):
            with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as conn:
                conn.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
                    "Content-Type: application/json\r\n\r\nZZ\r\nxx\r\n0\r\n\r\n".encode()
                )
                answer = ""
                while not answer.rstrip().endswith("}"):  # headers and body may come apart
                    chunk = conn.recv(65536).decode("latin-1")
                    if not chunk:
                        break
                    answer += chunk
            assert answer.startswith("HTTP/1.1 400"), (path, answer[:300])
            assert '"code":"bad_request"' in answer.replace(" ", ""), answer
        assert "Traceback" not in server.log_path.read_text()

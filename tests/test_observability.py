"""Metrics and logs: counted right, request ids in every line, and never a secret."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

from app import observability
from app.logformat import JsonFormatter
from tests.helpers import PASSWORD, assert_problem, bearer


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_requests_logins_tokens_and_reuse(client, auth):
    before = client.get("/metrics").get_data(as_text=True)
    user = auth.signup()
    client.post("/login", json={"email": user["user"]["email"], "password": "wrong password!"})
    client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    login = auth.login(user["user"]["email"])
    client.post("/logout", headers=bearer(login["access_token"]))
    client.get(f"/users/{user['user_id']}", headers=bearer(login["access_token"]))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    after = response.get_data(as_text=True)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("auth_logins_total", result="success") == 1
    assert delta("auth_logins_total", result="failure") == 1
    assert delta("auth_tokens_issued_total", type="access") == 3  # signup, refresh, login
    assert delta("auth_refresh_reuse_detected_total") == 1
    assert delta("auth_tokens_revoked_total", kind="access") == 1
    assert delta("auth_tokens_revoked_total", kind="session") == 2  # reuse, logout
    assert delta("auth_http_requests_total", endpoint="/signup", method="POST", status="201") == 1
    assert delta("auth_http_requests_total", endpoint="/refresh", method="POST", status="401") == 1
    # Route templates, not raw paths: label values stay bounded.
    assert delta("auth_http_requests_total", endpoint="/users/<user_id>", method="GET", status="401") == 1
    assert delta("auth_http_request_duration_seconds_count", endpoint="/login") == 2


def test_metrics_can_be_turned_off(make_app):
    assert_problem(make_app(METRICS_ENABLED="false").test_client().get("/metrics"), 404, "not_found")


# capsys: stderr is a Python object without a descriptor, so lines go through logging; capfd: a
# real descriptor, so the request lines are written directly (observability._direct_fd).
@pytest.mark.parametrize("capture", ["capsys", "capfd"])
def test_logs_are_json_with_request_id_and_no_secrets(make_app, request, capture):
    capsys = request.getfixturevalue(capture)
    app = make_app(LOG_FORMAT="json")
    assert (observability._direct_fd() is not None) == (capture == "capfd")
    client = app.test_client()
    secret = app.config["JWT_SECRET_KEY"]
    body = {"email": "logs@example.com", "password": PASSWORD, "name": "L"}
    signup = client.post("/signup", json=body, headers={"X-Request-ID": "req-signup-1"}).get_json()
    client.post("/login", json={"email": "logs@example.com", "password": PASSWORD + "x"})
    client.post(
        "/login", data='{"email": "logs@example.com", "password": "' + PASSWORD, content_type="application/json"
    )
    client.post("/refresh", json={"refresh_token": signup["refresh_token"]})
    client.post("/checkToken", json={"token": signup["access_token"]})
    client.get("/me", headers=bearer(signup["access_token"]), query_string={"access_token": signup["access_token"]})
    client.post("/logout", headers=bearer(signup["access_token"]))
    output = capsys.readouterr()
    logged = output.err + output.out
    lines = [json.loads(line) for line in output.err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["message"] == "request"]
    assert len(requests) == 7
    first = requests[0]
    assert first["request_id"] == "req-signup-1" and first["path"] == "/signup" and first["status"] == 201
    assert {"time", "level", "logger", "duration_ms", "method", "remote_addr"} <= set(first)
    for forbidden in (PASSWORD, signup["access_token"], signup["refresh_token"], secret, "$argon2"):
        assert forbidden not in logged


def test_metrics_token_guards_metrics(make_app):
    client = make_app(METRICS_TOKEN="scrape-secret-value").test_client()
    assert_problem(client.get("/metrics"), 401, "missing_token")
    assert_problem(client.get("/metrics", headers=bearer("wrong")), 401, "invalid_token")
    assert client.get("/metrics", headers=bearer("scrape-secret-value")).status_code == 200


def test_made_up_methods_share_one_metrics_series(client):
    """Every method outside HTTP's own is counted as `other`: a client cannot add series at will."""

    def others(text: str) -> float:
        return sum(
            float(value)
            for value in re.findall(r'^auth_http_requests_total\{[^}]*method="other"[^}]*\} (\S+)$', text, re.M)
        )

    before = client.get("/metrics").get_data(as_text=True)
    for number in range(40):
        client.open("/login", method=f"FOO{number}BAR")
        client.open(f"/x{number}", method="PROPFIND")
    after = client.get("/metrics").get_data(as_text=True)
    methods = set(re.findall(r'^auth_http_requests_total\{[^}]*method="([^"]*)"', after, re.M))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "other"}, methods
    assert others(after) - others(before) == 80


PRODUCTION = {"APP_ENV": "production", "JWT_SECRET_KEY": "p" * 12 + "0123456789abcdefghijklmnopqrstuv"}


def test_production_without_a_metrics_token_does_not_serve_metrics(make_app):
    client = make_app(**PRODUCTION).test_client()
    response = client.get("/metrics")
    assert_problem(response, 404, "not_found")
    assert b"auth_http_requests_total" not in response.data


def test_production_with_a_metrics_token_serves_metrics_to_its_bearer(make_app):
    client = make_app(**PRODUCTION, METRICS_TOKEN="scrape-token-6c0d1e2f3a4b").test_client()
    assert_problem(client.get("/metrics"), 401, "missing_token")
    response = client.get("/metrics", headers=bearer("scrape-token-6c0d1e2f3a4b"))
    assert response.status_code == 200 and b"auth_http_requests_total" in response.data


def test_production_metrics_can_be_made_public_for_a_private_network(make_app):
    assert make_app(**PRODUCTION, METRICS_PUBLIC="true").test_client().get("/metrics").status_code == 200


def test_log_times_are_iso_8601_utc_in_json_and_text():
    import logging

    from app.logformat import TextFormatter, json_formatter

    record = logging.LogRecord("app.test", logging.INFO, __file__, 1, "hello", None, None)
    record.created, record.msecs = 1796160198.016, 16.0  # 2026-12-01 21:23:18.016 UTC
    assert json.loads(json_formatter().format(record))["time"] == "2026-12-01T21:23:18.016Z"
    assert TextFormatter("%(asctime)s %(message)s").format(record) == "2026-12-01T21:23:18.016Z hello"


def test_a_json_line_holds_every_field_escaped_with_extras_and_the_traceback():
    import logging
    import sys
    import uuid

    from app.logformat import json_formatter

    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("app.test", logging.ERROR, __file__, 1, 'a "b"\n{"level": "%s"}', ("INFO",), exc_info)
    record.request_id, record.status, record.user, record.thing = "r1", 503, uuid.UUID(int=1), object()
    line = json_formatter().format(record)
    assert "\n" not in line  # a newline in the message cannot start a forged line (ASVS 7.3.1)
    data = json.loads(line)
    assert list(data)[:5] == ["time", "level", "logger", "message", "request_id"]
    assert data["level"] == "ERROR" and data["logger"] == "app.test" and data["request_id"] == "r1"
    assert data["message"] == 'a "b"\n{"level": "INFO"}'
    assert data["status"] == 503 and data["user"] == str(uuid.UUID(int=1)) and data["thing"].startswith("<object")
    assert data["exc_info"].startswith("Traceback") and "ValueError: boom" in data["exc_info"]
    assert not {"args", "msg", "levelno", "pathname", "exc_text"} & set(data)
    assert "request_id" not in json.loads(json_formatter(request_id=False).format(record))


def test_query_strings_are_cut_out_of_messages_and_tracebacks():
    import logging

    from app.logformat import QueryStringFilter

    try:
        raise ValueError("bad /login?token=s3cret")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "gunicorn.error", logging.ERROR, __file__, 1, "Error handling request %s", ("/x?a=s3cret",), exc_info
    )
    assert QueryStringFilter().filter(record)
    line = logging.Formatter().format(record)
    assert "Error handling request /x" in line and "bad /login" in line and "s3cret" not in line


def test_the_direct_request_line_is_the_formatters_line(make_app, capfd):
    make_app(LOG_FORMAT="json")
    assert observability._direct_fd() is not None
    fields = {"request_id": "r-1", "method": "GET", "path": "/me", "status": 200, "duration_ms": 0.42,
              "remote_addr": "127.0.0.1"}  # fmt: skip
    before = time.time()
    observability.record("/me", "GET", 200, 0.00042, path="/me", remote_addr="127.0.0.1", request_id="r-1")
    direct = capfd.readouterr().err
    observability.log.handlers.append(logging.NullHandler())  # anything configured: through logging
    try:
        assert observability._direct_fd() is None
    finally:
        observability.log.handlers.pop()
    record = logging.LogRecord("app.requests", logging.INFO, "", 0, "request", None, None)
    record.__dict__.update(fields)
    record.created, record.msecs = before, 0.0
    through_logging = JsonFormatter().format(record)
    assert direct.endswith("\n") and direct.count("\n") == 1
    line, expected = json.loads(direct), json.loads(through_logging)
    assert line.pop("time")[:19] >= expected.pop("time")[:19]  # the same second, or the next
    assert list(line.items()) == list(expected.items())  # every field, in the same order

"""Metrics and logs: counted right, request ids in every line, and never a secret."""

from __future__ import annotations

import json
import re

from tests.conftest import PASSWORD, bearer
from tests.helpers import assert_problem


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


def test_logs_are_json_with_request_id_and_no_secrets(make_app, capsys):
    app = make_app(LOG_FORMAT="json")
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

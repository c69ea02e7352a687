"""Starting and stopping the real commands: a refused setting is one clear line and a non-zero exit
from `flask` and gunicorn alike; a served instance stopped with SIGTERM logs cleanly."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from tests.deploy.conftest import BIN, ROOT, free_port
from tests.e2e.server import running_server

pytestmark = pytest.mark.slow

BAD_SETTINGS = [
    ({"JWT_ACCESS_TOKEN_EXPIRES": "15m"}, "JWT_ACCESS_TOKEN_EXPIRES must be a whole number, got '15m'"),
    ({"APP_ENV": "prod"}, "APP_ENV must be one of development, testing, production, got 'prod'"),
    ({"JWT_SECRET_KEY": ""}, "JWT_SECRET_KEY is required when APP_ENV=production"),
    ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS must list exact origins (https://app.example.com), never '*'"),
]


def environment(tmp_path, **overrides: str) -> dict[str, str]:
    """A production environment that starts, with `overrides`; nothing from the caller's gunicorn settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GUNICORN_", "TLS_", "JWT_"))}
    env.update(
        APP_ENV="production",
        DATABASE_URL=f"sqlite:///{tmp_path / 'auth.db'}",
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        FLASK_APP="wsgi",
        GUNICORN_WORKERS="1",
    )
    env.update(overrides)
    return env


def assert_one_clear_line(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 1, and stderr is exactly the one line."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr == f"auth-service: configuration error: {message}\n", result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(("overrides", "message"), BAD_SETTINGS, ids=lambda value: str(value)[:30])
def test_flask_commands_stop_with_one_line(tmp_path, overrides, message):
    for command in (["db", "upgrade"], ["purge-tokens"]):
        result = subprocess.run(
            [str(BIN / "flask"), "--app", "wsgi", *command],
            cwd=ROOT, env=environment(tmp_path, **overrides), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert_one_clear_line(result, message)


@pytest.mark.parametrize(("overrides", "message"), BAD_SETTINGS, ids=lambda value: str(value)[:30])
def test_gunicorn_stops_with_one_line_before_it_binds_or_forks(tmp_path, overrides, message):
    bind = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [str(BIN / "gunicorn"), "--config", "deploy/gunicorn.conf.py", "--bind", bind, "wsgi:app"],
        cwd=ROOT, env=environment(tmp_path, **overrides), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert_one_clear_line(result, message)
    for never in ("ready", "Booting worker", "Listening at"):
        assert never not in result.stdout + result.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_served_instance_stopped_with_sigterm_logs_no_logging_error(tmp_path, log_format):
    """gunicorn's text lines format %(process)d: the app once turned process ids off for every record,
    and each worker line after start-up ("Worker exiting", ...) became a "--- Logging error ---"."""
    with running_server(tmp_path, "sqlite", tls=False, LOG_FORMAT=log_format) as server:
        assert server.call("GET", "/health")[0] == 200
    log = server.log_path.read_text()
    assert "Worker exiting" in log and "Shutting down: Master" in log, log
    assert "Logging error" not in log and "Traceback" not in log, log


def test_gunicorn_refuses_two_workers_with_unshared_limits(tmp_path):
    """Without REDIS_URL each worker would count the per-IP budgets alone: 2 workers, twice the budget."""
    bind = f"127.0.0.1:{free_port()}"
    env = environment(tmp_path, GUNICORN_WORKERS="2")
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [str(BIN / "gunicorn"), "--config", "deploy/gunicorn.conf.py", "--bind", bind, "wsgi:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert_one_clear_line(
        result,
        "2 workers without REDIS_URL would each count the per-IP rate limits on their own; set REDIS_URL "
        "(shared limits), GUNICORN_WORKERS=1, or RATELIMIT_ENABLED=false (limits enforced in front)",
    )
    assert "Booting worker" not in result.stdout + result.stderr

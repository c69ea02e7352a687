"""The container start, run for real: deploy/entrypoint.sh against the local PostgreSQL.

What a container does, without a container engine: when we may (root, util-linux unshare), the
script runs in a private mount namespace where the whole root filesystem is read-only except its
scratch folder and /dev/shm, as in Kubernetes (readOnlyRootFilesystem, an emptyDir on /tmp); the
venv's python, flask and gunicorn come first in PATH.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    BIN,
    ENTRYPOINT,
    ROOT,
    call,
    flask,
    free_port,
    service_env,
    trusting,
    wait_until,
)

HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


def run_entrypoint(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the entrypoint to its end (for the cases where it must refuse to start)."""
    return subprocess.run([str(ENTRYPOINT)], cwd="/", env=env, capture_output=True, text=True, timeout=timeout)


def healthcheck(env: dict[str, str]) -> int:
    """The container HEALTHCHECK command's exit status."""
    return subprocess.run([str(BIN / "python"), str(HEALTHCHECK)], env=env, capture_output=True, timeout=30).returncode


def unreachable_database() -> str:
    """A PostgreSQL URL on a loopback port where nothing listens."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/auth"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "no TLS certificate"),
        ({"TLS_CERT_FILE": "/etc/hostname"}, "set both TLS_CERT_FILE and TLS_KEY_FILE"),
        ({"TLS_KEY_FILE": "/etc/hostname"}, "set both TLS_CERT_FILE and TLS_KEY_FILE"),
        ({"PLAIN_HTTP": "1", "TLS_CERT_FILE": "/etc/hostname", "TLS_KEY_FILE": "/etc/hostname"}, "choose one"),
        ({"TLS_CERT_FILE": "/nonexistent.pem", "TLS_KEY_FILE": "/nonexistent.key"}, "not a readable file"),
        ({"PLAIN_HTTP": "maybe"}, "PLAIN_HTTP must be 1 or 0"),
        ({"PLAIN_HTTP": "1", "MIGRATE_ON_START": "sometimes"}, "MIGRATE_ON_START must be 1 or 0"),
    ],
)
def test_entrypoint_refuses_an_unclear_serving_mode_at_once(settings, message):
    # Decided before the database wait: an unreachable database must not delay the answer.
    env = service_env(unreachable_database(), DB_WAIT_TIMEOUT="60", **settings)
    started = time.monotonic()
    result = run_entrypoint(env)
    assert result.returncode == 64, result.stderr
    assert message in result.stderr
    assert time.monotonic() - started < 10


def test_entrypoint_refuses_a_weak_secret_before_waiting_for_the_database():
    env = service_env(unreachable_database(), PLAIN_HTTP="1", JWT_SECRET_KEY="too-short", DB_WAIT_TIMEOUT="60")
    started = time.monotonic()
    result = run_entrypoint(env)
    assert result.returncode == 64, result.stderr
    assert "configuration refused" in result.stderr and "JWT_SECRET_KEY" in result.stderr
    assert time.monotonic() - started < 15


def test_entrypoint_gives_up_when_the_database_never_answers():
    env = service_env(unreachable_database(), PLAIN_HTTP="1", DB_WAIT_TIMEOUT="2", DB_WAIT_INTERVAL="0.5")
    result = run_entrypoint(env)
    assert result.returncode == 1, result.stderr
    assert "waiting for the database" in result.stderr
    assert "did not answer within 2s; giving up" in result.stderr
    assert "Listening at" not in result.stderr


@pytest.mark.slow
def test_entrypoint_waits_migrates_serves_and_stops_gracefully(databases, entrypoints, workdir, read_only_root):
    url = databases.url(create=False)  # not there yet: the entrypoint has to wait for it
    port = free_port()
    certs = workdir / "certs"
    env = service_env(
        url,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        TLS_SELF_SIGNED="1",
        TLS_SELF_SIGNED_DIR=str(certs),
        DB_WAIT_INTERVAL="0.5",
        # A deliberately slow password hash (seconds), so a signup is still in flight when SIGTERM comes.
        ARGON2_TIME_COST="150",
        GUNICORN_GRACEFUL_TIMEOUT="60",
    )
    entry = entrypoints(env, workdir)
    wait_until(lambda: "waiting for the database" in entry.log, 20, "the entrypoint to wait for the database")
    time.sleep(1)
    assert entry.running(), entry.log
    assert "Listening at" not in entry.log
    databases.create(url)

    base = f"https://127.0.0.1:{port}"
    wait_until(lambda: "Listening at" in entry.log or not entry.running(), 45, "gunicorn to listen")
    context = trusting(certs / "cert.pem")  # made by the entrypoint (TLS_SELF_SIGNED=1)
    entry.wait_for(f"{base}/health", context=context)
    ready = call(f"{base}/ready", context=context)
    assert ready.status == 200, ready.body
    assert ready.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Running upgrade" in entry.log
    assert databases.scalar(url, "SELECT count(*) FROM alembic_version") == 1

    # exec: the process we started is gunicorn itself, so SIGTERM reaches it directly.
    cmdline = Path(f"/proc/{entry.process.pid}/cmdline").read_bytes().split(b"\0")
    assert any(part.endswith(b"gunicorn") for part in cmdline), cmdline
    if read_only_root:
        root_mount = Path(f"/proc/{entry.process.pid}/mounts").read_text().splitlines()
        assert any(line.split()[1] == "/" and "ro" in line.split()[3].split(",") for line in root_mount)
    assert healthcheck(env) == 0

    # A signup in flight when SIGTERM arrives still completes: the shutdown is graceful.
    result = {}
    body = {"email": "graceful@example.com", "password": "correct horse battery staple", "name": "G"}

    def signup():
        result["response"] = call(f"{base}/signup", "POST", body, context=context, timeout=30)

    thread = threading.Thread(target=signup)
    thread.start()
    time.sleep(1)
    assert entry.stop(signal.SIGTERM) == 0, entry.log
    thread.join(timeout=30)
    assert result["response"].status == 201, (result["response"].body, entry.log)
    assert "Handling signal: term" in entry.log and "Shutting down: Master" in entry.log
    assert healthcheck(env) == 1


@pytest.fixture(scope="module")
def plain_server(databases, entrypoints, module_workdir):
    """Plain HTTP behind a (pretend) proxy on 127.0.0.1, not migrating on start, as in Kubernetes."""
    url = databases.url()
    port = free_port()
    env = service_env(
        url, GUNICORN_BIND=f"127.0.0.1:{port}", PLAIN_HTTP="1", TRUSTED_PROXIES="127.0.0.1", MIGRATE_ON_START="0"
    )
    entry = entrypoints(env, module_workdir)
    base = f"http://127.0.0.1:{port}"
    entry.wait_for(f"{base}/health")
    return {"entry": entry, "env": env, "base": base, "ready_before_job": call(f"{base}/ready")}


@pytest.fixture(scope="module")
def migrated_plain_server(plain_server):
    """The plain server after the migration job has run."""
    result = flask(plain_server["env"], "db", "upgrade")
    assert result.returncode == 0, result.stderr
    return plain_server


@pytest.mark.slow
def test_without_migrate_on_start_ready_waits_for_the_migration_job(plain_server):
    base = plain_server["base"]
    assert "not migrating" in plain_server["entry"].log
    not_ready = plain_server["ready_before_job"]
    assert not_ready.status == 503 and not_ready.json()["code"] == "not_ready"
    # What the Kubernetes Job runs: wait, then `flask db upgrade` under the migration lock.
    job = subprocess.run(
        [str(BIN / "python"), "deploy/dbctl.py", "locked", "--", str(BIN / "flask"), "db", "upgrade"],
        cwd=ROOT, env={**plain_server["env"], "FLASK_APP": "wsgi"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    assert call(f"{base}/ready").status == 200
    assert healthcheck(plain_server["env"]) == 0


@pytest.mark.slow
def test_plain_http_believes_x_forwarded_proto_only_from_trusted_proxies(migrated_plain_server):
    base = migrated_plain_server["base"]
    proxied = call(f"{base}/health", headers={"X-Forwarded-Proto": "https"})
    assert proxied.headers.get("Strict-Transport-Security", "").startswith("max-age=")
    # 127.0.0.5 is not in TRUSTED_PROXIES: its claim that the client used HTTPS is ignored.
    spoofed = call(f"{base}/health", headers={"X-Forwarded-Proto": "https"}, source="127.0.0.5")
    assert spoofed.status == 200 and "Strict-Transport-Security" not in spoofed.headers
    direct = call(f"{base}/health")
    assert "Strict-Transport-Security" not in direct.headers


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "recorded"),
    [
        ("127.0.0.1", "203.0.113.9"),  # a trusted proxy: its X-Forwarded-For names the client
        ("127.0.0.5", "127.0.0.5"),  # anyone else: the header is a lie and is ignored
    ],
)
def test_plain_http_records_the_client_address_only_a_trusted_proxy_forwards(migrated_plain_server, source, recorded):
    base = migrated_plain_server["base"]
    body = {"email": f"proxied-{source}@example.com", "password": "correct horse battery staple", "name": "P"}
    signup = call(f"{base}/signup", "POST", body, headers={"X-Forwarded-For": "203.0.113.9"}, source=source)
    assert signup.status == 201, signup.body
    sessions = call(f"{base}/me/sessions", token=signup.json()["access_token"]).json()["items"]
    assert [item["ip"] for item in sessions] == [recorded]

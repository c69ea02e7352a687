"""The flask commands: create-admin, purge-tokens, and users import/export as processes of their own
(a crash halfway, the progress bar on a terminal); the import's rules are tests/services/test_imports.py."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select as select_module
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditEvent, OutboxMessage, RevokedToken, Session, User
from app.services import outbox
from tests.helpers import PASSWORD, bearer
from tests.servers import postgres_server  # noqa: F401  (fixture)
from tests.smtp import Inbox, SMTPServer

ADMIN_PASSWORD = "a long admin passphrase"


def find_user(app, email: str) -> User | None:
    """The user row with this email, detached from any session."""
    with app.app_context():
        user = db.session.scalars(select(User).where(User.email == email)).first()
        if user is not None:
            db.session.expunge(user)
        return user


def invoke(app, runner, *args: str, input: str | None = None):
    """Run a command through the app's CLI (the commands push their own app context)."""
    return runner.invoke(args=list(args), input=input)


def login(client, email: str, password: str):
    """POST /login."""
    return client.post("/login", json={"email": email, "password": password})


@pytest.mark.parametrize(
    "args", [["purge-tokens"], ["create-admin", "--email", "root@example.com", "--password", ADMIN_PASSWORD]]
)
def test_command_runs_through_app_cli_runner(runner, args):
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output


# --- create-admin ----------------------------------------------------------------------------


def test_create_admin_creates_admin_who_can_log_in(app, client, runner):
    result = invoke(app, runner, "create-admin", "--email", "root@example.com", "--password", ADMIN_PASSWORD)
    assert result.exit_code == 0, result.output
    assert "root@example.com" in result.output
    user = find_user(app, "root@example.com")
    assert user is not None
    assert user.role == "admin"
    assert user.is_active is True
    assert user.password_hash.startswith("$argon2id$")
    response = login(client, "root@example.com", ADMIN_PASSWORD)
    assert response.status_code == 200
    body = response.get_json()
    assert body["user"]["role"] == "admin"
    assert client.get("/users", headers=bearer(body["access_token"])).status_code == 200


def test_create_admin_normalizes_email_and_uses_name(app, client, runner):
    result = invoke(
        app, runner, "create-admin", "--email", " Root@Example.COM ", "--password", ADMIN_PASSWORD, "--name", "Root"
    )
    assert result.exit_code == 0, result.output
    user = find_user(app, "root@example.com")
    assert user is not None and user.name == "Root"
    assert login(client, "ROOT@example.com", ADMIN_PASSWORD).status_code == 200


def test_create_admin_promotes_existing_user_without_password(app, client, runner, user):
    email = user["user"]["email"]
    result = invoke(app, runner, "create-admin", "--email", email, input="")
    assert result.exit_code == 0, result.output
    assert "Password" not in result.output  # no prompt for an existing account
    assert find_user(app, email).role == "admin"
    response = login(client, email, PASSWORD)  # the password is unchanged
    assert response.status_code == 200
    assert response.get_json()["user"]["role"] == "admin"
    assert client.get("/users", headers=bearer(response.get_json()["access_token"])).status_code == 200
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(User)) == 1


def test_create_admin_promotes_and_reactivates_disabled_user(app, client, runner, user):
    email = user["user"]["email"]
    with app.app_context():
        db.session.get(User, uuid.UUID(user["user_id"])).is_active = False
        db.session.commit()
    result = invoke(app, runner, "create-admin", "--email", email)
    assert result.exit_code == 0, result.output
    assert find_user(app, email).is_active is True
    assert login(client, email, PASSWORD).status_code == 200


def test_create_admin_promote_with_password_sets_it(app, client, runner, user):
    email = user["user"]["email"]
    result = invoke(app, runner, "create-admin", "--email", email, "--password", ADMIN_PASSWORD)
    assert result.exit_code == 0, result.output
    assert login(client, email, ADMIN_PASSWORD).status_code == 200
    assert login(client, email, PASSWORD).status_code == 401


@pytest.mark.parametrize("email", ["not-an-email", "root@", "@example.com", "root example@x.com", ""])
def test_create_admin_invalid_email_fails(app, runner, email):
    result = invoke(app, runner, "create-admin", "--email", email, "--password", ADMIN_PASSWORD)
    assert result.exit_code != 0
    assert "email" in result.output.lower()
    assert "Traceback" not in result.output
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(User)) == 0


@pytest.mark.parametrize("password", ["short", "1234567"])
def test_create_admin_short_password_fails_with_reason(app, runner, password):
    result = invoke(app, runner, "create-admin", "--email", "root@example.com", "--password", password)
    assert result.exit_code != 0
    assert "password" in result.output.lower()
    assert str(app.config["PASSWORD_MIN_LENGTH"]) in result.output
    assert find_user(app, "root@example.com") is None


def test_create_admin_overlong_password_fails(app, runner):
    password = "p" * (app.config["PASSWORD_MAX_LENGTH"] + 1)
    result = invoke(app, runner, "create-admin", "--email", "root@example.com", "--password", password)
    assert result.exit_code != 0
    assert "password" in result.output.lower()
    assert find_user(app, "root@example.com") is None


def test_create_admin_without_email_fails(app, runner):
    result = invoke(app, runner, "create-admin", "--password", ADMIN_PASSWORD)
    assert result.exit_code != 0
    assert "--email" in result.output


def test_create_admin_prompts_for_password_of_new_account(app, client, runner):
    result = invoke(
        app, runner, "create-admin", "--email", "root@example.com", input=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Password" in result.output
    assert ADMIN_PASSWORD not in result.output  # hidden input is not echoed
    assert find_user(app, "root@example.com").role == "admin"
    assert login(client, "root@example.com", ADMIN_PASSWORD).status_code == 200


def test_create_admin_prompt_mismatch_asks_again(app, client, runner):
    result = invoke(
        app,
        runner,
        "create-admin",
        "--email",
        "root@example.com",
        input=f"{ADMIN_PASSWORD}\nsomething else entirely\n{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert login(client, "root@example.com", ADMIN_PASSWORD).status_code == 200


def test_create_admin_prompted_short_password_fails(app, runner):
    result = invoke(app, runner, "create-admin", "--email", "root@example.com", input="pw\npw\n")
    assert result.exit_code != 0
    assert "password" in result.output.lower()
    assert "Traceback" not in result.output
    assert find_user(app, "root@example.com") is None


# --- purge-tokens ----------------------------------------------------------------------------


def test_purge_tokens_deletes_only_expired_records(app, runner, user):
    now = datetime.now(UTC)
    user_id = uuid.UUID(user["user_id"])
    with app.app_context():
        db.session.add_all(
            [
                RevokedToken(
                    jti="expired-1", token_type="access", user_id=user_id, expires_at=now - timedelta(hours=1)
                ),
                RevokedToken(jti="expired-2", token_type="refresh", user_id=None, expires_at=now - timedelta(days=40)),
                RevokedToken(jti="live-1", token_type="access", user_id=user_id, expires_at=now + timedelta(minutes=5)),
                Session(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    refresh_jti=str(uuid.uuid4()),
                    expires_at=now - timedelta(minutes=1),
                ),
                Session(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    refresh_jti=str(uuid.uuid4()),
                    expires_at=now - timedelta(days=1),
                    revoked_at=now - timedelta(days=2),
                ),
                Session(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    refresh_jti=str(uuid.uuid4()),
                    expires_at=now + timedelta(days=1),
                    revoked_at=now - timedelta(hours=1),
                ),
            ]
        )
        db.session.commit()
        live_sessions = set(
            db.session.scalars(select(Session.id).where(Session.expires_at > now)).all()
        )  # the signup session and the revoked-but-unexpired one
    assert len(live_sessions) == 2

    result = invoke(app, runner, "purge-tokens")
    assert result.exit_code == 0, result.output

    with app.app_context():
        assert set(db.session.scalars(select(RevokedToken.jti)).all()) == {"live-1"}
        assert set(db.session.scalars(select(Session.id)).all()) == live_sessions


def test_purge_tokens_keeps_logout_records_and_token_stays_revoked(app, client, runner, user):
    assert client.post("/logout", headers=bearer(user["access_token"])).status_code == 200
    result = invoke(app, runner, "purge-tokens")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(RevokedToken)) == 1
        assert db.session.scalar(select(db.func.count()).select_from(Session)) == 1
    body = client.post("/checkToken", json={"token": user["access_token"]}).get_json()
    assert body["valid"] is False
    assert body["reason"] == "revoked"


def test_purge_tokens_after_expiry_removes_logout_records(app, client, runner, user):
    assert client.post("/logout", headers=bearer(user["access_token"])).status_code == 200
    past = datetime.now(UTC) - timedelta(seconds=1)
    with app.app_context():
        for record in db.session.scalars(select(RevokedToken)):
            record.expires_at = past
        for session in db.session.scalars(select(Session)):
            session.expires_at = past
        db.session.commit()
    result = invoke(app, runner, "purge-tokens")
    assert result.exit_code == 0, result.output
    assert "1" in result.output
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(RevokedToken)) == 0
        assert db.session.scalar(select(db.func.count()).select_from(Session)) == 0


def test_purge_tokens_on_empty_database_succeeds(app, runner):
    result = invoke(app, runner, "purge-tokens")
    assert result.exit_code == 0, result.output


def test_create_admin_promote_with_short_password_changes_nothing(app, client, runner, user):
    email = user["user"]["email"]
    result = invoke(app, runner, "create-admin", "--email", email, "--password", "short")
    assert result.exit_code != 0
    assert "password" in result.output.lower()
    assert find_user(app, email).role == "user"
    assert login(client, email, PASSWORD).status_code == 200


# --- users import / export as their own processes -------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
FLASK = str(Path(sys.executable).with_name("flask"))


def command_env(database_url: str) -> dict[str, str]:
    """The environment of a `flask` process on the test database."""
    return {**os.environ, "APP_ENV": "testing", "DATABASE_URL": database_url, "FLASK_APP": "wsgi"}


def many_users(path: Path, count: int) -> Path:
    """A JSON Lines file of `count` users sharing one bcrypt hash (the import computes none)."""
    stored = bcrypt.hashpw(b"crash test password", bcrypt.gensalt(rounds=4)).decode()
    with path.open("w") as handle:
        for number in range(count):
            handle.write(json.dumps({"email": f"user{number}@crash.example", "password_hash": stored}) + "\n")
    return path


def user_count(app) -> tuple[int, int]:
    """Users, and per-user import events."""
    with app.app_context():
        users = db.session.scalar(select(func.count()).select_from(User))
        events = db.session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.event == "user_imported")
        )
        db.session.remove()
        return users, events


def test_an_import_killed_midway_keeps_whole_batches_and_a_rerun_with_skip_finishes(app, database_url, tmp_path):
    total, batch = 20_000, 250
    path = many_users(tmp_path / "many.jsonl", total)
    process = subprocess.Popen(
        [FLASK, "users", "import", str(path), "--batch-size", str(batch)],
        cwd=ROOT, env=command_env(database_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and user_count(app)[0] < 2 * batch:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # a crash: no cleanup, no summary
        assert process.wait(30) == -signal.SIGKILL, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    kept, events = user_count(app)
    assert 0 < kept < total, "the import ended before it could be killed: make the file bigger"
    assert kept % batch == 0 and events == kept  # whole batches, each with its audit events
    rerun = subprocess.run(
        [FLASK, "users", "import", str(path), "--on-conflict", "skip"],
        cwd=ROOT, env=command_env(database_url), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    expected = f"users.imported {total - kept}\nusers.updated 0\nusers.skipped {kept}\nusers.failed 0\n"
    assert rerun.stdout == expected
    assert user_count(app) == (total, total)


def read_terminal(fd: int) -> str:
    """Everything written so far to the master side of a pseudo-terminal."""
    chunks = []
    while select_module.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def run_import(args: list[str], database_url: str, source: Path | None, stderr) -> subprocess.CompletedProcess:
    """`flask users import` as a process; `source` is sent through a pipe on standard input when given."""
    return subprocess.run(args, cwd=ROOT, env=command_env(database_url), input=source.read_bytes() if source else b"",
                          stdout=subprocess.PIPE, stderr=stderr, timeout=120)  # fmt: skip


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_the_import_draws_a_progress_bar_on_a_terminal_and_none_when_piped(app, database_url, tmp_path, source):
    path = many_users(tmp_path / "some.jsonl", 300)
    args = [FLASK, "users", "import", str(path) if source == "file" else "-", "--on-conflict", "skip"]
    piped_input = path if source == "stdin" else None
    master, slave = pty.openpty()
    try:
        on_terminal = run_import(args, database_url, piped_input, stderr=slave)
        os.close(slave)
        drawn = read_terminal(master)
    finally:
        os.close(master)
    assert on_terminal.returncode == 0, drawn[-500:]
    assert "importing" in drawn, drawn[-500:]
    assert ("100%" if source == "file" else "300") in drawn, drawn[-500:]  # by bytes for a file, by lines for a pipe
    assert on_terminal.stdout.decode().splitlines()[0] == "users.imported 300"  # the summary alone on stdout
    piped = run_import(args, database_url, piped_input, stderr=subprocess.PIPE)
    assert piped.returncode == 0
    assert piped.stderr == b""
    assert piped.stdout.decode().splitlines() == [
        "users.imported 0", "users.updated 0", "users.skipped 300", "users.failed 0"]  # fmt: skip


def test_an_import_whose_database_goes_away_says_so_and_a_rerun_with_skip_finishes(postgres_server, tmp_path):  # noqa: F811
    from flask_migrate import upgrade

    from tests.conftest import make_test_app
    from tests.databases import Backend

    url = Backend("postgresql", postgres_server.url).create(str(tmp_path))
    app = make_test_app(url)
    with app.app_context():
        upgrade()
        db.engine.dispose()
    total, batch = 20_000, 250
    path = many_users(tmp_path / "many.jsonl", total)
    env = {**command_env(url), "DATABASE_CONNECT_TIMEOUT": "1", "DATABASE_STATEMENT_TIMEOUT": "2"}
    process = subprocess.Popen([FLASK, "users", "import", str(path), "--batch-size", str(batch)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and user_count(app)[0] < 2 * batch:
            time.sleep(0.02)
        with app.app_context():
            db.engine.dispose()
        postgres_server.stop()  # every session cut, as in a crash or a failover
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, stderr[-2000:]
    assert "The import stopped: database error" in stderr and "--on-conflict skip" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr
    reported = int(stdout.split("users.imported ")[1].split()[0])
    postgres_server.start()
    kept = user_count(app)[0]
    assert reported <= kept <= reported + batch and 0 < kept < total  # a commit may land as the line drops
    rerun = subprocess.run([FLASK, "users", "import", str(path), "--on-conflict", "skip"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"users.imported {total - kept}\n" in rerun.stdout and f"users.skipped {kept}\n" in rerun.stdout
    assert user_count(app) == (total, total)
    with app.app_context():
        db.engine.dispose()


class HeldInbox(Inbox):
    """An SMTP inbox that holds each conversation at RCPT until released: the worker is mid-send."""

    def __init__(self) -> None:
        """Not reached, not released."""
        super().__init__()
        self.reached = threading.Event()
        self.release = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd's hook)
        """Say so, wait for the release, then accept the recipient."""
        self.reached.set()
        while not self.release.is_set():
            await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"


def outbox_rows(app) -> list[tuple[str, int]]:
    """(status, attempts) of every outbox row."""
    with app.app_context():
        found = [(row.status, row.attempts) for row in db.session.scalars(select(OutboxMessage))]
        db.session.remove()
        return found


def test_a_delivery_worker_killed_between_claim_and_send_loses_no_mail(app, database_url):
    """A real `flask outbox run` SIGKILLed while its SMTP conversation is open: the mail comes, once, late.

    docs/OPERATIONS.md: delivery is at least once; a worker that dies before the SMTP server accepted
    the message leaves it claimed until its lease ends, and the next worker sends it.
    """
    inbox = HeldInbox()
    server = SMTPServer(inbox=inbox).start()
    env = {**command_env(database_url), "MAIL_URL": server.url(), "OUTBOX_LEASE": "2", "OUTBOX_POLL_INTERVAL_MS": "100"}
    with app.app_context():
        context = {"name": "K", "link": "https://x/?t=1", "expires_in": "1 hour"}
        outbox.enqueue_mail("password_reset", to="killed@example.com", context=context, user_id=None, secrets=("link",))
        db.session.commit()
    worker = [FLASK, "outbox", "run"]
    first = subprocess.Popen(worker, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = None
    try:
        assert inbox.reached.wait(60), "the worker never reached the SMTP server"
        first.send_signal(signal.SIGKILL)  # mid-conversation: claimed, not sent
        assert first.wait(30) == -signal.SIGKILL
        assert outbox_rows(app) == [("pending", 1)]  # claimed (attempt counted), not sent, not lost
        inbox.release.set()  # the dead worker's conversation ends without DATA
        second = subprocess.Popen(worker, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        messages = inbox.wait(1, timeout=30)
        assert [message["To"] for message in messages] == ["killed@example.com"]
        deadline = time.monotonic() + 10
        while outbox_rows(app) != [("sent", 2)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert outbox_rows(app) == [("sent", 2)]
        time.sleep(1)
        assert len(inbox.messages) == 1  # once: nothing sent it again
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
            if process is not None:
                process.communicate()
        server.stop()

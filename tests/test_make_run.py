"""`make run` as a newcomer runs it, and the README's curl walk-throughs pasted against it.

The Makefile's own `run` target, from a copy of the checkout's tracked files in a temporary folder:
no `.env`, no `instance/`, nothing beside it (no ../shared). Its environment has only what any
shell has (PATH, locale, a fresh HOME): none of the test's DATABASE_URL, REDIS_URL, APP_ENV,
MAKEFLAGS. The one liberty taken: the running test's virtualenv is linked in as `.venv` and
`-o .venv/.installed` tells make it is installed, so nothing is downloaded. The README's
`.venv/bin/…` commands then work as written too.
"""

from __future__ import annotations

import contextlib
import email
import json
import os
import re
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import jwt
import pytest

from app import models  # noqa: F401 - every table on db.metadata
from app.extensions import db
from app.services.health import migration_heads
from tests.databases import IN_CI
from tests.e2e.server import Server, free_port
from tests.helpers import PASSWORD
from tests.servers import require

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# What a newcomer's shell has; everything else of the test's environment stays out.
NEWCOMER_VARIABLES = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR")
STARTUP_SECONDS = 45
# Records every curl call of a walk-through (its arguments, the response's headers and body),
# then answers exactly as curl would: the README's commands run unchanged.
CURL_RECORDER = """#!/bin/sh
n=$(ls "$WALK_CALLS" | wc -l)
dir="$WALK_CALLS/$(printf %03d $((n + 1)))"
mkdir "$dir"
printf '%s\\0' "$@" > "$dir/argv"
"$REAL_CURL" -D "$dir/headers" "$@" > "$dir/body"
status=$?
cat "$dir/body"
exit $status
"""

pytestmark = pytest.mark.e2e


def unavailable(reason: str) -> None:
    """A skip with the reason; under CI=true a failure, since CI must test this."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def newcomer_environment(home: Path) -> dict[str, str]:
    """The environment of a fresh shell: no setting of the service, no make or pytest variable."""
    env = {name: os.environ[name] for name in NEWCOMER_VARIABLES if name in os.environ}
    env["HOME"] = str(home)
    return env


def copy_tracked_files(destination: Path) -> None:
    """The checkout's tracked files as they are on disk (edits included), as a fresh clone has them."""
    git = require(shutil.which("git"), "git")
    listed = subprocess.run([git, "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    if listed.returncode != 0:
        unavailable(f"{ROOT} is not a git checkout: {listed.stderr.decode().strip()}")
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if not name or not (source.exists() or source.is_symlink()):  # deleted in the working tree
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


@dataclass
class MakeRun:
    """The running `make run`: its folder, port and output."""

    directory: Path
    port: int
    log: Path
    server: Server
    environment: dict[str, str]

    @property
    def instance(self) -> Path:
        """The copy's instance/ folder, where development keeps its database, certificate and secrets."""
        return self.directory / "instance"

    def output(self) -> str:
        """Everything make and the server printed so far."""
        return self.log.read_text(errors="replace")


def _wait_until_healthy(process: subprocess.Popen, run: MakeRun) -> None:
    """Until /health answers 200 over TLS checked against the generated certificate."""
    deadline = time.monotonic() + STARTUP_SECONDS
    cert = run.instance / "certs" / "cert.pem"
    while True:
        assert process.poll() is None, f"make run exited with {process.returncode}:\n{run.output()}"
        try:
            # Trusting that certificate alone, read afresh until it answers (it may be half written).
            run.server = Server(run.server.base, cert)
            if run.server.call("GET", "/health")[0] == 200:
                return
        except OSError:  # no certificate yet, not listening yet (refused, reset, TLS handshake)
            pass
        assert time.monotonic() < deadline, f"make run did not serve /health in {STARTUP_SECONDS} s:\n{run.output()}"
        time.sleep(0.2)


def _group_alive(process: subprocess.Popen) -> bool:
    """Whether any process of make's group (make, gunicorn, its workers) still runs."""
    process.poll()  # reap make itself, or its zombie would count
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to make's process group, SIGKILL to whatever still runs 30 s later (gunicorn's graceful timeout)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory) -> Iterator[MakeRun]:
    """`make run PORT=<free>` in a fresh copy of the repository, stopped after the module."""
    make = require(shutil.which("make"), "make")
    base = tmp_path_factory.mktemp("make-run")
    directory = base / "auth-service"
    copy_tracked_files(directory)
    assert not (directory / ".env").exists() and not (directory / "instance").exists()
    # The test's virtualenv stands in for the one `make run` would create and fill.
    (directory / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (base / "home").mkdir()
    environment = newcomer_environment(base / "home")
    port = free_port()
    log = base / "make-run.log"
    command = [make, "-o", ".venv/.installed", f"PORT={port}", "run"]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=directory, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    run = MakeRun(directory, port, log, Server(f"https://localhost:{port}"), environment)
    try:
        _wait_until_healthy(process, run)
        yield run
    finally:
        _stop(process)


def _signup(run: MakeRun, address: str) -> dict:
    status, _, body = run.server.call("POST", "/signup", {"email": address, "password": PASSWORD, "name": "New"})
    assert status == 201, body
    return body


def test_make_run_serves_https_with_the_certificate_it_generated(make_run):
    certs = make_run.instance / "certs"
    served = ssl.get_server_certificate(("localhost", make_run.port))
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert((certs / "cert.pem").read_text())
    assert (certs / "key.pem").stat().st_mode & 0o777 == 0o600
    # Trusting only that certificate, for the name localhost (the fixture's health check did the same).
    status, headers, body = make_run.server.call("GET", "/health")
    assert status == 200 and body["status"] == "ok"


def test_make_run_migrates_and_serves_the_instance_sqlite_database(make_run):
    database = make_run.instance / "auth.db"
    address = "sqlite-file@example.com"
    user_id = _signup(make_run, address)["user_id"]
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        stored = connection.execute("SELECT id FROM users WHERE email = ?", (address,)).fetchall()
    assert set(db.metadata.tables) <= tables, "tables missing after make run's flask db upgrade"

    assert {revision} == set(migration_heads(str(make_run.directory / "migrations")))
    assert [uuid.UUID(str(id_)) for (id_,) in stored] == [uuid.UUID(user_id)], "it does not serve instance/auth.db"
    assert "flask db upgrade" in make_run.output()


def test_make_run_generates_the_development_secrets_in_instance(make_run):
    secrets = {name: make_run.instance / name for name in ("jwt-secret.key", "encryption.key")}
    for path in secrets.values():
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert len(path.read_text().strip()) >= 32, path
    # The tokens are signed with the generated key (PyJWT checks the HS256 signature).
    access = _signup(make_run, "jwt-secret@example.com")["access_token"]
    claims = jwt.decode(access, secrets["jwt-secret.key"].read_text().strip(), algorithms=["HS256"])
    assert claims["type"] == "access"


def _console_mail(run: MakeRun, address: str) -> Message:
    """The mail to `address` the console transport wrote into make run's output (the outbox delivers it)."""
    deadline = time.monotonic() + 20
    while True:
        # Each mail follows the transport's log line: its headers, then its MIME parts up to the closing boundary.
        for chunk in run.output().split("mail (console transport, development only)\n")[1:]:
            boundary = re.search(r'boundary="([^"]+)"', chunk)
            end = chunk.find(f"\n--{boundary[1]}--\n") if boundary else -1
            if end != -1 and re.search(rf"^To: {re.escape(address)}$", chunk[:end], re.M):
                return email.message_from_string(chunk[: end + 1])
        assert time.monotonic() < deadline, f"no mail to {address} in make run's output:\n{run.output()[-4000:]}"
        time.sleep(0.2)


def test_make_run_writes_mail_to_its_output_and_the_link_works(make_run):
    address = "console-mail@example.com"
    _signup(make_run, address)
    mail = _console_mail(make_run, address)
    assert mail["Subject"] == "Confirm your email address"
    (plain,) = [part for part in mail.walk() if part.get_content_type() == "text/plain"]
    text = plain.get_payload(decode=True).decode()
    (token,) = re.findall(r"/verify-email\?token=([\w-]+)", text)
    status, _, body = make_run.server.call("POST", "/email/verify", {"token": token})
    assert status == 200 and body["user"]["email"] == address and body["user"]["email_verified"] is True


# --- the README's walk-throughs ----------------------------------------------------------------


def readme_block(marker: str) -> str:
    """The shell block between `<!-- marker -->` and `<!-- /marker -->` of README.md."""
    match = re.search(rf"<!-- {marker} -->\s*```sh\n(.*?)```\s*<!-- /{marker} -->", README.read_text(), re.S)
    assert match, f"README.md lost its {marker} block"
    return match.group(1)


@dataclass
class Call:
    """One curl call of a walk-through, as the recorder saw it."""

    argv: list[str]
    status: int
    body: dict | list | None

    @property
    def path(self) -> str:
        """The path of the URL it called."""
        (url,) = [arg for arg in self.argv if arg.startswith("https://")]
        return "/" + url.split("/", 3)[3]

    def data(self) -> dict:
        """Its JSON request body (-d)."""
        return json.loads(self.argv[self.argv.index("-d") + 1])


@dataclass
class Walk:
    """A walk-through's run: its calls in order, what it printed, and its exit status."""

    calls: list[Call]
    stdout: str
    stderr: str
    returncode: int

    def to(self, path: str) -> list[Call]:
        """The calls to `path`, in order."""
        return [call for call in self.calls if call.path == path]


def run_walkthrough(run: MakeRun, script: str, directory: Path) -> Walk:
    """Run `script` with bash in make run's folder, every curl recorded; README's port replaced by run's."""
    assert "https://localhost:8443" in script, "the walk-through no longer calls https://localhost:8443"
    script = script.replace("https://localhost:8443", f"https://localhost:{run.port}")
    recorder, calls = directory / "bin", directory / "calls"
    recorder.mkdir()
    calls.mkdir()
    (recorder / "curl").write_text(CURL_RECORDER)
    (recorder / "curl").chmod(0o755)
    env = {
        **run.environment,
        "PATH": f"{recorder}{os.pathsep}{run.environment.get('PATH', os.defpath)}",
        "WALK_CALLS": str(calls),
        "REAL_CURL": require(shutil.which("curl"), "curl"),
    }
    bash = require(shutil.which("bash"), "bash")
    # -u: a misspelt variable fails; -e and pipefail: so does a command whose answer jq cannot read.
    done = subprocess.run(
        [bash, "-euo", "pipefail", "-c", script], cwd=run.directory, env=env, capture_output=True, text=True, timeout=60
    )
    recorded = []
    for call in sorted(calls.iterdir()):
        argv = (call / "argv").read_text().split("\0")[:-1]
        statuses = re.findall(r"^HTTP/\S+ (\d{3})", (call / "headers").read_text(), re.M)
        body = (call / "body").read_text()
        recorded.append(Call(argv, int(statuses[-1]), json.loads(body) if body else None))
    return Walk(recorded, done.stdout, done.stderr, done.returncode)


# A value the README's comments state exactly: `"key": true`, `"key": 900`, `"key": "text"`, `"key": ["a"]`
# (none with an ellipsis, which stands for what differs each run).
DOCUMENTED_VALUE = re.compile(r'"(\w+)": (true|false|null|-?\d+|"[^"…]*"|\[[^\]…]*\])(?=\s*[,}])')


def documented_answers(block: str) -> list[tuple[int, int, str]]:
    """(index of the curl call, status, rest of the comment) for each `# NNN …` comment after a call."""
    calls = 0
    found = []
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            match = re.match(r"#\s*([1-5]\d\d)\b(.*)", stripped)
            if match and calls:
                found.append((calls - 1, int(match[1]), match[2]))
        else:
            calls += len(re.findall(r"(?<![\w/-])curl ", line))
    return found


def assert_as_documented(block: str, calls: list[Call]) -> int:
    """Every status, key and exact value the block's comments state, against the calls it made; how many."""
    answers = documented_answers(block)
    for index, status, comment in answers:
        call = calls[index]
        said = f"README.md: {call.path} answers {status}{comment}; it answered {call.status} {call.body}"
        assert call.status == status, said
        for key in re.findall(r'"(\w+)":', comment):
            assert isinstance(call.body, dict) and key in call.body, said
        for key, value in DOCUMENTED_VALUE.findall(comment):
            assert call.body[key] == json.loads(value), said
    return len(answers)


def json_documents(text: str) -> list:
    """Every JSON document in `text`, in order (what `| jq` printed)."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while rest := text[position:].lstrip():
        document, position = decoder.raw_decode(text, len(text) - len(rest))
        documents.append(document)
    return documents


def test_readme_walkthroughs_run_as_written_against_make_run(make_run, tmp_path):
    """README's "A walk through with curl", then its TOTP continuation, pasted into one bash."""
    tool = shutil.which("jq")
    if tool is None:
        unavailable("jq is not installed (the README's walk-through uses it; apt-get install jq)")
    curl_block, totp_block = readme_block("curl-walkthrough"), readme_block("totp-walkthrough")
    walk = run_walkthrough(make_run, curl_block + totp_block, tmp_path)
    assert walk.returncode == 0, f"the walk-through failed ({walk.returncode}):\n{walk.stderr}\n{walk.stdout}"
    curl_calls = len(re.findall(r"(?<![\w/-])curl ", curl_block))
    assert assert_as_documented(curl_block, walk.calls[:curl_calls]) >= 5
    assert assert_as_documented(totp_block, walk.calls[curl_calls:]) >= 3

    # The curl walk-through: signup, login, a valid token, a refreshed pair, logout, the token revoked.
    (signup,) = walk.to("/signup")
    assert signup.status == 201 and signup.body["user"]["email"] == "ann@example.com"
    login, *_ = walk.to("/login")
    assert login.status == 200 and login.body["token_type"] == "Bearer"
    (refresh,) = walk.to("/refresh")
    assert refresh.status == 200 and refresh.data()["refresh_token"] == login.body["refresh_token"]
    assert refresh.body["access_token"] != login.body["access_token"]
    valid, revoked, *after_mfa = walk.to("/checkToken")
    assert valid.data()["token"] == login.body["access_token"]
    assert valid.body["valid"] is True and valid.body["user_id"] == signup.body["user_id"]
    (logout,) = walk.to("/logout")
    assert logout.status == 200 and f"Authorization: Bearer {refresh.body['access_token']}" in logout.argv
    assert revoked.data()["token"] == refresh.body["access_token"]
    assert revoked.body == {"success": True, "valid": False, "reason": "revoked"}

    # The TOTP continuation: enrol, confirm, a two-step login, a token that says so.
    (enrol,) = walk.to("/me/mfa/totp")
    (confirm,) = walk.to("/me/mfa/totp/confirm")
    assert enrol.status == 200 and confirm.status == 200 and len(confirm.body["recovery_codes"]) == 10
    first_step = walk.to("/login")[-1]
    assert first_step.status == 401 and first_step.body["code"] == "mfa_required"
    (second_step,) = walk.to("/login/mfa")
    assert second_step.status == 200 and second_step.data()["mfa_token"] == first_step.body["mfa_token"]
    (checked,) = after_mfa
    assert checked.body["valid"] is True and checked.body["amr"] == ["pwd", "otp"]
    # What the last command printed is what the README shows it prints.
    assert json_documents(walk.stdout)[-1] == json.loads(totp_block.rstrip().splitlines()[-1].lstrip("# "))

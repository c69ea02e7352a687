"""Users from an existing service (app/services/imports.py), through `flask users import` / `export`
and the real HTTP API, on every database backend.

tests/data/moving-in.jsonl holds a user of each hash format as its library made it; its
passwords are tests/data/make_moving_in.PASSWORDS.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from flask_migrate import upgrade
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditEvent, Session, User
from app.services import passwords
from tests.api.test_recovery import reset, reset_token
from tests.conftest import make_test_app
from tests.data.make_moving_in import FILE, NO_HASH, PASSWORDS
from tests.databases import BACKENDS
from tests.helpers import PASSWORD, assert_problem

RECORDS = len(FILE.read_text(encoding="utf-8").splitlines())


def run(runner, *args: str, input: str | bytes | None = None):
    """`flask users …` through the app's CLI."""
    return runner.invoke(args=["users", *args], input=input)


def counts(result) -> dict[str, int]:
    """The summary lines (`users.imported 3`) of a run."""
    pairs = (line.split() for line in result.stdout.splitlines() if line.startswith("users."))
    return {name: int(value) for name, value in pairs}


def summary(imported=0, updated=0, skipped=0, failed=0) -> dict[str, int]:
    """The expected summary."""
    return {"users.imported": imported, "users.updated": updated, "users.skipped": skipped, "users.failed": failed}


def write_lines(tmp_path, *records, name="users.jsonl"):
    """A JSON Lines file of the records (strings are written as they are)."""
    path = tmp_path / name
    text = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")
    return path


def rows(app) -> dict[str, dict]:
    """Every user row by email, every column."""
    with app.app_context():
        users = db.session.scalars(select(User)).all()
        return {u.email: {a.key: getattr(u, a.key) for a in User.__mapper__.column_attrs} for u in users}


def stored_hash(app, email: str) -> str:
    """The stored password hash of `email`."""
    return rows(app)[email]["password_hash"]


def audit_events(app, event: str) -> list[AuditEvent]:
    """The audit events of one kind, oldest first."""
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)).all()
        db.session.expunge_all()
        return list(events)


def event_count(app) -> int:
    """How many audit events there are."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuditEvent))


def login(client, email: str, password: str):
    """POST /login."""
    return client.post("/login", json={"email": email, "password": password})


# --- the import, then the first login --------------------------------------------------------


def test_each_imported_format_logs_in_with_its_original_password_and_becomes_argon2id(app, client, runner):
    result = run(runner, "import", str(FILE))
    assert result.exit_code == 0, result.output
    assert counts(result) == summary(imported=RECORDS)
    with app.app_context():
        current = passwords.current_prefix()
    for email, password in PASSWORDS.items():
        before = stored_hash(app, email)
        assert not before.startswith(current)
        if email == "inactive@example.com":
            assert_problem(login(client, email, password), 403, "account_disabled")
            assert stored_hash(app, email) == before  # upgraded only by a login that succeeds
            continue
        assert login(client, email, password).status_code == 200, email
        after = stored_hash(app, email)
        assert after.startswith(current) and after != before, email
        assert login(client, email, password).status_code == 200, email
        assert_problem(login(client, email, password + "!"), 401, "invalid_credentials")


def test_imported_fields_are_normalized_like_signup(app, client, runner):
    assert run(runner, "import", str(FILE)).exit_code == 0
    users = rows(app)
    assert "flask-pbkdf2@example.com" in users and "jürgen@xn--bcher-kva.example" in users
    flask = users["flask-pbkdf2@example.com"]
    assert (flask["username"], flask["username_key"], flask["name"]) == ("flask_pbkdf2", "flask_pbkdf2", "Flask PBKDF2")
    assert flask["created_at"].isoformat() == "2019-03-04T05:06:07+00:00"
    assert users["fastapi-bcrypt@example.com"]["created_at"].isoformat() == "2021-06-07T06:09:10.123456+00:00"
    assert users["fastapi-bcrypt@example.com"]["email_verified"] is True
    assert users["django-admin@example.com"]["role"] == "admin"
    assert users["inactive@example.com"]["is_active"] is False
    assert users["php-bcrypt-2y@example.com"]["name"] == "php-bcrypt-2y"  # the local part, as create-admin does
    defaults = users["php-bcrypt-2y@example.com"]
    assert (defaults["role"], defaults["is_active"], defaults["email_verified"], defaults["mfa_enabled"]) == (
        "user", True, False, False)  # fmt: skip
    # Logins by username go through the same key as for signed-up users.
    response = client.post(
        "/login", json={"username": "FLASK_PBKDF2", "password": PASSWORDS["flask-pbkdf2@example.com"]}
    )
    assert response.status_code == 200
    assert response.get_json()["user"]["email"] == "flask-pbkdf2@example.com"


def test_a_typed_ligature_password_logs_in_and_then_its_normal_form_too(app, client, runner):
    assert run(runner, "import", str(FILE)).exit_code == 0
    assert login(client, "ligature@example.com", "fish and chips forever").status_code == 401
    assert login(client, "ligature@example.com", PASSWORDS["ligature@example.com"]).status_code == 200
    assert login(client, "ligature@example.com", "fish and chips forever").status_code == 200  # now NFKC-hashed


def test_a_user_without_a_hash_must_reset_and_then_logs_in(mail_app, smtp_server):
    client, runner = mail_app.test_client(), mail_app.test_cli_runner()
    assert run(runner, "import", str(FILE)).exit_code == 0
    assert stored_hash(mail_app, NO_HASH).startswith("!")
    for password in (PASSWORD, "", stored_hash(mail_app, NO_HASH)[1:]):
        response = login(client, NO_HASH, password or "x")
        assert_problem(response, 401, "invalid_credentials")
    token = reset_token(mail_app, client, smtp_server, NO_HASH)
    assert reset(client, token, "a brand new passphrase 42").status_code == 200
    assert login(client, NO_HASH, "a brand new passphrase 42").status_code == 200


def test_a_null_name_is_the_emails_local_part(app, runner, tmp_path):
    path = write_lines(tmp_path, {"email": "Nameless.One@example.com", "name": None})
    assert counts(run(runner, "import", str(path))) == summary(imported=1)
    assert rows(app)["nameless.one@example.com"]["name"] == "nameless.one"


def test_a_django_unusable_password_imports_as_must_reset(app, runner, tmp_path):
    path = write_lines(tmp_path, {"email": "social@example.com", "password_hash": "!vI4oZz1Xc0sAbCdEfGhIjKlMnOp"})
    assert run(runner, "import", str(path)).exit_code == 0
    stored = stored_hash(app, "social@example.com")
    assert stored.startswith("!") and stored != "!vI4oZz1Xc0sAbCdEfGhIjKlMnOp"


# --- bad lines -------------------------------------------------------------------------------


BAD_LINES = [
    ({"email": "not an email"}, "validation_error", "email"),
    ({"email": "x@example.com", "id": "5"}, "validation_error", "id"),
    ({"name": "No Email"}, "validation_error", "email"),
    ({"email": "x@example.com", "username": "admin"}, "username_reserved", "username"),
    ({"email": "x@example.com", "username": "аdmin"}, "validation_error", "username"),  # Cyrillic а
    ({"email": "x@example.com", "username": "a b"}, "validation_error", "username"),
    ({"email": "x@example.com", "name": "Nul\u0000Byte"}, "validation_error", "name"),
    ({"email": "x@example.com", "name": ""}, "validation_error", "name"),
    ({"email": "x@example.com", "role": "root"}, "validation_error", "role"),
    ({"email": "x@example.com", "is_active": "yes"}, "validation_error", "is_active"),
    ({"email": "x@example.com", "email_verified": 1}, "validation_error", "email_verified"),
    ({"email": "x@example.com", "created_at": "2020-01-02T03:04:05"}, "validation_error", "created_at"),
    ({"email": "x@example.com", "created_at": "2999-01-01T00:00:00Z"}, "validation_error", "created_at"),
    ({"email": "x@example.com", "password_hash": "md5$abc$def"}, "unsupported_hash", "password_hash"),
    ({"email": "x@example.com", "password_hash": "$2b$12$tooshort"}, "unsupported_hash", "password_hash"),
    ({"email": "x@example.com", "password_hash": 5}, "validation_error", "password_hash"),
    ("not json", "invalid_json", "line"),
    ('["a list"]', "invalid_json", "line"),
    ('{"email": "x@example.com",', "invalid_json", "line"),
]


@pytest.mark.parametrize("bad, code, field", BAD_LINES, ids=[f"{code}-{field}-{i}" for i, (_, code, field) in
                                                             enumerate(BAD_LINES)])  # fmt: skip
def test_a_bad_line_is_reported_with_its_number_and_imports_nothing_of_it(app, runner, tmp_path, bad, code, field):
    path = write_lines(tmp_path, {"email": "first@example.com"}, bad, {"email": "third@example.com"})
    result = run(runner, "import", str(path))
    assert result.exit_code == 1, result.output
    assert counts(result) == summary(imported=2, failed=1)
    (problem,) = result.stderr.splitlines()
    assert problem.startswith(f"line 2: {code}: {field}: "), problem
    assert set(rows(app)) == {"first@example.com", "third@example.com"}


def test_problems_are_reported_in_line_order_and_never_repeat_a_hash(app, runner, tmp_path):
    secret = "pbkdf2:sha256:1000$salt$" + "ab" * 32 + "zz"
    records = [{"email": "a@example.com"}, "oops", {"email": "A@example.com"}, {"email": "b@example.com",
               "password_hash": secret}, {"email": "c@example.com", "username": "root"}]  # fmt: skip
    result = run(runner, "import", str(write_lines(tmp_path, *records)), "--batch-size", "2")
    numbers = [int(line.split(":")[0].removeprefix("line ")) for line in result.stderr.splitlines()]
    assert numbers == [2, 3, 4, 5], result.stderr
    assert secret not in result.output
    assert counts(result) == summary(imported=1, failed=4)


def test_blank_lines_are_ignored_and_a_byte_order_mark_is_not_an_error(app, runner, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"email": "a@example.com"}\n\n   \n{"email": "b@example.com"}\n')
    result = run(runner, "import", str(path))
    assert counts(result) == summary(imported=2)


# --- dry run, conflicts, reruns ----------------------------------------------------------------


def test_a_dry_run_reports_what_an_import_would_do_and_changes_nothing(app, runner, tmp_path, user):
    path = write_lines(tmp_path, *[json.loads(line) for line in FILE.read_text("utf-8").splitlines()],
                       {"email": user["user"]["email"]}, {"email": "Flask-pbkdf2@example.com"}, "bad")  # fmt: skip
    before_rows, before_events = rows(app), event_count(app)
    dry = run(runner, "import", str(path), "--dry-run", "--on-conflict", "skip")
    assert rows(app) == before_rows
    assert event_count(app) == before_events
    assert "nothing was written" in dry.stderr
    real = run(runner, "import", str(path), "--on-conflict", "skip")
    assert counts(dry) == counts(real) == summary(imported=RECORDS, skipped=2, failed=1)
    assert dry.stderr.replace("dry run: nothing was written\n", "") == real.stderr


def test_a_rerun_with_skip_or_update_changes_nothing(app, runner):
    assert counts(run(runner, "import", str(FILE))) == summary(imported=RECORDS)
    first = rows(app)
    events = len(audit_events(app, "user_imported"))
    assert counts(run(runner, "import", str(FILE), "--on-conflict", "skip")) == summary(skipped=RECORDS)
    assert counts(run(runner, "import", str(FILE), "--on-conflict", "update")) == summary(skipped=RECORDS)
    assert rows(app) == first
    assert len(audit_events(app, "user_imported")) == events


def test_on_conflict_fail_fails_each_line_of_an_existing_email(app, runner, tmp_path, user):
    email = user["user"]["email"]
    path = write_lines(tmp_path, {"email": email.upper()}, {"email": "new@example.com"}, {"email": "NEW@example.com"})
    result = run(runner, "import", str(path))
    assert result.exit_code == 1
    assert counts(result) == summary(imported=1, failed=2)
    assert result.stderr.splitlines() == [
        "line 1: email_taken: email: An account with this email already exists.",
        "line 3: email_taken: email: An account with this email already exists.",
    ]


def test_on_conflict_update_changes_only_the_fields_given_and_ends_sessions_on_a_new_hash(app, client, runner,
                                                                                        tmp_path, user):  # fmt: skip
    email = user["user"]["email"]
    from werkzeug.security import generate_password_hash

    new_hash = generate_password_hash("a password from before", method="pbkdf2:sha256:1000")
    path = write_lines(tmp_path, {"email": email, "name": "Renamed", "email_verified": True},
                       {"email": email, "password_hash": new_hash})  # fmt: skip
    result = run(runner, "import", str(path), "--on-conflict", "update")
    assert counts(result) == summary(updated=2), result.output
    row = rows(app)[email]
    assert (row["name"], row["email_verified"], row["role"], row["password_hash"]) == (
        "Renamed",
        True,
        "user",
        new_hash,
    )
    assert client.post("/refresh", json={"refresh_token": user["refresh_token"]}).status_code == 401
    assert login(client, email, PASSWORD).status_code == 401
    assert login(client, email, "a password from before").status_code == 200
    details = [event.details for event in audit_events(app, "user_imported")]
    assert details == [
        {"action": "updated", "line": 1, "fields": ["email_verified", "name"]},
        {"action": "updated", "line": 2, "fields": ["password_hash"], "hash_format": "werkzeug"},
    ]


def test_on_conflict_update_keeps_the_last_active_admin(app, runner, tmp_path, admin):
    email = admin["user"]["email"]
    result = run(runner, "import", str(write_lines(tmp_path, {"email": email, "role": "user"})), "--on-conflict",
                 "update")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("line 1: last_admin: ")
    assert rows(app)[email]["role"] == "admin"


def test_a_username_held_by_another_account_fails_the_line_whatever_the_mode(app, runner, tmp_path, auth):
    auth.signup(email="holder@example.com", username="Taken.Name")
    for mode in ("skip", "update", "fail"):
        path = write_lines(tmp_path, {"email": f"{mode}@example.com", "username": "taken.NAME"},
                           {"email": f"{mode}-2@example.com", "username": f"fresh-{mode}"},
                           {"email": f"{mode}-3@example.com", "username": f"FRESH-{mode}"})  # fmt: skip
        result = run(runner, "import", str(path), "--on-conflict", mode)
        assert counts(result) == summary(imported=1, failed=2), (mode, result.output)
        assert [line.split(": ")[1] for line in result.stderr.splitlines()] == ["username_taken", "username_taken"]


def test_reserved_usernames_need_allow_reserved(app, runner, tmp_path):
    path = write_lines(tmp_path, {"email": "support@example.com", "username": "Support"})
    assert run(runner, "import", str(path)).exit_code == 1
    assert counts(run(runner, "import", str(path), "--allow-reserved")) == summary(imported=1)


def test_the_import_reads_standard_input(app, runner):
    result = run(runner, "import", "-", input=FILE.read_bytes())
    assert result.exit_code == 0, result.output
    assert counts(result) == summary(imported=RECORDS)


def test_the_import_is_audited_per_user_and_as_a_whole(app, runner, tmp_path):
    path = write_lines(tmp_path, *[json.loads(line) for line in FILE.read_text("utf-8").splitlines()], "bad")
    run(runner, "import", str(path))
    per_user = audit_events(app, "user_imported")
    assert len(per_user) == RECORDS
    by_target = {event.target_id: event.details for event in per_user}
    ids = {email: row["id"] for email, row in rows(app).items()}
    assert by_target[ids["django@example.com"]] == {"action": "created", "line": 6, "hash_format": "django"}
    assert by_target[ids[NO_HASH]]["hash_format"] == "none"
    assert {details["hash_format"] for details in by_target.values()} == {"werkzeug", "bcrypt", "django",
                                                                          "argon2id", "none"}  # fmt: skip
    (whole,) = audit_events(app, "users_imported")
    assert whole.details == {"on_conflict": "fail", "imported": RECORDS, "updated": 0, "skipped": 0, "failed": 1}
    assert all(event.actor_id is None for event in [*per_user, whole])
    for event in per_user:
        assert "password_hash" not in json.dumps(event.details)


def test_a_batch_refused_by_the_database_is_retried_line_by_line(app, runner, tmp_path, monkeypatch):
    """An account made between the batch's check and its insert (a signup racing the import)."""
    from app.services import imports

    real_taken = imports.Importer._taken
    calls = {"n": 0}

    def taken_then_signup(self, records):
        calls["n"] += 1
        found = real_taken(self, records)
        if calls["n"] == 1:  # after the check, before the insert: a twin commits
            with app.app_context():
                db.session.add(User(id=uuid.uuid4(), email="b@example.com", name="Twin", password_hash="!x"))
                db.session.commit()
        return found

    monkeypatch.setattr(imports.Importer, "_taken", taken_then_signup)
    path = write_lines(tmp_path, {"email": "a@example.com"}, {"email": "b@example.com"}, {"email": "c@example.com"})
    result = run(runner, "import", str(path))
    assert counts(result) == summary(imported=2, failed=1), result.output
    assert result.stderr.startswith("line 2: email_taken: ")
    assert rows(app)["b@example.com"]["name"] == "Twin"


# --- export --------------------------------------------------------------------------------------


def test_the_export_has_the_import_format_and_hashes_only_when_asked(app, runner, tmp_path):
    assert run(runner, "import", str(FILE)).exit_code == 0
    plain = run(runner, "export")
    assert plain.exit_code == 0, plain.output
    records = [json.loads(line) for line in plain.stdout.splitlines()]
    assert len(records) == RECORDS and plain.stderr.strip() == f"users.exported {RECORDS}"
    assert all("password_hash" not in record for record in records)
    assert set(records[0]) == {"email", "username", "name", "role", "is_active", "email_verified", "created_at"}
    hashed = [json.loads(line) for line in run(runner, "export", "--with-hashes").stdout.splitlines()]
    by_email = {record["email"]: record for record in hashed}
    assert by_email[NO_HASH]["password_hash"] is None
    assert by_email["django@example.com"]["password_hash"].startswith("pbkdf2_sha256$")
    assert [event.details for event in audit_events(app, "users_exported")] == [
        {"count": RECORDS, "with_hashes": False}, {"count": RECORDS, "with_hashes": True}]  # fmt: skip


def test_an_export_file_with_hashes_is_readable_by_its_owner_only(app, runner, tmp_path, user):
    target = tmp_path / "out.jsonl"
    assert run(runner, "export", str(target), "--with-hashes").exit_code == 0
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert json.loads(target.read_text())["password_hash"].startswith("$argon2id$")


@pytest.fixture
def empty_app(backend, tmp_path):
    """An app on a second, freshly migrated database of the same backend."""
    url = BACKENDS[backend].create(str(tmp_path))
    other = make_test_app(url)
    with other.app_context():
        upgrade()
    yield other
    other.extensions["revocations"].stop()
    with other.app_context():
        db.session.remove()
        db.engine.dispose()
    BACKENDS[backend].drop(url)


def test_export_then_import_into_an_empty_database_gives_the_same_users_and_logins(app, runner, empty_app, auth):
    assert run(runner, "import", str(FILE)).exit_code == 0
    native = auth.signup(email="native@example.com", username="native_user", name="Native")
    auth.login(next(iter(PASSWORDS)), PASSWORDS[next(iter(PASSWORDS))])  # one user already upgraded
    exported = run(runner, "export", "--with-hashes").stdout
    other = empty_app.test_cli_runner()
    result = other.invoke(args=["users", "import", "-"], input=exported)
    assert counts(result) == summary(imported=RECORDS + 1), result.output
    assert other.invoke(args=["users", "export", "--with-hashes"]).stdout == exported
    client = empty_app.test_client()
    for email, password in {**PASSWORDS, native["user"]["email"]: PASSWORD}.items():
        expected = 403 if email == "inactive@example.com" else 200
        assert login(client, email, password).status_code == expected, email
    assert login(client, NO_HASH, PASSWORD).status_code == 401


def test_an_export_without_hashes_imports_as_users_who_must_reset(app, runner, empty_app, user):
    exported = run(runner, "export").stdout
    other = empty_app.test_cli_runner()
    assert counts(other.invoke(args=["users", "import", "-"], input=exported)) == summary(imported=1)
    assert stored_hash(empty_app, user["user"]["email"]).startswith("!")


def test_sessions_of_the_source_are_not_exported(app, runner, user):
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Session)) == 1
    exported = run(runner, "export", "--with-hashes").stdout
    assert user["refresh_token"] not in exported and str(user["user_id"]) not in exported


# --- timing ------------------------------------------------------------------------------------


def test_failed_logins_take_as_long_for_unknown_native_and_imported_accounts(make_app, tmp_path):
    """A bcrypt check costs far more than the testing argon2id; every failure lasts as long as it.

    Measured from a fresh app whose first answers are for unknown accounts, before any bcrypt
    hash was checked: the cost is learnt from the database first (passwords.FailureTiming).
    """
    import statistics
    import time

    import bcrypt

    fresh = make_app()
    client = fresh.test_client()
    slow_hash = bcrypt.hashpw(b"imported password", bcrypt.gensalt(rounds=10)).decode()
    path = write_lines(tmp_path, {"email": "imported@example.com", "password_hash": slow_hash})
    assert run(fresh.test_cli_runner(), "import", str(path)).exit_code == 0
    assert (
        client.post("/signup", json={"email": "native@example.com", "password": PASSWORD, "name": "N"}).status_code
        == 201
    )
    started = time.perf_counter()
    bcrypt.checkpw(b"wrong", slow_hash.encode())
    bcrypt_seconds = time.perf_counter() - started
    timings: dict[str, list[float]] = {"unknown@example.com": [], "native@example.com": [], "imported@example.com": []}
    for _ in range(7):
        for email, spent in timings.items():
            started = time.perf_counter()
            assert_problem(login(client, email, "a wrong password"), 401, "invalid_credentials")
            spent.append(time.perf_counter() - started)
    medians = {email: statistics.median(spent) for email, spent in timings.items()}
    imported = medians["imported@example.com"]
    assert medians["unknown@example.com"] > 0.6 * bcrypt_seconds, (medians, bcrypt_seconds)
    # The padding sleeps to the learnt cost while the imported account's bcrypt runs on a CPU
    # that other work may share (seen in CI: 0.16 s padded against 0.25 s of a contended bcrypt),
    # so the bound is loose; without the padding a failure takes a few milliseconds, not 0.5x.
    for email in ("unknown@example.com", "native@example.com"):
        assert 0.5 * imported < medians[email] < 2 * imported, medians
    assert min(timings["unknown@example.com"][:2]) > 0.6 * bcrypt_seconds, timings  # from the very first answer
    # A success is not padded: the native account's login stays as fast as its own hash.
    started = time.perf_counter()
    assert login(client, "native@example.com", PASSWORD).status_code == 200
    assert time.perf_counter() - started < 0.6 * imported


def test_an_import_into_a_running_service_is_padded_from_its_next_sample_until_every_hash_is_upgraded(
    make_app, tmp_path, monkeypatch
):
    import time

    import bcrypt

    monkeypatch.setattr(passwords.FailureTiming, "RESAMPLE_SECONDS", 0.3)
    running = make_app()
    client = running.test_client()

    def failure_seconds() -> float:
        started = time.perf_counter()
        assert login(client, "unknown@example.com", "a wrong password").status_code == 401
        return time.perf_counter() - started

    baseline = min(failure_seconds() for _ in range(3))  # the service knows only its own argon2id
    slow_hash = bcrypt.hashpw(b"imported password", bcrypt.gensalt(rounds=10)).decode()
    path = write_lines(tmp_path, {"email": "imported@example.com", "password_hash": slow_hash})
    assert run(running.test_cli_runner(), "import", str(path)).exit_code == 0
    started = time.perf_counter()
    bcrypt.checkpw(b"wrong", slow_hash.encode())
    bcrypt_seconds = time.perf_counter() - started
    assert bcrypt_seconds > 3 * baseline, (bcrypt_seconds, baseline)  # else this test proves nothing
    time.sleep(0.4)
    assert min(failure_seconds() for _ in range(3)) > 0.6 * bcrypt_seconds  # the very next answers
    assert login(client, "imported@example.com", "imported password").status_code == 200  # upgraded
    time.sleep(0.4)
    failure_seconds()  # the sample that finds no bcrypt hash left
    time.sleep(0.4)
    failure_seconds()  # and the one after it: nothing checked bcrypt since, so its cost is forgotten
    assert min(failure_seconds() for _ in range(3)) < 0.5 * bcrypt_seconds

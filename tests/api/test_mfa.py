"""The second factor over HTTP: enrolment, the two-step login, amr, removal, throttling, no leaks."""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest
from sqlalchemy import event, select, update

from app.extensions import db
from app.models import AuditEvent, MfaChallenge, RecoveryCode, TotpCredential, utcnow
from app.services import mfa, throttle
from tests.helpers import PASSWORD, USER_FIELDS, assert_ok, assert_problem, bearer, check_token

T0 = 1_800_000_000  # a step boundary (divisible by 30)
NEW_PASSWORD = "a wholly different passphrase"


@pytest.fixture
def frozen_throttle(monkeypatch):
    """The throttle's clock stands still, so a delay it starts is still running at the next request."""
    now = utcnow()
    monkeypatch.setattr(throttle, "utcnow", lambda: now)


@pytest.fixture
def clock(monkeypatch):
    """The time TOTP codes are judged at, set by the test (seconds since the epoch)."""
    now = {"t": float(T0)}
    monkeypatch.setattr(mfa, "clock", lambda: now["t"])
    return now


def code_at(secret: str, t: float) -> str:
    """The code an authenticator app shows at `t`."""
    return pyotp.TOTP(secret).at(t)


def enrol(client, access_token: str) -> dict:
    """Start an enrolment; the 200 body."""
    return assert_ok(client.post("/me/mfa/totp", json={"password": PASSWORD}, headers=bearer(access_token)))


def enable(client, user: dict, clock) -> tuple[str, list[str]]:
    """Turn MFA on for `user` (a signup body) at the clock's time; return (secret, recovery codes)."""
    secret = enrol(client, user["access_token"])["secret"]
    body = assert_ok(
        client.post(
            "/me/mfa/totp/confirm", json={"code": code_at(secret, clock["t"])}, headers=bearer(user["access_token"])
        )
    )
    return secret, body["recovery_codes"]


def mfa_token(client, email: str, password: str = PASSWORD) -> str:
    """The mfa_token of a password login to an account with MFA (asserting the 401 mfa_required)."""
    body = assert_problem(client.post("/login", json={"email": email, "password": password}), 401, "mfa_required")
    return body["mfa_token"]


def finish(client, token: str, **factor):
    """POST /login/mfa."""
    return client.post("/login/mfa", json={"mfa_token": token, **factor})


def next_step(clock) -> None:
    """Move the clock to the next 30-second step (a code is accepted at most once)."""
    clock["t"] += 30


def events(app, name: str) -> list[AuditEvent]:
    """The audit events of this name."""
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent).where(AuditEvent.event == name)).all())


# --- enrolment -----------------------------------------------------------------------------


def test_enrol_answers_secret_uri_and_qr_but_mfa_stays_off(client, user):
    body = enrol(client, user["access_token"])
    secret = body["secret"]
    assert len(base64.b32decode(secret)) == 20  # 160 bits
    uri = urlparse(body["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/auth-service:{user['user']['email']}"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret] and query["issuer"] == ["auth-service"]
    assert body["qr_svg"].startswith("<svg") and body["qr_svg"].rstrip().endswith("</svg>")
    me = assert_ok(client.get("/me", headers=bearer(user["access_token"])))["user"]
    assert set(me) == USER_FIELDS and me["mfa_enabled"] is False
    assert secret not in str(me)


def test_enrol_needs_the_password(client, user):
    response = client.post("/me/mfa/totp", json={"password": "wrong password!"}, headers=bearer(user["access_token"]))
    assert_problem(response, 401, "invalid_credentials")


def test_confirm_turns_mfa_on_with_ten_recovery_codes(app, client, user, clock):
    secret, codes = enable(client, user, clock)
    assert len(codes) == 10 and len(set(codes)) == 10
    me = assert_ok(client.get("/me", headers=bearer(user["access_token"])))["user"]
    assert me["mfa_enabled"] is True
    assert [e.event for e in events(app, "mfa_enabled")] == ["mfa_enabled"]
    assert len(events(app, "mfa_enrolment_started")) == 1
    # Stored hashed: neither a whole code nor its secret part is in the table.
    with app.app_context():
        stored = db.session.scalars(select(RecoveryCode)).all()
        assert len(stored) == 10
        for row in stored:
            assert row.secret_hash.startswith("$argon2id$")
        assert db.session.scalar(select(TotpCredential.secret)) != secret


def test_confirm_with_a_wrong_code_is_400_and_mfa_stays_off(client, user, clock):
    secret = enrol(client, user["access_token"])["secret"]
    wrong = code_at(secret, clock["t"] + 300)
    response = client.post("/me/mfa/totp/confirm", json={"code": wrong}, headers=bearer(user["access_token"]))
    assert_problem(response, 400, "invalid_mfa_code")
    assert assert_ok(client.get("/me", headers=bearer(user["access_token"])))["user"]["mfa_enabled"] is False


def test_confirm_without_enrolment_is_409_mfa_not_pending(client, user):
    response = client.post("/me/mfa/totp/confirm", json={"code": "123456"}, headers=bearer(user["access_token"]))
    assert_problem(response, 409, "mfa_not_pending")


def test_enrol_when_enabled_is_409(client, user, clock):
    enable(client, user, clock)
    response = client.post("/me/mfa/totp", json={"password": PASSWORD}, headers=bearer(user["access_token"]))
    assert_problem(response, 409, "mfa_already_enabled")
    response = client.post("/me/mfa/totp/confirm", json={"code": "123456"}, headers=bearer(user["access_token"]))
    assert_problem(response, 409, "mfa_already_enabled")


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", 123456, ""])
def test_malformed_codes_are_validation_errors(client, user, code):
    response = client.post("/me/mfa/totp/confirm", json={"code": code}, headers=bearer(user["access_token"]))
    assert_problem(response, 400, "validation_error")


# --- the two-step login and amr ------------------------------------------------------------


def test_login_with_mfa_is_two_steps_and_tokens_say_otp(client, user, clock):
    secret, _ = enable(client, user, clock)
    email = user["user"]["email"]
    response = client.post("/login", json={"email": email, "password": PASSWORD})
    body = assert_problem(response, 401, "mfa_required")
    assert body["mfa_methods"] == ["totp", "recovery_code"]
    assert isinstance(body["mfa_token"], str) and len(body["mfa_token"]) >= 40
    assert "access_token" not in body and "refresh_token" not in body
    next_step(clock)
    done = assert_ok(finish(client, body["mfa_token"], code=code_at(secret, clock["t"])))
    assert {"access_token", "refresh_token", "token_type", "expires_in", "user"} <= set(done)
    assert done["user"]["mfa_enabled"] is True
    answer = check_token(client, done["access_token"])
    assert answer["valid"] is True and answer["amr"] == ["pwd", "otp"]
    validated = client.get("/validate", headers=bearer(done["access_token"]))
    assert validated.status_code == 200 and validated.headers["X-User-Amr"] == "pwd,otp"


@pytest.mark.parametrize("hot_path", ["true", "false"])
def test_password_only_tokens_say_pwd(make_app, hot_path):
    client = make_app(HOT_PATH=hot_path).test_client()
    signup = client.post("/signup", json={"email": "pat@example.com", "password": PASSWORD, "name": "Pat"})
    assert check_token(client, signup.get_json()["access_token"])["amr"] == ["pwd"]
    login = assert_ok(client.post("/login", json={"email": "pat@example.com", "password": PASSWORD}))
    assert check_token(client, login["access_token"])["amr"] == ["pwd"]
    assert client.get("/validate", headers=bearer(login["access_token"])).headers["X-User-Amr"] == "pwd"


def test_refresh_keeps_the_sessions_amr(client, user, clock):
    secret, _ = enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    next_step(clock)
    done = assert_ok(finish(client, token, code=code_at(secret, clock["t"])))
    refreshed = assert_ok(client.post("/refresh", json={"refresh_token": done["refresh_token"]}))
    again = assert_ok(client.post("/refresh", json={"refresh_token": refreshed["refresh_token"]}))
    assert check_token(client, again["access_token"])["amr"] == ["pwd", "otp"]
    plain = assert_ok(client.post("/refresh", json={"refresh_token": user["refresh_token"]}))
    assert check_token(client, plain["access_token"])["amr"] == ["pwd"]


def test_login_mfa_with_a_wrong_code_is_400(client, user, clock):
    secret, _ = enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    response = finish(client, token, code=code_at(secret, clock["t"] + 120))
    assert_problem(response, 400, "invalid_mfa_code")
    # The challenge survives a wrong code (the throttle bounds the guesses).
    next_step(clock)
    assert_ok(finish(client, token, code=code_at(secret, clock["t"])))


def test_a_code_is_accepted_only_once(client, user, clock):
    secret, _ = enable(client, user, clock)
    next_step(clock)
    code = code_at(secret, clock["t"])
    assert_ok(finish(client, mfa_token(client, user["user"]["email"]), code=code))
    assert_problem(finish(client, mfa_token(client, user["user"]["email"]), code=code), 400, "invalid_mfa_code")
    # Nor the code of the step before (still inside the window) once a later one was taken.
    earlier = code_at(secret, clock["t"] - 30)
    assert_problem(finish(client, mfa_token(client, user["user"]["email"]), code=earlier), 400, "invalid_mfa_code")
    assert [e.details["reason"] for e in events(client.application, "mfa_failed")] == ["replayed_code"] * 2


def test_a_code_used_on_one_instance_is_refused_on_another(client, make_app, user, clock):
    secret, _ = enable(client, user, clock)
    other = make_app().test_client()  # another instance: its own process state, the same database
    next_step(clock)
    code = code_at(secret, clock["t"])
    assert_ok(finish(client, mfa_token(client, user["user"]["email"]), code=code))
    response = finish(other, mfa_token(other, user["user"]["email"]), code=code)
    assert_problem(response, 400, "invalid_mfa_code")


def test_codes_of_the_neighbouring_steps_work_two_away_do_not(client, user, clock):
    secret, _ = enable(client, user, clock)
    email = user["user"]["email"]
    clock["t"] += 300
    for offset in (-60, 60):
        assert_problem(
            finish(client, mfa_token(client, email), code=code_at(secret, clock["t"] + offset)), 400, "invalid_mfa_code"
        )
    assert_ok(finish(client, mfa_token(client, email), code=code_at(secret, clock["t"] - 30)))
    assert_ok(finish(client, mfa_token(client, email), code=code_at(secret, clock["t"] + 30)))


def test_recovery_code_logs_in_once(app, client, user, clock):
    _, codes = enable(client, user, clock)
    email = user["user"]["email"]
    done = assert_ok(finish(client, mfa_token(client, email), recovery_code=codes[3].upper()))
    assert check_token(client, done["access_token"])["amr"] == ["pwd", "otp"]
    assert len(events(app, "recovery_code_used")) == 1
    login = [e for e in events(app, "login_succeeded") if (e.details or {}).get("second_factor")]
    assert [e.details["second_factor"] for e in login] == ["recovery_code"]
    response = finish(client, mfa_token(client, email), recovery_code=codes[3])
    assert_problem(response, 400, "invalid_mfa_code")
    assert_ok(finish(client, mfa_token(client, email), recovery_code=codes[4].replace("-", "")))


@pytest.mark.parametrize("guess", ["aaaa-bbbb-cccc-dddd", "x", "-" * 20])
def test_wrong_recovery_codes_are_400(client, user, clock, guess):
    _, codes = enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    assert_problem(finish(client, token, recovery_code=guess), 400, "invalid_mfa_code")
    # A real lookup id with a wrong secret part.
    assert_problem(finish(client, token, recovery_code=codes[0][:5] + "aaaa-aaaa-aaaa"), 400, "invalid_mfa_code")


def test_login_mfa_needs_exactly_one_factor(client, user, clock):
    secret, codes = enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    assert_problem(finish(client, token), 400, "validation_error")
    both = finish(client, token, code=code_at(secret, clock["t"]), recovery_code=codes[0])
    assert_problem(both, 400, "validation_error")


# --- the mfa_token -------------------------------------------------------------------------


def test_mfa_token_works_once(client, user, clock):
    secret, codes = enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    assert_ok(finish(client, token, recovery_code=codes[0]))
    next_step(clock)
    assert_problem(finish(client, token, code=code_at(secret, clock["t"])), 401, "invalid_mfa_token")


def test_mfa_token_expires_after_five_minutes(app, client, user, clock):
    _, codes = enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    with app.app_context():
        row = db.session.scalars(select(MfaChallenge)).one()
        assert timedelta(minutes=4, seconds=50) < row.expires_at - row.created_at <= timedelta(minutes=5)
        db.session.execute(update(MfaChallenge).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert_problem(finish(client, token, recovery_code=codes[0]), 401, "invalid_mfa_token")


def test_mfa_token_dies_with_a_password_change(client, user, clock):
    _, codes = enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    changed = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    assert_ok(changed)
    assert_problem(finish(client, token, recovery_code=codes[0]), 401, "invalid_mfa_token")
    assert_ok(finish(client, mfa_token(client, user["user"]["email"], NEW_PASSWORD), recovery_code=codes[0]))


@pytest.mark.parametrize("token", ["", "x" * 129])
def test_malformed_mfa_token_is_a_validation_error(client, token):
    assert_problem(client.post("/login/mfa", json={"mfa_token": token, "code": "123456"}), 400, "validation_error")


def test_unknown_mfa_token_is_401(client):
    assert_problem(finish(client, "no-such-token", code="123456"), 401, "invalid_mfa_token")


def test_mfa_token_opens_nothing_else(client, user, clock):
    enable(client, user, clock)
    token = mfa_token(client, user["user"]["email"])
    assert client.get("/me", headers=bearer(token)).status_code == 401
    assert check_token(client, token) == {"success": True, "valid": False, "reason": "invalid"}
    assert client.get("/validate", headers=bearer(token)).status_code == 401
    assert client.post("/refresh", json={"refresh_token": token}).status_code == 401


# --- turning it off, new recovery codes, admins --------------------------------------------


def test_disable_with_password_and_code(app, client, user, clock):
    secret, _ = enable(client, user, clock)
    headers = bearer(user["access_token"])
    next_step(clock)
    wrong = client.delete(
        "/me/mfa", json={"password": "not the password", "code": code_at(secret, clock["t"])}, headers=headers
    )
    assert_problem(wrong, 401, "invalid_credentials")
    bad_code = client.delete(
        "/me/mfa", json={"password": PASSWORD, "code": code_at(secret, clock["t"] + 90)}, headers=headers
    )
    assert_problem(bad_code, 400, "invalid_mfa_code")
    assert_ok(
        client.delete("/me/mfa", json={"password": PASSWORD, "code": code_at(secret, clock["t"])}, headers=headers)
    )
    assert assert_ok(client.get("/me", headers=headers))["user"]["mfa_enabled"] is False
    assert len(events(app, "mfa_disabled")) == 1
    assert_ok(client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}))
    assert_problem(
        client.delete("/me/mfa", json={"password": PASSWORD, "code": "123456"}, headers=headers), 409, "mfa_not_enabled"
    )
    with app.app_context():
        assert db.session.scalars(select(RecoveryCode)).all() == []
        assert db.session.scalars(select(TotpCredential)).all() == []


def test_disable_with_a_recovery_code(client, user, clock):
    _, codes = enable(client, user, clock)
    body = {"password": PASSWORD, "recovery_code": codes[9]}
    assert_ok(client.delete("/me/mfa", json=body, headers=bearer(user["access_token"])))


def test_regenerated_recovery_codes_void_the_old_ones(app, client, user, clock):
    secret, old = enable(client, user, clock)
    next_step(clock)
    body = {"password": PASSWORD, "code": code_at(secret, clock["t"])}
    new = assert_ok(client.post("/me/mfa/recovery-codes", json=body, headers=bearer(user["access_token"])))[
        "recovery_codes"
    ]
    assert len(new) == 10 and not set(new) & set(old)
    assert len(events(app, "recovery_codes_regenerated")) == 1
    email = user["user"]["email"]
    assert_problem(finish(client, mfa_token(client, email), recovery_code=old[0]), 400, "invalid_mfa_code")
    assert_ok(finish(client, mfa_token(client, email), recovery_code=new[0]))


def test_regenerate_needs_a_code(client, user, clock):
    enable(client, user, clock)
    body = {"password": PASSWORD, "code": "000000"}
    assert_problem(
        client.post("/me/mfa/recovery-codes", json=body, headers=bearer(user["access_token"])), 400, "invalid_mfa_code"
    )


def test_admin_removes_a_users_mfa(app, client, auth, user, clock):
    enable(client, user, clock)
    admin = auth.make_admin()
    user_id = user["user_id"]
    assert_problem(client.delete(f"/users/{user_id}/mfa", headers=bearer(user["access_token"])), 403, "forbidden")
    assert_ok(client.delete(f"/users/{user_id}/mfa", headers=bearer(admin["access_token"])))
    (removed,) = events(app, "mfa_removed_by_admin")
    assert (str(removed.actor_id), str(removed.target_id)) == (admin["user"]["id"], user_id)
    assert_ok(client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}))
    assert_problem(
        client.delete(f"/users/{user_id}/mfa", headers=bearer(admin["access_token"])), 409, "mfa_not_enabled"
    )
    assert_problem(client.delete(f"/users/{uuid.uuid4()}/mfa", headers=bearer(admin["access_token"])), 404, "not_found")
    own = client.delete(f"/users/{admin['user']['id']}/mfa", headers=bearer(admin["access_token"]))
    assert_problem(own, 403, "forbidden")


# --- throttling ----------------------------------------------------------------------------


def test_wrong_codes_count_against_the_account_throttle(make_app, clock, frozen_throttle):
    client = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="3").test_client()
    user = assert_ok(client.post("/signup", json={"email": "tom@example.com", "password": PASSWORD, "name": "T"}), 201)
    secret, _ = enable(client, user, clock)
    token = mfa_token(client, "tom@example.com")  # the password half of the login: attempt 1, not yet settled
    wrong = code_at(secret, clock["t"] + 600)
    assert_problem(finish(client, token, code=wrong), 400, "invalid_mfa_code")  # attempt 2
    assert_problem(finish(client, token, code=wrong), 400, "invalid_mfa_code")  # attempt 3: the delay starts
    response = finish(client, token, code=code_at(secret, clock["t"] + 30))
    body = assert_problem(response, 429, "too_many_attempts")
    assert int(response.headers["Retry-After"]) >= 1 and "mfa_token" not in body


def test_a_known_password_does_not_reset_the_code_throttle(make_app, clock, frozen_throttle):
    """Re-entering the right password between code guesses must not clear the count."""
    client = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="4").test_client()
    user = assert_ok(client.post("/signup", json={"email": "kim@example.com", "password": PASSWORD, "name": "K"}), 201)
    secret, _ = enable(client, user, clock)
    wrong = code_at(secret, clock["t"] + 600)
    assert_problem(finish(client, mfa_token(client, "kim@example.com"), code=wrong), 400, "invalid_mfa_code")
    assert_problem(finish(client, mfa_token(client, "kim@example.com"), code=wrong), 400, "invalid_mfa_code")
    assert_problem(
        client.post("/login", json={"email": "kim@example.com", "password": PASSWORD}), 429, "too_many_attempts"
    )
    # The same holds for the endpoints that take the password and a code together.
    headers = bearer(user["access_token"])
    body = {"password": PASSWORD, "code": wrong}
    assert_problem(client.post("/me/mfa/recovery-codes", json=body, headers=headers), 429, "too_many_attempts")


@pytest.mark.parametrize(("method", "path"), [("post", "/me/mfa/recovery-codes"), ("delete", "/me/mfa")])
def test_wrong_codes_with_the_right_password_are_throttled(make_app, clock, frozen_throttle, method, path):
    """The right password in the same request must not settle the attempt its wrong code made."""
    client = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="3").test_client()
    user = assert_ok(client.post("/signup", json={"email": "ray@example.com", "password": PASSWORD, "name": "R"}), 201)
    secret, _ = enable(client, user, clock)
    body = {"password": PASSWORD, "code": code_at(secret, clock["t"] + 600)}
    send = getattr(client, method)
    for _ in range(3):
        assert_problem(send(path, json=body, headers=bearer(user["access_token"])), 400, "invalid_mfa_code")
    assert_problem(send(path, json=body, headers=bearer(user["access_token"])), 429, "too_many_attempts")


def test_a_completed_login_clears_the_count(make_app, clock):
    client = make_app(LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES="3").test_client()
    user = assert_ok(client.post("/signup", json={"email": "lou@example.com", "password": PASSWORD, "name": "L"}), 201)
    secret, _ = enable(client, user, clock)
    for _ in range(4):
        next_step(clock)
        assert_ok(finish(client, mfa_token(client, "lou@example.com"), code=code_at(secret, clock["t"])))


def test_wrong_codes_spend_the_per_ip_failure_budget_and_mfa_required_does_not(make_app, clock):
    client = make_app(RATELIMIT_ENABLED="true", RATELIMIT_LOGIN_FAILURES="3/minute").test_client()
    user = assert_ok(client.post("/signup", json={"email": "ida@example.com", "password": PASSWORD, "name": "I"}), 201)
    secret, _ = enable(client, user, clock)
    tokens = [mfa_token(client, "ida@example.com") for _ in range(4)]  # four 401 mfa_required: no failures
    wrong = code_at(secret, clock["t"] + 600)
    for token in tokens[:3]:
        assert_problem(finish(client, token, code=wrong), 400, "invalid_mfa_code")
    assert_problem(finish(client, tokens[3], code=wrong), 429, "rate_limited")


# --- no secret anywhere it should not be ---------------------------------------------------


def test_no_secret_or_code_in_logs_responses_or_audit(app, client, user, clock, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    enrolment = enrol(client, user["access_token"])
    secret = enrolment["secret"]
    first = code_at(secret, clock["t"])
    confirm = client.post("/me/mfa/totp/confirm", json={"code": first}, headers=bearer(user["access_token"]))
    codes = assert_ok(confirm)["recovery_codes"]
    assert secret not in confirm.get_data(as_text=True)
    login = client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD})
    token = login.get_json()["mfa_token"]
    next_step(clock)
    second = code_at(secret, clock["t"])
    done = finish(client, token, code=second)
    assert_ok(done)
    finish(client, mfa_token(client, user["user"]["email"]), recovery_code=codes[0])
    finish(client, mfa_token(client, user["user"]["email"]), code="000000")
    answers = [
        client.get("/me", headers=bearer(user["access_token"])),
        client.get(f"/users/{user['user_id']}", headers=bearer(user["access_token"])),
        done,
    ]
    with app.app_context():
        audit_text = " ".join(str(e.details) for e in db.session.scalars(select(AuditEvent)))
    captured = capfd.readouterr()
    outputs = [caplog.text, captured.out, captured.err, audit_text, *(a.get_data(as_text=True) for a in answers)]
    secrets = [secret, token, *codes, *(c.replace("-", "") for c in codes)]
    # Six digits occur by chance in timestamps and ids: look for the codes as values only.
    secrets += [f"{quote}{code}{quote}" for code in (first, second) for quote in "\"'"]
    for text in outputs:
        for secret_text in secrets:
            assert secret_text not in text


# --- without ENCRYPTION_KEY ----------------------------------------------------------------


def _production(make_app, **overrides):
    """An app as production runs it (no ENCRYPTION_KEY unless given), on the test database."""
    settings = {
        "APP_ENV": "production",
        "JWT_SECRET_KEY": "k" * 48,
        "RATELIMIT_ENABLED": "false",
        "LOGIN_THROTTLE_ENABLED": "false",
        "REVOCATION_CACHE": "false",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "64",
        "ENCRYPTION_KEY": "",
        **overrides,
    }
    return make_app(**settings)


def test_without_encryption_key_enrolment_and_totp_login_are_503(client, make_app, user, clock):
    secret, codes = enable(client, user, clock)
    bare = _production(make_app).test_client()
    other = assert_ok(bare.post("/signup", json={"email": "no@example.com", "password": PASSWORD, "name": "N"}), 201)
    response = bare.post("/me/mfa/totp", json={"password": PASSWORD}, headers=bearer(other["access_token"]))
    body = assert_problem(response, 503, "mfa_unavailable")
    assert response.headers["Retry-After"] and body["request_id"]
    token = mfa_token(bare, user["user"]["email"])
    next_step(clock)
    assert_problem(finish(bare, token, code=code_at(secret, clock["t"])), 503, "mfa_unavailable")
    # Recovery codes are hashes, not encrypted: they still let the user in.
    assert_ok(finish(bare, token, recovery_code=codes[0]))


# --- the login path of accounts without MFA ------------------------------------------------


def test_login_without_mfa_reads_no_mfa_table(app, client, user):
    statements: list[str] = []

    def remember(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        assert_ok(client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}))
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    tables = ("mfa_totp", "mfa_recovery_codes", "mfa_challenges")
    assert statements and not [s for s in statements if any(table in s.lower() for table in tables)]


def test_changes_to_the_second_factor_are_mailed_to_the_user(app, client, auth, user, clock):
    """Turning MFA on and an admin removing it each queue a notice mail (in the change's transaction)."""
    from app.models import OutboxMessage

    def notices() -> list[dict]:
        with app.app_context():
            rows = db.session.scalars(select(OutboxMessage.payload)).all()
        return [row for row in rows if row.get("template") == "mfa_changed"]

    if not app.config["MAIL_URL"]:
        pytest.skip("this app sends no mail")
    enable(client, user, clock)
    assert [n["to"] for n in notices()] == [user["user"]["email"]]
    admin = auth.make_admin()
    assert_ok(client.delete(f"/users/{user['user_id']}/mfa", headers=bearer(admin["access_token"])))
    assert len(notices()) == 2 and "administrator" in notices()[1]["context"]["what"]

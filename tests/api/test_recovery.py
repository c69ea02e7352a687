"""Password recovery and email verification through the real endpoints, mail through a real SMTP server."""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.extensions import db
from app.models import AccountToken, AuditEvent, LoginThrottle, OutboxMessage, User, utcnow
from app.services import recovery, throttle
from tests.helpers import PASSWORD, Auth, assert_ok, assert_problem, bearer, check_token, db_user, login_response
from tests.smtp import deliver, html_of, text_of, token_in

NEW_PASSWORD = "a brand new passphrase 42"


@pytest.fixture
def mail_client(mail_app):
    """A client of the app whose mail goes to the test SMTP server."""
    return mail_app.test_client()


@pytest.fixture
def mail_auth(mail_client):
    """Sign-up and login helpers on that app."""
    return Auth(mail_client)


def forgot(client, email: str):
    """POST /password/forgot."""
    return client.post("/password/forgot", json={"email": email})


def reset_token(app, client, smtp_server, email: str) -> str:
    """Ask for a reset, let the worker run, return the token of the newest mail to `email`."""
    assert forgot(client, email).status_code == 202
    deliver(app)
    mails = [m for m in smtp_server.inbox.messages if m["To"] == email and "password" in m["Subject"].lower()]
    assert mails, [m["Subject"] for m in smtp_server.inbox.messages]
    return token_in(mails[-1])


def reset(client, token: str, password: str = NEW_PASSWORD):
    """POST /password/reset."""
    return client.post("/password/reset", json={"token": token, "new_password": password})


# --- /password/forgot and /password/reset ------------------------------------------------------


def test_forgot_then_reset_changes_the_password_and_ends_every_session(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    email = user["user"]["email"]
    token = reset_token(mail_app, mail_client, smtp_server, email)
    (mail,) = [m for m in smtp_server.inbox.to(email) if m["Subject"] == "Reset your password"]
    assert "1 hour" in text_of(mail) and "https://localhost:8443/reset-password?token=" in html_of(mail)
    body = assert_ok(reset(mail_client, token))
    assert "password" in body["message"].lower()
    # Sessions revoked, old password gone, new one works.
    assert check_token(mail_client, user["access_token"])["valid"] is False
    assert mail_client.post("/refresh", json={"refresh_token": user["refresh_token"]}).status_code == 401
    assert_problem(login_response(mail_client, email), 401, "invalid_credentials")
    mail_auth.login(email, NEW_PASSWORD)
    # A notice, and the link proved the address.
    deliver(mail_app)
    assert [m["Subject"] for m in smtp_server.inbox.to(email)][-1] == "Your password was changed"
    assert db_user(mail_app, user["user_id"])["email_verified"] is True
    with mail_app.app_context():
        events = db.session.scalars(select(AuditEvent.event).where(AuditEvent.target_id == uuid.UUID(user["user_id"])))
        assert {"password_reset_requested", "password_reset_completed"} <= set(events)


def test_a_reset_token_works_once(mail_app, mail_client, mail_auth, smtp_server):
    email = mail_auth.signup()["user"]["email"]
    token = reset_token(mail_app, mail_client, smtp_server, email)
    assert_ok(reset(mail_client, token))
    assert_problem(reset(mail_client, token, "yet another passphrase 7"), 400, "invalid_reset_token")


def test_a_reset_token_expires(mail_app, mail_client, mail_auth, smtp_server):
    email = mail_auth.signup()["user"]["email"]
    token = reset_token(mail_app, mail_client, smtp_server, email)
    with mail_app.app_context():
        db.session.execute(update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert_problem(reset(mail_client, token), 400, "invalid_reset_token")


def test_an_expired_token_by_the_clock(mail_app, mail_client, mail_auth, smtp_server):
    email = mail_auth.signup()["user"]["email"]
    token = reset_token(mail_app, mail_client, smtp_server, email)
    with mail_app.app_context():
        later = utcnow() + timedelta(seconds=mail_app.config["PASSWORD_RESET_TOKEN_EXPIRES"] + 1)
        with pytest.raises(Exception) as caught:
            recovery.reset_password(token=token, new_password=NEW_PASSWORD, now=later)
        assert caught.value.code == "invalid_reset_token"
        recovery.reset_password(token=token, new_password=NEW_PASSWORD, now=utcnow())


def test_a_verification_token_is_not_a_reset_token(mail_app, mail_client, mail_auth, smtp_server):
    email = mail_auth.signup()["user"]["email"]  # EMAIL_VERIFICATION=optional: a verification mail
    deliver(mail_app)
    (verify_mail,) = smtp_server.inbox.to(email)
    assert verify_mail["Subject"] == "Confirm your email address"
    assert_problem(reset(mail_client, token_in(verify_mail)), 400, "invalid_reset_token")
    reset_link = reset_token(mail_app, mail_client, smtp_server, email)
    assert_problem(mail_client.post("/email/verify", json={"token": reset_link}), 400, "invalid_verification_token")


def test_a_password_change_voids_the_reset_link(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    token = reset_token(mail_app, mail_client, smtp_server, user["user"]["email"])
    changed = mail_client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    assert changed.status_code == 200
    assert_problem(reset(mail_client, token, "yet another passphrase 7"), 400, "invalid_reset_token")
    deliver(mail_app)
    assert "Your password was changed" in [m["Subject"] for m in smtp_server.inbox.to(user["user"]["email"])]


def test_a_newer_reset_mail_voids_the_older_link(mail_app, mail_client, mail_auth, smtp_server):
    email = mail_auth.signup()["user"]["email"]
    first = reset_token(mail_app, mail_client, smtp_server, email)
    second = reset_token(mail_app, mail_client, smtp_server, email)
    assert first != second
    assert_problem(reset(mail_client, first), 400, "invalid_reset_token")
    assert_ok(reset(mail_client, second))


def test_a_completed_reset_voids_every_other_link(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    email = user["user"]["email"]
    deliver(mail_app)
    verify = token_in(smtp_server.inbox.to(email)[0])
    assert_ok(reset(mail_client, reset_token(mail_app, mail_client, smtp_server, email)))
    assert_problem(mail_client.post("/email/verify", json={"token": verify}), 400, "invalid_verification_token")


def test_reset_keeps_the_password_policy_and_the_token(mail_app, mail_client, mail_auth, smtp_server):
    email = mail_auth.signup()["user"]["email"]
    token = reset_token(mail_app, mail_client, smtp_server, email)
    assert_problem(reset(mail_client, token, "short"), 400, "validation_error")
    assert_ok(reset(mail_client, token))  # the refused attempt did not spend it


@pytest.mark.parametrize("token", ["", "x" * 600, "not-a-token", "\u0000"])
def test_reset_refuses_garbage(mail_client, token):
    response = reset(mail_client, token)
    assert response.status_code == 400
    assert response.get_json()["code"] in ("invalid_reset_token", "validation_error")


def test_a_reset_clears_the_login_throttle(make_app, smtp_server):
    app = make_app(MAIL_URL=smtp_server.url(), LOGIN_THROTTLE_ENABLED="true", LOGIN_FREE_FAILURES=2)
    client = app.test_client()
    user = Auth(client, app).signup()
    email = user["user"]["email"]
    for _ in range(3):
        login_response(client, email, "wrong password!!")
    assert_problem(login_response(client, email), 429, "too_many_attempts")
    assert_ok(reset(client, reset_token(app, client, smtp_server, email)))
    with app.app_context():
        key = throttle.subject_key(f"user:{user['user_id']}")
        assert db.session.get(LoginThrottle, key) is None
    assert login_response(client, email, NEW_PASSWORD).status_code == 200


def test_forgot_sends_nothing_to_unknown_or_deactivated_accounts(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    with mail_app.app_context():
        db.session.get(User, uuid.UUID(user["user_id"])).is_active = False
        db.session.commit()
    deliver(mail_app)  # the signup's verification mail
    answers = [forgot(mail_client, email) for email in (user["user"]["email"], "nobody@example.com")]
    assert {response.status_code for response in answers} == {202}
    assert answers[0].get_json() == answers[1].get_json()
    before = len(smtp_server.inbox.messages)
    deliver(mail_app)
    assert len(smtp_server.inbox.messages) == before
    with mail_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AccountToken).where(
            AccountToken.purpose == "password_reset")) == 0  # fmt: skip
        # The typed address does not stay in the outbox once the task ran.
        assert "nobody@example.com" not in str(db.session.scalars(select(OutboxMessage.payload)).all())


def test_forgot_takes_the_same_time_for_known_and_unknown_addresses(mail_app, mail_client, mail_auth):
    """200 calls each, interleaved; the medians within 25% (+1 ms): the request does the same work either way."""
    known = mail_auth.signup()["user"]["email"]
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for index in range(200):
        for label, email in (("known", known), ("unknown", f"ghost{index}@example.com")):
            started = time.perf_counter()
            assert forgot(mail_client, email).status_code == 202
            timings[label].append(time.perf_counter() - started)
    known_median, unknown_median = (statistics.median(timings[label]) for label in ("known", "unknown"))
    assert abs(known_median - unknown_median) <= 0.25 * min(known_median, unknown_median) + 0.001, (
        known_median,
        unknown_median,
    )


def test_forgot_is_limited_per_address(make_app, smtp_server):
    app = make_app(MAIL_URL=smtp_server.url(), RATELIMIT_ENABLED="true", RATELIMIT_MAIL_PER_ADDRESS="2/hour")
    client = app.test_client()
    for _ in range(2):
        assert forgot(client, "a@example.com").status_code == 202
    body = assert_problem(forgot(client, "a@example.com"), 429, "rate_limited")
    assert body and forgot(client, "b@example.com").status_code == 202


def test_forgot_is_limited_per_ip(make_app, smtp_server):
    app = make_app(MAIL_URL=smtp_server.url(), RATELIMIT_ENABLED="true", RATELIMIT_PASSWORD_FORGOT="3/minute")
    client = app.test_client()
    for index in range(3):
        assert forgot(client, f"x{index}@example.com").status_code == 202
    response = forgot(client, "y@example.com")
    assert response.status_code == 429 and response.headers["Retry-After"]


def test_forgot_without_mail_is_503_mail_unavailable(make_app):
    client = make_app(MAIL_URL="none").test_client()
    body = assert_problem(forgot(client, "a@example.com"), 503, "mail_unavailable")
    assert body["request_id"]


def test_forgot_validates_the_email(mail_client):
    assert_problem(forgot(mail_client, "not an email"), 400, "validation_error")
    assert_problem(mail_client.post("/password/forgot", json={}), 400, "validation_error")


def test_links_come_from_the_configuration_not_the_host_header(make_app, smtp_server):
    app = make_app(MAIL_URL=smtp_server.url(), FRONTEND_URL="https://app.example.org")
    client = app.test_client()
    email = Auth(client, app).signup()["user"]["email"]
    client.post("/password/forgot", json={"email": email}, headers={"Host": "evil.example"})
    deliver(app)
    texts = " ".join(text_of(m) for m in smtp_server.inbox.to(email))
    assert "https://app.example.org/reset-password?token=" in texts and "evil.example" not in texts


def test_tokens_are_stored_only_as_digests(mail_app, mail_client, mail_auth, smtp_server):
    email = mail_auth.signup()["user"]["email"]
    token = reset_token(mail_app, mail_client, smtp_server, email)
    assert len(token) >= 43  # 256 bits, base64url
    with mail_app.app_context():
        stored = db.session.scalars(select(AccountToken.digest)).all()
        assert recovery.digest(token) in stored and token not in stored
        assert token not in str(db.session.scalars(select(OutboxMessage.payload)).all())


# --- verification -------------------------------------------------------------------------------


def test_signup_mail_verifies_the_address(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    assert user["user"]["email_verified"] is False and user["user"]["pending_email"] is None
    assert user["user"]["mfa_enabled"] is False
    deliver(mail_app)
    (mail,) = smtp_server.inbox.to(user["user"]["email"])
    assert "24 hours" in text_of(mail)
    verified = assert_ok(mail_client.post("/email/verify", json={"token": token_in(mail)}))["user"]
    assert verified["email_verified"] is True
    assert_problem(mail_client.post("/email/verify", json={"token": token_in(mail)}), 400, "invalid_verification_token")


def test_resend_verification_then_already_verified(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    headers = bearer(user["access_token"])
    assert_ok(mail_client.post("/me/email/verify", headers=headers), 202)
    deliver(mail_app)
    first, second = smtp_server.inbox.to(user["user"]["email"])
    # The newer mail voids the older link.
    assert_problem(
        mail_client.post("/email/verify", json={"token": token_in(first)}), 400, "invalid_verification_token"
    )
    assert_ok(mail_client.post("/email/verify", json={"token": token_in(second)}))
    assert_problem(mail_client.post("/me/email/verify", headers=headers), 409, "already_verified")


def test_resend_verification_is_limited_and_needs_a_token(make_app, smtp_server):
    app = make_app(MAIL_URL=smtp_server.url(), RATELIMIT_ENABLED="true", RATELIMIT_MAIL_PER_ADDRESS="1/hour")
    client = app.test_client()
    assert client.post("/me/email/verify").status_code == 401
    user = Auth(client, app).signup()
    assert client.post("/me/email/verify", headers=bearer(user["access_token"])).status_code == 202
    assert_problem(client.post("/me/email/verify", headers=bearer(user["access_token"])), 429, "rate_limited")


def test_resend_verification_without_mail(make_app):
    app = make_app(MAIL_URL="none")
    client = app.test_client()
    user = Auth(client, app).signup()
    assert_problem(client.post("/me/email/verify", headers=bearer(user["access_token"])), 503, "mail_unavailable")


def test_verification_off_sends_nothing(make_app, smtp_server):
    app = make_app(MAIL_URL=smtp_server.url(), EMAIL_VERIFICATION="off")
    client = app.test_client()
    Auth(client, app).signup()
    deliver(app)
    assert smtp_server.inbox.messages == []


def test_verification_required_blocks_login_until_verified(make_app, smtp_server):
    app = make_app(MAIL_URL=smtp_server.url(), EMAIL_VERIFICATION="required")
    client = app.test_client()
    user = Auth(client, app).signup()
    email = user["user"]["email"]
    assert_problem(login_response(client, email), 403, "email_not_verified")
    assert_problem(login_response(client, email, "wrong password!!"), 401, "invalid_credentials")
    deliver(app)
    assert_ok(client.post("/email/verify", json={"token": token_in(smtp_server.inbox.to(email)[0])}))
    assert login_response(client, email).status_code == 200


def test_verification_optional_lets_login_work(mail_client, mail_auth):
    user = mail_auth.signup()
    assert login_response(mail_client, user["user"]["email"]).status_code == 200


# --- email change ------------------------------------------------------------------------------


def test_email_change_waits_for_the_new_address(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    old = user["user"]["email"]
    changed = assert_ok(
        mail_client.patch("/me", json={"email": "New@Example.com"}, headers=bearer(user["access_token"]))
    )["user"]
    assert (changed["email"], changed["pending_email"]) == (old, "new@example.com")
    deliver(mail_app)
    (confirm,) = smtp_server.inbox.to("new@example.com")
    assert confirm["Subject"] == "Confirm your new email address"
    assert "A change of your email address was requested" in [m["Subject"] for m in smtp_server.inbox.to(old)]
    assert login_response(mail_client, "new@example.com").status_code == 401
    verified = assert_ok(mail_client.post("/email/verify", json={"token": token_in(confirm)}))["user"]
    assert (verified["email"], verified["pending_email"], verified["email_verified"]) == (
        "new@example.com", None, True,
    )  # fmt: skip
    assert login_response(mail_client, "new@example.com").status_code == 200
    deliver(mail_app)
    assert smtp_server.inbox.to(old)[-1]["Subject"] == "Your email address was changed"


def test_email_change_through_users_id_takes_the_same_path(mail_app, mail_client, mail_auth):
    user = mail_auth.signup()
    response = mail_client.patch(
        f"/users/{user['user_id']}", json={"email": "other@example.com"}, headers=bearer(user["access_token"])
    )
    assert assert_ok(response)["user"]["pending_email"] == "other@example.com"


def test_email_change_confirmed_after_the_address_was_taken_is_409(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    mail_client.patch("/me", json={"email": "wanted@example.com"}, headers=bearer(user["access_token"]))
    deliver(mail_app)
    (confirm,) = smtp_server.inbox.to("wanted@example.com")
    mail_auth.signup("wanted@example.com")
    assert_problem(mail_client.post("/email/verify", json={"token": token_in(confirm)}), 409, "email_taken")
    assert db_user(mail_app, user["user_id"])["email"] == user["user"]["email"]


def test_email_change_to_a_taken_address_is_409_at_once(mail_client, mail_auth):
    other = mail_auth.signup()
    user = mail_auth.signup()
    response = mail_client.patch("/me", json={"email": other["user"]["email"]}, headers=bearer(user["access_token"]))
    assert_problem(response, 409, "email_taken")


def test_a_password_change_voids_a_pending_email_change(mail_app, mail_client, mail_auth, smtp_server):
    user = mail_auth.signup()
    mail_client.patch("/me", json={"email": "moved@example.com"}, headers=bearer(user["access_token"]))
    deliver(mail_app)
    (confirm,) = smtp_server.inbox.to("moved@example.com")
    mail_client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )  # fmt: skip
    assert_problem(
        mail_client.post("/email/verify", json={"token": token_in(confirm)}), 400, "invalid_verification_token"
    )


def test_without_mail_the_email_changes_at_once_unverified(make_app):
    app = make_app(MAIL_URL="none")
    client = app.test_client()
    user = Auth(client, app).signup()
    changed = assert_ok(client.patch("/me", json={"email": "now@example.com"}, headers=bearer(user["access_token"])))
    assert (changed["user"]["email"], changed["user"]["pending_email"]) == ("now@example.com", None)
    assert changed["user"]["email_verified"] is False


def test_an_smtp_outage_never_fails_the_request(make_app):
    """The change commits with its outbox row; the mail waits for the server."""
    from tests.smtp import free_port

    app = make_app(MAIL_URL=f"smtp+plain://127.0.0.1:{free_port()}", MAIL_TIMEOUT=1)
    client = app.test_client()
    user = Auth(client, app).signup()
    assert forgot(client, user["user"]["email"]).status_code == 202
    deliver(app)
    with app.app_context():
        pending = db.session.scalars(select(OutboxMessage).where(OutboxMessage.status == "pending")).all()
        assert pending and all(row.last_error for row in pending if row.kind == "mail")

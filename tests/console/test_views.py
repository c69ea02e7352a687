"""The console's controllers through the real app: sign-in, the rules of every action, CSRF, cookie, headers."""

from __future__ import annotations

import time
import uuid

import pyotp
import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import AuditEvent, Session, User
from app.services import mfa
from tests.console.conftest import BASE, Console, flashes
from tests.helpers import PASSWORD, assert_ok, assert_problem, bearer, check_token, db_user
from tests.smtp import deliver, token_in

T0 = 1_800_000_000


def events(app, name: str, target: str | None = None) -> list[AuditEvent]:
    """The audit events of this name (for this target)."""
    with app.app_context():
        query = select(AuditEvent).where(AuditEvent.event == name)
        if target is not None:
            query = query.where(AuditEvent.target_id == uuid.UUID(target))
        return list(db.session.scalars(query).all())


def live_sessions(app, user_id: str) -> int:
    """How many unrevoked sessions the user has."""
    with app.app_context():
        rows = db.session.scalars(
            select(Session).where(Session.user_id == uuid.UUID(user_id), Session.revoked_at.is_(None))
        )
        return len(list(rows))


# --- signing in -----------------------------------------------------------------------------


def test_signed_out_visits_go_to_the_sign_in_page(console):
    response = console.get("/admin")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/admin/sign-in")
    page = console.get("/admin/sign-in")
    assert page.status_code == 200 and 'name="password"' in page.get_data(as_text=True)
    assert page.mimetype == "text/html"


def test_admin_signs_in_and_the_cookie_is_host_only_secure_httponly_strict(app, console, admin):
    response = console.sign_in(admin["user"]["email"].upper())
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin")
    cookie = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("__Host-admin_session=")]
    assert len(cookie) == 1
    attributes = {part.strip().split("=")[0].lower() for part in cookie[0].split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite", "expires"} <= attributes
    assert "Path=/" in cookie[0] and "SameSite=Strict" in cookie[0] and "domain" not in attributes
    page = console.get("/admin")
    assert page.status_code == 200 and admin["user"]["email"] in page.get_data(as_text=True)
    assert events(app, "login_succeeded", admin["user"]["id"])


def test_sign_in_by_username(console, auth, app):
    body = auth.signup(username="rooty")
    with app.app_context():
        db.session.get(User, uuid.UUID(body["user_id"])).role = "admin"
        db.session.commit()
    assert console.sign_in("rooty").status_code == 303


def test_console_pages_carry_a_csp_without_unsafe_inline(signed_in):
    console, _ = signed_in
    for path in ("/admin", "/admin/sign-in"):
        headers = console.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"


def test_assets_are_served_by_the_service(console):
    page = console.get("/admin/sign-in").get_data(as_text=True)
    assert "//" not in page.split("<body>")[0].replace("https://", "")  # no protocol-relative asset
    for asset in ("console.css", "console.js", "icon.svg"):
        assert f"/admin/static/{asset}" in page
        with console.get(f"/admin/static/{asset}") as response:
            assert response.status_code == 200


def test_a_wrong_password_is_401_and_audited_like_the_api(app, console, admin):
    response = console.sign_in(admin["user"]["email"], "not the password")
    assert response.status_code == 401
    assert "Invalid email or password" in response.get_data(as_text=True) or "password" in response.get_data(
        as_text=True
    )
    assert console.get("/admin").status_code == 303
    assert events(app, "login_failed", admin["user"]["id"])


def test_a_plain_user_is_refused_and_keeps_no_session(app, console, user):
    response = console.sign_in(user["user"]["email"])
    assert response.status_code == 403
    assert "for administrators" in response.get_data(as_text=True)
    assert console.get("/admin").status_code == 303
    # The login's session was ended at once; the signup's own session stays.
    assert live_sessions(app, user["user_id"]) == 1
    assert any(event.details.get("reason") == "not_admin" for event in events(app, "session_revoked"))


def test_a_deactivated_admin_is_refused(app, console, admin, auth):
    with app.app_context():
        db.session.get(User, uuid.UUID(admin["user"]["id"])).is_active = False
        db.session.commit()
    assert console.sign_in(admin["user"]["email"]).status_code == 403


@pytest.fixture
def clock(monkeypatch):
    """The time TOTP codes are judged at."""
    now = {"t": float(T0)}
    monkeypatch.setattr(mfa, "clock", lambda: now["t"])
    return now


def enable_mfa(client, login: dict, clock) -> tuple[str, list[str]]:
    """Turn MFA on through the API for a signed-in account; (secret, recovery codes)."""
    token = login["access_token"]
    secret = assert_ok(client.post("/me/mfa/totp", json={"password": PASSWORD}, headers=bearer(token)))["secret"]
    code = pyotp.TOTP(secret).at(clock["t"])
    body = assert_ok(client.post("/me/mfa/totp/confirm", json={"code": code}, headers=bearer(token)))
    clock["t"] += 30
    return secret, body["recovery_codes"]


def test_an_admin_with_a_second_factor_signs_in_in_two_steps(app, client, console, admin, clock):
    secret, codes = enable_mfa(client, admin, clock)
    response = console.sign_in(admin["user"]["email"])
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/sign-in/code")
    assert console.get("/admin").status_code == 303  # not signed in yet
    console.get("/admin/sign-in/code")
    wrong = console.post("/admin/sign-in/code", {"code": "000000" if pyotp.TOTP(secret).at(T0) != "000000" else "1"})
    assert wrong.status_code == 400
    response = console.post("/admin/sign-in/code", {"code": pyotp.TOTP(secret).at(clock["t"])})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin")
    assert console.get("/admin").status_code == 200
    with app.app_context():
        amr = db.session.scalars(
            select(Session.amr).where(Session.user_id == uuid.UUID(admin["user"]["id"])).order_by(Session.created_at)
        ).all()
    assert amr[-1] == "pwd,otp"


def test_a_recovery_code_works_for_the_second_step(client, console, admin, clock):
    _, codes = enable_mfa(client, admin, clock)
    console.sign_in(admin["user"]["email"])
    console.get("/admin/sign-in/code")
    assert console.post("/admin/sign-in/code", {"recovery_code": codes[0]}).status_code == 303
    assert console.get("/admin").status_code == 200


def test_the_code_page_without_a_pending_sign_in_goes_back(console):
    assert console.get("/admin/sign-in/code").status_code == 303


def test_sign_out_ends_the_session_row(app, signed_in):
    console, admin = signed_in
    before = live_sessions(app, admin["user"]["id"])
    response = console.post("/admin/sign-out")
    assert response.status_code == 303
    assert console.get("/admin").status_code == 303
    assert live_sessions(app, admin["user"]["id"]) == before - 1


def test_sign_in_failures_spend_the_per_ip_failure_budget(make_app, admin):
    limited = make_app(RATELIMIT_ENABLED="true", RATELIMIT_LOGIN_FAILURES="2/minute")
    console = Console(limited)
    assert console.sign_in(admin["user"]["email"], "wrong one").status_code == 401
    assert console.sign_in(admin["user"]["email"], "wrong two").status_code == 401
    refused = console.sign_in(admin["user"]["email"])
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


# --- the session -----------------------------------------------------------------------------


def test_api_answers_never_set_or_vary_on_cookies(signed_in, client, admin):
    console, _ = signed_in
    for response in (
        console.client.post("/login", json={"email": admin["user"]["email"], "password": PASSWORD}, base_url=BASE),
        console.client.get("/me", headers=bearer(admin["access_token"]), base_url=BASE),
        console.client.get("/health", base_url=BASE),
    ):
        assert "Set-Cookie" not in response.headers
        assert "Cookie" not in response.headers.get("Vary", "")


def test_the_console_cookie_opens_no_api_endpoint(signed_in):
    console, _ = signed_in
    assert_problem(console.client.get("/me", base_url=BASE), 401, "missing_token")


def test_a_bearer_token_opens_no_console_page(client, admin):
    response = client.get("/admin", headers=bearer(admin["access_token"]), base_url=BASE)
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/sign-in")


def test_a_forged_cookie_is_not_a_sign_in(console, admin):
    console.client.set_cookie("__Host-admin_session", "eyJfdXNlcl9pZCI6IngifQ.AAAAAA.forged", domain="localhost")
    assert console.get("/admin").status_code == 303


def test_the_console_session_ends_after_the_idle_timeout(make_app, admin, monkeypatch):
    short = make_app(ADMIN_CONSOLE_IDLE_TIMEOUT="60")
    console = Console(short)
    assert console.sign_in(admin["user"]["email"]).status_code == 303
    assert console.get("/admin").status_code == 200
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 61)  # the cookie signature's clock (itsdangerous)
    assert console.get("/admin").status_code == 303


def test_the_console_session_ends_after_its_maximum_lifetime(make_app, admin, monkeypatch):
    from app.services import console as console_service

    short = make_app(ADMIN_CONSOLE_IDLE_TIMEOUT="60", ADMIN_CONSOLE_MAX_LIFETIME="60")
    console = Console(short)
    assert console.sign_in(admin["user"]["email"]).status_code == 303
    assert console.get("/admin").status_code == 200
    later = console_service.utcnow() + __import__("datetime").timedelta(seconds=61)
    monkeypatch.setattr(console_service, "utcnow", lambda: later)
    assert console.get("/admin").status_code == 303


def test_ending_every_session_through_the_api_signs_the_console_out(client, signed_in):
    console, admin = signed_in
    assert_ok(client.post("/logout", json={"all": True}, headers=bearer(admin["access_token"])))
    assert console.get("/admin").status_code == 303


def test_a_demoted_admin_is_signed_out_of_the_console(app, auth, signed_in):
    console, admin = signed_in
    other = auth.make_admin()
    response = auth.client.patch(
        f"/users/{admin['user']['id']}", json={"role": "user"}, headers=bearer(other["access_token"])
    )
    assert_ok(response)
    assert console.get("/admin").status_code == 303


# --- CSRF ------------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(app, signed_in, user):
    console, _ = signed_in
    response = console.post(f"/admin/users/{user['user_id']}/deactivate", csrf=False)
    assert response.status_code == 400 and "security token" in response.get_data(as_text=True)
    assert db_user(app, user["user_id"])["is_active"] is True


def test_a_csrf_token_of_another_session_is_refused(app, signed_in, user):
    console, _ = signed_in
    stranger = Console(app)
    stranger.get("/admin/sign-in")
    response = console.post(f"/admin/users/{user['user_id']}/deactivate", {"csrf_token": stranger.token})
    assert response.status_code == 400
    assert db_user(app, user["user_id"])["is_active"] is True


def test_a_cross_site_post_is_refused(app, signed_in, user):
    console, _ = signed_in
    response = console.post(
        f"/admin/users/{user['user_id']}/deactivate", headers={"Referer": "https://evil.example/page"}
    )
    assert response.status_code == 400
    assert db_user(app, user["user_id"])["is_active"] is True


def test_the_sign_in_form_needs_its_csrf_token_too(console, admin):
    console.get("/admin/sign-in")
    response = console.post("/admin/sign-in", {"identifier": admin["user"]["email"], "password": PASSWORD}, csrf=False)
    assert response.status_code == 400
    assert console.get("/admin").status_code == 303


def test_nul_in_a_form_field_is_refused(console):
    console.get("/admin/sign-in")
    response = console.post("/admin/sign-in", {"identifier": "a\x00b@example.com", "password": "x"})
    assert response.status_code == 400 and response.mimetype == "text/html"


# --- the users list --------------------------------------------------------------------------


def test_search_filters_and_pages(app, auth, signed_in):
    console, admin = signed_in
    for index in range(22):
        auth.signup(f"member{index:02d}@example.com", name=f"Member {index}")
    auth.signup("zed@example.com", name="Zed Quux")
    page = console.get("/admin?q=quux").get_data(as_text=True)
    assert "zed@example.com" in page and "member01@example.com" not in page
    admins = console.get("/admin?role=admin").get_data(as_text=True)
    assert admin["user"]["email"] in admins and "zed@example.com" not in admins
    first = console.get("/admin?q=member").get_data(as_text=True)
    assert "22 users match" in first and "page 1 of 2" in first and 'rel="next"' in first
    second = console.get("/admin?q=member&page=2").get_data(as_text=True)
    assert "member21@example.com" in second and "member00@example.com" not in second
    pager = second.split('class="pager"')[1]
    assert 'rel="prev"' in pager and "q=member" in pager and "page=1" in pager


def test_filter_by_status(app, signed_in, user):
    console, _ = signed_in
    with app.app_context():
        db.session.get(User, uuid.UUID(user["user_id"])).is_active = False
        db.session.commit()
    assert user["user"]["email"] in console.get("/admin?is_active=false").get_data(as_text=True)
    assert user["user"]["email"] not in console.get("/admin?is_active=true").get_data(as_text=True)


def test_a_bad_filter_is_a_400_page(signed_in):
    console, _ = signed_in
    response = console.get("/admin?role=king")
    assert response.status_code == 400 and response.mimetype == "text/html"


# --- one user and the actions ----------------------------------------------------------------


def test_the_user_page_shows_profile_sessions_and_events(signed_in, user):
    console, _ = signed_in
    page = console.get(f"/admin/users/{user['user_id']}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert user["user"]["email"] in text and "Sessions" in text and "signup" in text


def test_an_unknown_user_is_a_404_page(signed_in):
    console, _ = signed_in
    for user_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = console.get(f"/admin/users/{user_id}")
        assert response.status_code == 404 and response.mimetype == "text/html"


def test_deactivate_and_reactivate_are_audited_with_the_admin_as_actor(app, client, signed_in, user):
    console, admin = signed_in
    console.get(f"/admin/users/{user['user_id']}")
    response = console.post(f"/admin/users/{user['user_id']}/deactivate")
    assert response.status_code == 303
    assert db_user(app, user["user_id"])["is_active"] is False
    assert check_token(client, user["access_token"])["valid"] is False
    (event,) = events(app, "user_deactivated", user["user_id"])
    assert str(event.actor_id) == admin["user"]["id"]
    assert ("success", "The account is deactivated and every one of its sessions has ended.") in flashes(
        console.get(f"/admin/users/{user['user_id']}")
    )
    console.post(f"/admin/users/{user['user_id']}/reactivate")
    assert db_user(app, user["user_id"])["is_active"] is True
    assert events(app, "user_activated", user["user_id"])


def test_the_last_admin_cannot_deactivate_or_demote_themself(app, signed_in):
    console, admin = signed_in
    me = admin["user"]["id"]
    for path, data in ((f"/admin/users/{me}/deactivate", {}), (f"/admin/users/{me}/role", {"role": "user"})):
        response = console.post(path, data)
        assert response.status_code == 303
        notices = flashes(console.get(f"/admin/users/{me}"))
        assert any(kind == "error" and "last active admin" in text for kind, text in notices), notices
    row = db_user(app, me)
    assert row["role"] == "admin" and row["is_active"] is True


def test_change_role_is_audited(app, signed_in, user):
    console, admin = signed_in
    console.post(f"/admin/users/{user['user_id']}/role", {"role": "admin"})
    assert db_user(app, user["user_id"])["role"] == "admin"
    (event,) = events(app, "role_changed", user["user_id"])
    assert event.details == {"old": "user", "new": "admin"} and str(event.actor_id) == admin["user"]["id"]
    response = console.post(f"/admin/users/{user['user_id']}/role", {"role": "king"})
    assert response.status_code == 303 and db_user(app, user["user_id"])["role"] == "admin"


def test_revoke_one_session_then_all(app, client, auth, signed_in, user):
    console, admin = signed_in
    second = auth.login(user["user"]["email"])
    with app.app_context():
        sid = db.session.scalars(
            select(Session.id).where(Session.user_id == uuid.UUID(user["user_id"])).order_by(Session.created_at)
        ).first()
    console.post(f"/admin/users/{user['user_id']}/sessions/revoke", {"session_id": str(sid)})
    assert check_token(client, user["access_token"])["valid"] is False
    assert check_token(client, second["access_token"])["valid"] is True
    (event,) = events(app, "session_revoked", user["user_id"])
    assert str(event.actor_id) == admin["user"]["id"] and event.details["session_id"] == str(sid)
    again = console.post(f"/admin/users/{user['user_id']}/sessions/revoke", {"session_id": str(sid)})
    assert again.status_code == 404
    console.post(f"/admin/users/{user['user_id']}/sessions/revoke")
    assert check_token(client, second["access_token"])["valid"] is False
    assert live_sessions(app, user["user_id"]) == 0


def test_remove_mfa_of_a_user_but_not_ones_own(app, client, signed_in, auth, clock):
    console, admin = signed_in
    member = auth.signup()
    enable_mfa(client, member, clock)
    console.post(f"/admin/users/{member['user_id']}/mfa/remove")
    assert db_user(app, member["user_id"])["mfa_enabled"] is False
    (event,) = events(app, "mfa_removed_by_admin", member["user_id"])
    assert str(event.actor_id) == admin["user"]["id"]
    response = console.post(f"/admin/users/{admin['user']['id']}/mfa/remove")
    assert response.status_code == 303
    notices = flashes(console.get(f"/admin/users/{admin['user']['id']}"))
    assert any(kind == "error" and "DELETE /me/mfa" in text for kind, text in notices), notices


def test_delete_asks_for_confirmation_then_deletes(app, client, signed_in, user):
    console, admin = signed_in
    confirm = console.get(f"/admin/users/{user['user_id']}/delete")
    assert confirm.status_code == 200 and "Delete for good" in confirm.get_data(as_text=True)
    assert db_user(app, user["user_id"]) is not None  # the GET deletes nothing
    response = console.post(f"/admin/users/{user['user_id']}/delete")
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin")
    assert db_user(app, user["user_id"]) is None
    assert check_token(client, user["access_token"])["valid"] is False
    (event,) = events(app, "user_deleted", user["user_id"])
    assert str(event.actor_id) == admin["user"]["id"]


def test_ones_own_account_is_not_deleted_from_the_console(app, signed_in, auth):
    console, admin = signed_in
    auth.make_admin()  # not the last admin: the password rule is what refuses
    page = console.get(f"/admin/users/{admin['user']['id']}/delete").get_data(as_text=True)
    assert "Delete for good" not in page and "DELETE /me" in page
    console.post(f"/admin/users/{admin['user']['id']}/delete")
    assert db_user(app, admin["user"]["id"]) is not None


def test_a_reset_mail_goes_out_and_its_link_works(make_app, smtp_server, admin):
    mail_app = make_app(MAIL_URL=smtp_server.url())
    api = mail_app.test_client()
    member = api.post("/signup", json={"email": "forgetful@example.com", "password": PASSWORD, "name": "F"})
    member_id = member.get_json()["user_id"]
    deliver(mail_app)  # the signup's verification mail
    console = Console(mail_app)
    assert console.sign_in(admin["user"]["email"]).status_code == 303
    console.get(f"/admin/users/{member_id}")
    assert console.post(f"/admin/users/{member_id}/reset-mail").status_code == 303
    deliver(mail_app)
    (mail,) = [m for m in smtp_server.inbox.to("forgetful@example.com") if "reset" in m["Subject"].lower()]
    response = api.post("/password/reset", json={"token": token_in(mail), "new_password": "a brand new passphrase"})
    assert_ok(response)
    (event,) = events(mail_app, "password_reset_requested", member_id)
    assert str(event.actor_id) == admin["user"]["id"]


def test_no_reset_mail_without_mail_or_for_a_deactivated_account(app, signed_in, user):
    console, _ = signed_in
    console.post(f"/admin/users/{user['user_id']}/reset-mail")  # testing: MAIL_URL is the console log
    with app.app_context():
        db.session.get(User, uuid.UUID(user["user_id"])).is_active = False
        db.session.commit()
    console.post(f"/admin/users/{user['user_id']}/reset-mail")
    notices = flashes(console.get(f"/admin/users/{user['user_id']}"))
    assert any(kind == "error" and "reactivate" in text for kind, text in notices), notices


# --- configuration ---------------------------------------------------------------------------


def test_admin_console_false_removes_it(make_app):
    off = make_app(ADMIN_CONSOLE="false")
    client = off.test_client()
    for path in ("/admin", "/admin/sign-in", "/admin/static/console.css"):
        assert_problem(client.get(path, base_url=BASE), 404, "not_found")
    assert "Set-Cookie" not in client.get("/admin/sign-in", base_url=BASE).headers


def test_the_console_lives_under_url_prefix(make_app, admin):
    prefixed = make_app(URL_PREFIX="/auth")
    console = Console(prefixed, prefix="/auth")
    page = console.get("/admin/sign-in")
    assert page.status_code == 200 and 'action="/auth/admin/sign-in"' in page.get_data(as_text=True)
    assert "/auth/admin/static/console.css" in page.get_data(as_text=True)
    response = console.post("/admin/sign-in", {"identifier": admin["user"]["email"], "password": PASSWORD})
    assert response.status_code == 303 and response.headers["Location"].endswith("/auth/admin")
    assert console.get("/admin").status_code == 200
    assert prefixed.test_client().get("/admin", base_url=BASE).status_code == 404

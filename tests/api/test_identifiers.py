"""Look-alike identities (issue 9, item 6): no second account that reads as an existing one.

Every endpoint that takes an email or a username goes through app/schemas/fields.py, so these
go through signup, login, PATCH /me, POST/PATCH /users and GET /users?email= on every backend.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import User
from tests.helpers import PASSWORD, assert_ok, assert_problem, bearer

# The probe's strings: each must be refused (400 naming the field) or be the same account (409).
EMAIL_PROBES = [
    pytest.param("ａｄｍｉｎ@example.com", 409, id="fullwidth"),
    pytest.param("admın@example.com", 400, id="dotless-i"),
    pytest.param("\u0430dmin@example.com", 400, id="cyrillic-a"),
    pytest.param("ad\u200bmin@example.com", 400, id="zwsp"),
    pytest.param("ad\u00admin@example.com", 400, id="soft-hyphen"),
    pytest.param("ad\u200dmin@example.com", 400, id="zwj"),
    pytest.param("admin@exam\u202eple.com", 400, id="rlo-in-domain"),
    pytest.param("admin@exam\u2028ple.com", 400, id="line-separator-in-domain"),
    pytest.param("admin@exam\u200bple.com", 400, id="zwsp-in-domain"),
    pytest.param("admin@EXAMPLE.COM", 409, id="case"),
]
USERNAME_PROBES = [
    pytest.param("ａｄｍｉｎ", 409, id="fullwidth"),
    pytest.param("Admin", 409, id="case"),
    pytest.param("ADMIN", 409, id="upper"),
    pytest.param("admın", 400, id="dotless-i"),
    pytest.param("\u0430dmin", 400, id="cyrillic-a"),
    pytest.param("\u0430\u0441\u0435", 400, id="all-cyrillic-ace"),
    pytest.param("ad\u200bmin", 400, id="zwsp"),
    pytest.param("ad\u00admin", 400, id="soft-hyphen"),
    pytest.param("ad\u200cmin", 400, id="zwnj"),
    pytest.param("admin\u202e", 400, id="rlo"),
    pytest.param("ad\u2028min", 400, id="line-separator"),
    pytest.param("\u03b1dmin", 400, id="greek-alpha"),
]


def _count_users(app) -> int:
    """How many accounts exist."""
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(User)).scalar_one()


def _signup(client, *, email: str, username: str | None = None):
    """POST /signup, returning the raw response."""
    body = {"email": email, "password": PASSWORD, "name": "Probe"}
    if username is not None:
        body["username"] = username
    return client.post("/signup", json=body)


def _admin_creates(client, admin: dict, **body):
    """POST /users as an admin, returning the raw response."""
    return client.post(
        "/users", json={"password": PASSWORD, "name": "Made", **body}, headers=bearer(admin["access_token"])
    )


def _refused_or_taken(response, status: int, field: str, taken_code: str) -> None:
    """A 400 naming the field, or the 409 of the account it imitates."""
    if status == 400:
        assert field in assert_problem(response, 400, "validation_error")["errors"]
    else:
        assert_problem(response, 409, taken_code)


# --- emails -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("probe", "status"), EMAIL_PROBES)
def test_signup_email_lookalike_refused_or_collides(app, auth, client, probe, status):
    auth.signup("admin@example.com")
    _refused_or_taken(_signup(client, email=probe), status, "email", "email_taken")
    assert _count_users(app) == 1


@pytest.mark.parametrize(("probe", "status"), EMAIL_PROBES)
def test_update_me_email_lookalike_refused_or_collides(auth, client, user, probe, status):
    auth.signup("admin@example.com")
    response = client.patch("/me", json={"email": probe}, headers=bearer(user["access_token"]))
    _refused_or_taken(response, status, "email", "email_taken")


@pytest.mark.parametrize("variant", ["user@BÜCHER.example", "user@bücher.example", "user@xn--bcher-kva.example"])
def test_idna_domain_forms_are_one_account(auth, client, variant):
    """Stored as the A-label; every spelling of the domain signs in to, and collides with, that account."""
    body = auth.signup("user@BÜCHER.example")
    assert body["user"]["email"] == "user@xn--bcher-kva.example"
    assert auth.login(variant)["user"]["id"] == body["user_id"]
    assert_problem(_signup(client, email=variant), 409, "email_taken")


def test_list_users_email_filter_matches_any_idna_form(auth, client, admin):
    auth.signup("user@xn--bcher-kva.example")
    response = client.get(
        "/users", query_string={"email": "USER@Bücher.Example"}, headers=bearer(admin["access_token"])
    )
    assert [item["email"] for item in assert_ok(response)["items"]] == ["user@xn--bcher-kva.example"]


@pytest.mark.parametrize("domain", ["-bad.example", "exa..mple.com", "xn--zz.example"])
def test_signup_invalid_idna_domain_is_400(app, client, domain):
    assert "email" in assert_problem(_signup(client, email=f"x@{domain}"), 400, "validation_error")["errors"]
    assert _count_users(app) == 0


def test_signup_email_in_one_other_script_is_accepted(client):
    """A real address in one script (Cyrillic) is not a look-alike; its domain is stored as the A-label."""
    response = _signup(client, email="Иван@пример.рф")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["user"]["email"] == "иван@xn--e1afmkfd.xn--p1ai"


def test_login_with_invisible_character_in_email_is_400(auth, client):
    auth.signup("admin@example.com")
    response = client.post("/login", json={"email": "ad\u200bmin@example.com", "password": PASSWORD})
    assert "email" in assert_problem(response, 400, "validation_error")["errors"]


# --- usernames ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("probe", "status"), USERNAME_PROBES)
def test_signup_username_lookalike_refused_or_collides(app, client, admin, probe, status):
    """`admin` made by an admin exists; no twin of it can be signed up."""
    assert _admin_creates(client, admin, email="held@example.com", username="admin").status_code == 201
    before = _count_users(app)
    response = _signup(client, email="probe@example.com", username=probe)
    _refused_or_taken(response, status, "username", "username_taken")
    assert _count_users(app) == before


@pytest.mark.parametrize(("probe", "status"), USERNAME_PROBES)
def test_update_me_username_lookalike_refused_or_collides(client, admin, user, probe, status):
    assert _admin_creates(client, admin, email="held@example.com", username="admin").status_code == 201
    response = client.patch("/me", json={"username": probe}, headers=bearer(user["access_token"]))
    _refused_or_taken(response, status, "username", "username_taken")


@pytest.mark.parametrize(("probe", "status"), USERNAME_PROBES)
def test_admin_create_username_lookalike_refused_or_collides(client, admin, probe, status):
    """Admins may assign reserved names, but not twins of a held one."""
    assert _admin_creates(client, admin, email="held@example.com", username="admin").status_code == 201
    response = _admin_creates(client, admin, email="probe@example.com", username=probe)
    _refused_or_taken(response, status, "username", "username_taken")


def test_login_by_fullwidth_username_finds_the_account(auth, client):
    """The key is the PRECIS form, so the fullwidth spelling is the same name (RFC 8265)."""
    body = auth.signup(username="Carol")
    response = client.post("/login", json={"username": "ｃａｒｏｌ", "password": PASSWORD})
    assert assert_ok(response)["user"]["id"] == body["user_id"]


def test_login_by_unmappable_username_is_invalid_credentials(auth, client):
    """A username no account can hold is an ordinary failed login, never a match with a username-less account."""
    auth.signup()  # no username: its username_key is NULL
    response = client.post("/login", json={"username": "a\u200bb", "password": PASSWORD})
    assert_problem(response, 401, "invalid_credentials")


def test_signup_username_display_form_is_width_mapped_and_keeps_case(client):
    response = _signup(client, email="d@example.com", username="Ｄａｖｅ_1")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["user"]["username"] == "Dave_1"


@pytest.mark.parametrize("name", ["müller", "Işık", "иван", "たなか太郎", "José.García"])
def test_signup_username_in_one_script_is_accepted(client, name):
    response = _signup(client, email="n@example.com", username=name)
    assert response.status_code == 201, response.get_json()


# --- reserved usernames -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["admin", "Admin", "ＡＤＭＩＮ", "root", "No-Reply", "postmaster"])
def test_signup_reserved_username_refused(app, client, name):
    response = _signup(client, email="r@example.com", username=name)
    assert "username" in assert_problem(response, 400, "username_reserved")["errors"]
    assert _count_users(app) == 0


def test_update_me_reserved_username_refused(client, user):
    response = client.patch("/me", json={"username": "Support"}, headers=bearer(user["access_token"]))
    assert "username" in assert_problem(response, 400, "username_reserved")["errors"]


def test_update_own_user_record_reserved_username_refused(client, user):
    response = client.patch(
        f"/users/{user['user_id']}", json={"username": "security"}, headers=bearer(user["access_token"])
    )
    assert_problem(response, 400, "username_reserved")


def test_admin_may_assign_reserved_username(client, admin, user):
    created = _admin_creates(client, admin, email="ops@example.com", username="support")
    assert created.status_code == 201, created.get_json()
    response = client.patch(
        f"/users/{user['user_id']}", json={"username": "root"}, headers=bearer(admin["access_token"])
    )
    assert assert_ok(response)["user"]["username"] == "root"


def test_holder_of_reserved_username_may_keep_it(client, admin, auth):
    """A user given a reserved name by an admin can still change its case or other fields."""
    body = auth.signup()
    assert_ok(
        client.patch(f"/users/{body['user_id']}", json={"username": "help"}, headers=bearer(admin["access_token"]))
    )
    response = client.patch("/me", json={"username": "Help", "name": "Helper"}, headers=bearer(body["access_token"]))
    assert assert_ok(response)["user"]["username"] == "Help"


def test_reserved_usernames_setting_replaces_the_list(make_app):
    app = make_app(RESERVED_USERNAMES="staff, Ｂｏｓｓ")
    client = app.test_client()
    assert_problem(_signup(client, email="a@example.com", username="BOSS"), 400, "username_reserved")
    assert _signup(client, email="b@example.com", username="admin").status_code == 201


def test_reserved_usernames_setting_empty_turns_it_off(make_app):
    client = make_app(RESERVED_USERNAMES="").test_client()
    assert _signup(client, email="a@example.com", username="admin").status_code == 201


@pytest.mark.parametrize("mark", ["\u202e", "\u202d", "\u2066", "\u2069"], ids=["RLO", "LRO", "LRI", "PDI"])
def test_a_name_with_bidi_controls_is_refused_and_changes_nothing(client, auth, mark):
    # CVE-2021-42574's trick: "exe.gnp" stored, "png.exe"-like shown to the admin reading the list.
    answer = client.post("/signup", json={"email": "bidi@example.com", "password": PASSWORD, "name": f"ann{mark}gnp"})
    assert_problem(answer, 400, "validation_error")
    assert "name" in answer.get_json()["errors"]
    assert client.post("/login", json={"email": "bidi@example.com", "password": PASSWORD}).status_code == 401
    user = auth.signup()
    changed = client.patch("/me", json={"name": f"x{mark}y"}, headers=bearer(user["access_token"]))
    assert_problem(changed, 400, "validation_error")
    assert client.get("/me", headers=bearer(user["access_token"])).get_json()["user"]["name"] == user["user"]["name"]


def test_a_name_keeps_the_joiners_its_script_needs(client):
    # ZWNJ in Persian, ZWJ in an emoji sequence: format characters, not bidi controls.
    for name in ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\U0001f469\u200d\U0001f52c Ann"):
        email = f"j{len(name)}{ord(name[0])}@example.com"
        answer = client.post("/signup", json={"email": email, "password": PASSWORD, "name": name})
        assert answer.status_code == 201, answer.get_json()
        assert answer.get_json()["user"]["name"] == name

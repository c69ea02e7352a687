"""User management: /users (admins) and /users/{id} (admins, or the user themself)."""

from __future__ import annotations

import uuid

import pytest

from app.extensions import db
from app.models import User
from tests.helpers import (
    PASSWORD,
    USER_FIELDS,
    Auth,
    assert_ok,
    assert_problem,
    bearer,
    check_token,
    db_user,
    login_response,
)

NEW_PASSWORD = "an entirely different passphrase"


def list_users(client, token: str, **query) -> dict:
    """GET /users with a query, asserting 200; the body."""
    return assert_ok(client.get("/users", query_string=query, headers=bearer(token)))


def listed_emails(client, token: str, **query) -> set[str]:
    """The emails of every user GET /users returns for a query (one page of up to 100)."""
    body = list_users(client, token, per_page=100, **query)
    assert body["total"] == len(body["items"])
    return {item["email"] for item in body["items"]}


def patch_user(client, token: str, user_id: str, body: dict):
    """PATCH /users/{id}, returning the raw response."""
    return client.patch(f"/users/{user_id}", json=body, headers=bearer(token))


# GET /users


def test_list_users_regular_user_forbidden(client, user):
    """A regular user may not list users."""
    assert_problem(client.get("/users", headers=bearer(user["access_token"])), 403, "forbidden")


def test_list_users_without_token_unauthorized(client):
    """Listing users needs a token."""
    response = client.get("/users")
    assert_problem(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_list_users_defaults(client, admin, user):
    """Without a query: page 1, 20 per page, every user, each with exactly the user fields."""
    body = list_users(client, admin["access_token"])
    assert (body["page"], body["per_page"], body["total"]) == (1, 20, 2)
    assert {item["id"] for item in body["items"]} == {admin["user"]["id"], user["user_id"]}
    for item in body["items"]:
        assert set(item) == USER_FIELDS


def test_list_users_pagination(auth, client, admin):
    """Pages are disjoint, cover every user, and each reports the same total."""
    ids = {admin["user"]["id"]} | {auth.signup()["user_id"] for _ in range(4)}
    seen = []
    for page, size in ((1, 2), (2, 2), (3, 1)):
        body = list_users(client, admin["access_token"], page=page, per_page=2)
        assert (body["page"], body["per_page"], body["total"]) == (page, 2, 5)
        assert len(body["items"]) == size
        seen += [item["id"] for item in body["items"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == ids
    beyond = list_users(client, admin["access_token"], page=4, per_page=2)
    assert beyond["items"] == []
    assert beyond["total"] == 5


def test_list_users_per_page_max(auth, client, admin):
    """per_page=100 is allowed."""
    body = list_users(client, admin["access_token"], per_page=100)
    assert body["per_page"] == 100


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"per_page": 101}, "per_page"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": "many"}, "per_page"),
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"page": "first"}, "page"),
        ({"role": "superuser"}, "role"),
        ({"is_active": "maybe"}, "is_active"),
        ({"email": "not-an-email"}, "email"),
        ({"q": ""}, "q"),
        ({"q": "x" * 101}, "q"),
    ],
)
def test_list_users_invalid_query_rejected(client, admin, query, field):
    """Out-of-range or malformed query parameters are a 400 naming the parameter."""
    response = client.get("/users", query_string=query, headers=bearer(admin["access_token"]))
    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]


def test_list_users_unknown_query_param_rejected(client, admin):
    """An unknown query parameter is a 400, not silently ignored."""
    response = client.get("/users", query_string={"sort": "email"}, headers=bearer(admin["access_token"]))
    problem = assert_problem(response, 400, "validation_error")
    assert "sort" in problem["errors"]


def test_list_users_email_filter_exact_case_insensitive(auth, client, admin):
    """`email` matches the whole address, in any case, and nothing else."""
    bob = auth.signup("bob@example.com")
    auth.signup("ob@example.com")
    auth.signup("bob@example.co")
    for query in ("bob@example.com", "BOB@Example.COM"):
        body = list_users(client, admin["access_token"], email=query)
        assert body["total"] == 1
        assert [item["id"] for item in body["items"]] == [bob["user_id"]]
    assert list_users(client, admin["access_token"], email="nobody@example.com")["total"] == 0


def test_list_users_q_searches_email_username_name(auth, client, admin):
    """`q` is a case-insensitive substring of the email, the username or the name."""
    auth.signup("zed.alpha@example.com", name="Plain One")
    auth.signup("second@example.com", username="BetaUser", name="Plain Two")
    auth.signup("third@example.com", name="Gamma Person")
    token = admin["access_token"]
    assert listed_emails(client, token, q="ALPHA") == {"zed.alpha@example.com"}
    assert listed_emails(client, token, q="betau") == {"second@example.com"}
    assert listed_emails(client, token, q="gAmMa pErS") == {"third@example.com"}
    assert listed_emails(client, token, q="plain") == {"zed.alpha@example.com", "second@example.com"}
    assert listed_emails(client, token, q="no such text") == set()


def test_list_users_q_case_insensitive_beyond_ascii(auth, client, admin):
    """Case-insensitive search covers letters outside ASCII too."""
    auth.signup("zoe@example.com", name="Zoë ÅSTRÖM")
    auth.signup("other@example.com", name="Other Person")
    assert listed_emails(client, admin["access_token"], q="åström") == {"zoe@example.com"}
    assert listed_emails(client, admin["access_token"], q="ZOË") == {"zoe@example.com"}


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("%", {"percent@example.com"}),
        ("100%", {"percent@example.com"}),
        ("_", {"underscore@example.com"}),
        ("e_c", {"underscore@example.com"}),
        ("\\", {"backslash@example.com"}),
    ],
)
def test_list_users_q_wildcards_literal(auth, client, admin, q, expected):
    """`%`, `_` and `\\` in `q` match themselves, not any text."""
    auth.signup("percent@example.com", name="100% sure")
    auth.signup("hundred@example.com", name="100 percent sure")
    auth.signup("underscore@example.com", name="snake_case")
    auth.signup("lookalike@example.com", name="snakeXcase")
    auth.signup("backslash@example.com", name="back\\slash")
    assert listed_emails(client, admin["access_token"], q=q) == expected


def test_list_users_role_filter(auth, client, admin, user):
    """`role` keeps only users of that role."""
    other_admin = auth.make_admin()
    admins = list_users(client, admin["access_token"], role="admin")
    assert {item["id"] for item in admins["items"]} == {admin["user"]["id"], other_admin["user"]["id"]}
    assert admins["total"] == 2
    users = list_users(client, admin["access_token"], role="user")
    assert [item["id"] for item in users["items"]] == [user["user_id"]]
    assert users["total"] == 1


def test_list_users_is_active_filter(auth, client, admin, user):
    """`is_active` keeps only active, or only inactive, users."""
    inactive = auth.signup()
    assert_ok(patch_user(client, admin["access_token"], inactive["user_id"], {"is_active": False}))
    off = list_users(client, admin["access_token"], is_active="false")
    assert [item["id"] for item in off["items"]] == [inactive["user_id"]]
    on = list_users(client, admin["access_token"], is_active="true")
    assert {item["id"] for item in on["items"]} == {admin["user"]["id"], user["user_id"]}
    assert on["total"] == 2


# POST /users


def test_create_user_admin_inactive(auth, client, admin):
    """An admin creates an inactive admin: 201 with the user, and it cannot log in yet."""
    response = client.post(
        "/users",
        json={
            "email": " New.Admin@Example.COM ",
            "password": PASSWORD,
            "name": "New Admin",
            "username": "newadmin",
            "role": "admin",
            "is_active": False,
        },
        headers=bearer(admin["access_token"]),
    )
    created = assert_ok(response, 201)["user"]
    assert set(created) == USER_FIELDS
    assert created["email"] == "new.admin@example.com"
    assert (created["role"], created["is_active"], created["username"]) == ("admin", False, "newadmin")
    fetched = assert_ok(client.get(f"/users/{created['id']}", headers=bearer(admin["access_token"])))["user"]
    assert fetched == created
    assert_problem(login_response(client, "new.admin@example.com"), 403, "account_disabled")


def test_create_user_defaults_active_user(auth, client, admin):
    """Without role and is_active the new account is an active `user` that can log in."""
    response = client.post(
        "/users",
        json={"email": "plain@example.com", "password": PASSWORD, "name": "Plain"},
        headers=bearer(admin["access_token"]),
    )
    created = assert_ok(response, 201)["user"]
    assert (created["role"], created["is_active"]) == ("user", True)
    assert auth.login("plain@example.com")["user"]["id"] == created["id"]


@pytest.mark.parametrize("email", ["taken@example.com", "TAKEN@example.COM"])
def test_create_user_duplicate_email_conflict(auth, client, admin, email):
    """An existing email, in any case, is a 409 email_taken."""
    auth.signup("taken@example.com")
    response = client.post(
        "/users",
        json={"email": email, "password": PASSWORD, "name": "Twin"},
        headers=bearer(admin["access_token"]),
    )
    assert_problem(response, 409, "email_taken")
    assert list_users(client, admin["access_token"])["total"] == 2


def test_create_user_duplicate_username_conflict(auth, client, admin):
    """An existing username, in any case, is a 409 username_taken."""
    auth.signup(username="Dave")
    response = client.post(
        "/users",
        json={"email": "dave2@example.com", "password": PASSWORD, "name": "Twin", "username": "dAVE"},
        headers=bearer(admin["access_token"]),
    )
    assert_problem(response, 409, "username_taken")


def test_create_user_regular_user_forbidden(client, user):
    """A regular user may not create users."""
    response = client.post(
        "/users",
        json={"email": "x@example.com", "password": PASSWORD, "name": "X", "role": "admin"},
        headers=bearer(user["access_token"]),
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(login_response(client, "x@example.com"), 401, "invalid_credentials")


def test_create_user_without_token_unauthorized(client):
    """Creating users needs a token."""
    response = client.post("/users", json={"email": "x@example.com", "password": PASSWORD, "name": "X"})
    assert_problem(response, 401, "missing_token")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"role": "superuser"}, "role"),
        ({"role": "Admin"}, "role"),
        ({"is_active": "yes"}, "is_active"),
        ({"is_active": 1}, "is_active"),
        ({"id": str(uuid.uuid4())}, "id"),
        ({"email_verified": True}, "email_verified"),
        ({"email": "nope"}, "email"),
        ({"password": "short"}, "password"),
        ({"name": ""}, "name"),
        ({"password_confirm": "something else entirely"}, "password_confirm"),
    ],
)
def test_create_user_invalid_rejected(client, admin, extra, field):
    """Invalid input is a 400 naming the field, and no user is created."""
    body = {"email": "new@example.com", "password": PASSWORD, "name": "New", **extra}
    response = client.post("/users", json=body, headers=bearer(admin["access_token"]))
    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]
    assert list_users(client, admin["access_token"])["total"] == 1


@pytest.mark.parametrize("missing", ["email", "password", "name"])
def test_create_user_missing_field_rejected(client, admin, missing):
    """email, password and name are required."""
    body = {"email": "new@example.com", "password": PASSWORD, "name": "New"}
    del body[missing]
    response = client.post("/users", json=body, headers=bearer(admin["access_token"]))
    problem = assert_problem(response, 400, "validation_error")
    assert missing in problem["errors"]


# GET /users/{id}


def test_get_user_admin_any(client, admin, user):
    """An admin sees any user."""
    response = client.get(f"/users/{user['user_id']}", headers=bearer(admin["access_token"]))
    body = assert_ok(response)["user"]
    assert set(body) == USER_FIELDS
    assert body["id"] == user["user_id"]
    assert body["email"] == user["user"]["email"]


def test_get_user_self(client, user):
    """A user sees their own record, the same as GET /me."""
    response = client.get(f"/users/{user['user_id']}", headers=bearer(user["access_token"]))
    own = assert_ok(response)["user"]
    assert own == assert_ok(client.get("/me", headers=bearer(user["access_token"])))["user"]


def test_get_user_self_uppercase_id(client, user):
    """The own id in upper case still names the user themself."""
    response = client.get(f"/users/{user['user_id'].upper()}", headers=bearer(user["access_token"]))
    assert assert_ok(response)["user"]["id"] == user["user_id"]


def test_get_user_other_as_user_forbidden(auth, client, user):
    """A regular user may not see another user."""
    other = auth.signup()
    response = client.get(f"/users/{other['user_id']}", headers=bearer(user["access_token"]))
    assert_problem(response, 403, "forbidden")


def test_get_user_other_admin_as_user_forbidden(client, admin, user):
    """A regular user may not see an admin either."""
    response = client.get(f"/users/{admin['user']['id']}", headers=bearer(user["access_token"]))
    assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
def test_get_user_unknown_or_malformed_not_found(client, admin, user_id):
    """An admin asking for an id that names no user gets 404 not_found."""
    response = client.get(f"/users/{user_id}", headers=bearer(admin["access_token"]))
    assert_problem(response, 404, "not_found")


def test_get_user_without_token_unauthorized(client, user):
    """GET /users/{id} needs a token."""
    assert_problem(client.get(f"/users/{user['user_id']}"), 401, "missing_token")


# PATCH /users/{id}


def test_update_user_admin_changes_every_field(client, admin, user):
    """An admin changes name, email, username, role and is_active in one request."""
    response = patch_user(
        client,
        admin["access_token"],
        user["user_id"],
        {"name": "Renamed", "email": "Renamed@Example.COM", "username": "renamed", "role": "admin", "is_active": False},
    )
    changed = assert_ok(response)["user"]
    assert set(changed) == USER_FIELDS
    assert changed["name"] == "Renamed"
    assert changed["email"] == "renamed@example.com"
    assert changed["username"] == "renamed"
    assert changed["role"] == "admin"
    assert changed["is_active"] is False
    fetched = assert_ok(client.get(f"/users/{user['user_id']}", headers=bearer(admin["access_token"])))["user"]
    assert fetched == changed


def test_update_user_admin_promotes_user(auth, client, admin, user):
    """A promoted user's next login carries the admin role and can list users."""
    assert_ok(patch_user(client, admin["access_token"], user["user_id"], {"role": "admin"}))
    promoted = auth.login(user["user"]["email"])
    assert promoted["user"]["role"] == "admin"
    assert check_token(client, promoted["access_token"])["roles"] == ["admin"]
    list_users(client, promoted["access_token"])


def test_update_user_admin_email_change_unverifies(app, client, admin, user):
    """An admin's change of email unverifies it too."""
    with app.app_context():
        db.session.get(User, uuid.UUID(user["user_id"])).email_verified = True
        db.session.commit()
    response = patch_user(client, admin["access_token"], user["user_id"], {"email": "moved@example.com"})
    assert assert_ok(response)["user"]["email_verified"] is False


def test_update_user_admin_email_taken_conflict(auth, client, admin, user):
    """An admin cannot give a user another account's email."""
    auth.signup("occupied@example.com")
    response = patch_user(client, admin["access_token"], user["user_id"], {"email": "Occupied@example.com"})
    assert_problem(response, 409, "email_taken")


def test_update_user_admin_username_taken_conflict(auth, client, admin, user):
    """An admin cannot give a user another account's username, in any case."""
    auth.signup(username="Erin")
    response = patch_user(client, admin["access_token"], user["user_id"], {"username": "ERIN"})
    assert_problem(response, 409, "username_taken")


def test_update_user_admin_password_reset(auth, client, admin, user):
    """A reset password replaces the old one and voids every token the user held."""
    other = auth.login(user["user"]["email"])
    response = patch_user(client, admin["access_token"], user["user_id"], {"password": NEW_PASSWORD})
    assert_ok(response)
    assert_problem(login_response(client, user["user"]["email"]), 401, "invalid_credentials")
    for session in (user, other):
        assert check_token(client, session["access_token"])["valid"] is False
        assert_problem(client.get("/me", headers=bearer(session["access_token"])), 401, "token_revoked")
        refreshed = client.post("/refresh", json={"refresh_token": session["refresh_token"]})
        assert_problem(refreshed, 401, "token_revoked")
    fresh = auth.login(user["user"]["email"], NEW_PASSWORD)
    assert check_token(client, fresh["access_token"])["valid"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "short"}, "password"),
        ({"password": ""}, "password"),
        ({"role": "root"}, "role"),
        ({"is_active": "no"}, "is_active"),
        ({"is_active": 0}, "is_active"),
        ({"email": "nope"}, "email"),
        ({"name": "a\x00b"}, "name"),
        ({"id": str(uuid.uuid4())}, "id"),
        ({"email_verified": True}, "email_verified"),
    ],
)
def test_update_user_admin_invalid_rejected(app, client, admin, user, body, field):
    """Invalid values are a 400 naming the field, and nothing changes."""
    before = db_user(app, user["user_id"])
    response = patch_user(client, admin["access_token"], user["user_id"], body)
    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]
    assert db_user(app, user["user_id"]) == before


def test_update_user_admin_unknown_not_found(client, admin):
    """Patching an id that names no user is 404."""
    response = patch_user(client, admin["access_token"], str(uuid.uuid4()), {"name": "Ghost"})
    assert_problem(response, 404, "not_found")


def test_update_user_deactivation_voids_tokens_and_login(auth, client, admin, user):
    """A deactivated user's tokens stop working and the right password gets 403 account_disabled."""
    response = patch_user(client, admin["access_token"], user["user_id"], {"is_active": False})
    assert assert_ok(response)["user"]["is_active"] is False
    assert check_token(client, user["access_token"])["valid"] is False
    assert_problem(login_response(client, user["user"]["email"]), 403, "account_disabled")
    assert_problem(login_response(client, user["user"]["email"], "wrong password!"), 401, "invalid_credentials")


def test_update_user_deactivation_check_token_reason_user_inactive(client, admin, user):
    """/checkToken names the reason, user_inactive, and a protected endpoint answers with that code."""
    assert_ok(patch_user(client, admin["access_token"], user["user_id"], {"is_active": False}))
    verdict = check_token(client, user["access_token"])
    assert verdict["valid"] is False
    assert verdict["reason"] == "user_inactive"
    assert_problem(client.get("/me", headers=bearer(user["access_token"])), 401, "user_inactive")


def test_update_user_reactivation_old_tokens_stay_invalid(auth, client, admin, user):
    """After reactivation the old tokens remain void, but a new login works."""
    assert_ok(patch_user(client, admin["access_token"], user["user_id"], {"is_active": False}))
    response = patch_user(client, admin["access_token"], user["user_id"], {"is_active": True})
    assert assert_ok(response)["user"]["is_active"] is True
    assert check_token(client, user["access_token"])["valid"] is False
    assert_problem(client.get("/me", headers=bearer(user["access_token"])), 401, "token_revoked")
    assert_problem(client.post("/refresh", json={"refresh_token": user["refresh_token"]}), 401, "token_revoked")
    again = auth.login(user["user"]["email"])
    assert check_token(client, again["access_token"])["valid"] is True


def test_update_user_self_profile_fields(make_app):
    """A user may change their own name, email and username (without mail, the email at once)."""
    client = make_app(MAIL_URL="none").test_client()
    user = Auth(client).signup()
    response = patch_user(
        client,
        user["access_token"],
        user["user_id"],
        {"name": "Self Made", "email": "Self@Example.com", "username": "selfmade"},
    )
    changed = assert_ok(response)["user"]
    assert (changed["name"], changed["email"], changed["username"]) == ("Self Made", "self@example.com", "selfmade")
    assert assert_ok(client.get("/me", headers=bearer(user["access_token"])))["user"] == changed


@pytest.mark.parametrize(
    "body",
    [
        {"role": "admin"},
        {"role": "user"},
        {"is_active": False},
        {"password": NEW_PASSWORD},
        {"name": "Sneaky", "role": "admin"},
    ],
)
def test_update_user_self_privileged_field_forbidden(app, auth, client, user, body):
    """A user sending role, is_active or password about themself gets 403, and nothing changes."""
    before = db_user(app, user["user_id"])
    response = patch_user(client, user["access_token"], user["user_id"], body)
    assert_problem(response, 403, "forbidden")
    assert db_user(app, user["user_id"]) == before
    assert check_token(client, user["access_token"])["valid"] is True
    auth.login(user["user"]["email"])


@pytest.mark.parametrize("body", [{"name": "Hijacked"}, {"role": "admin"}, {"password": NEW_PASSWORD}])
def test_update_user_other_as_user_forbidden(app, auth, client, user, body):
    """A user editing another user gets 403, and nothing changes."""
    other = auth.signup()
    before = db_user(app, other["user_id"])
    response = patch_user(client, user["access_token"], other["user_id"], body)
    assert_problem(response, 403, "forbidden")
    assert db_user(app, other["user_id"]) == before


def test_update_user_without_token_unauthorized(client, user):
    """PATCH /users/{id} needs a token."""
    response = client.patch(f"/users/{user['user_id']}", json={"name": "Anon"})
    assert_problem(response, 401, "missing_token")


# The last active admin


@pytest.mark.parametrize("body", [{"role": "user"}, {"is_active": False}, {"role": "user", "is_active": False}])
def test_update_user_last_admin_conflict(app, client, admin, body):
    """The only active admin cannot demote or deactivate themself; nothing changes."""
    before = db_user(app, admin["user"]["id"])
    response = patch_user(client, admin["access_token"], admin["user"]["id"], body)
    assert_problem(response, 409, "last_admin")
    assert db_user(app, admin["user"]["id"]) == before
    assert check_token(client, admin["access_token"])["valid"] is True


def test_update_user_last_admin_conflict_keeps_other_changes_out(app, client, admin):
    """A refused demotion applies none of the other fields sent with it."""
    before = db_user(app, admin["user"]["id"])
    response = patch_user(client, admin["access_token"], admin["user"]["id"], {"name": "Changed", "role": "user"})
    assert_problem(response, 409, "last_admin")
    assert db_user(app, admin["user"]["id"]) == before


def test_delete_user_last_admin_conflict(app, client, admin):
    """The only active admin cannot delete themself through /users/{id}."""
    response = client.delete(
        f"/users/{admin['user']['id']}", json={"password": PASSWORD}, headers=bearer(admin["access_token"])
    )
    assert_problem(response, 409, "last_admin")
    assert db_user(app, admin["user"]["id"]) is not None


def test_update_user_two_admins_demote_one(auth, client, admin):
    """With two active admins one may be demoted; then the other is the last."""
    second = auth.make_admin()
    response = patch_user(client, admin["access_token"], second["user"]["id"], {"role": "user"})
    assert assert_ok(response)["user"]["role"] == "user"
    again = patch_user(client, admin["access_token"], admin["user"]["id"], {"role": "user"})
    assert_problem(again, 409, "last_admin")


def test_update_user_demoted_admin_token_loses_admin_rights(auth, client, admin):
    """A demoted admin's token, issued while an admin, no longer opens admin endpoints."""
    second = auth.make_admin()
    list_users(client, second["access_token"])
    assert_ok(patch_user(client, admin["access_token"], second["user"]["id"], {"role": "user"}))
    assert_problem(client.get("/users", headers=bearer(second["access_token"])), 403, "forbidden")
    assert check_token(client, second["access_token"])["roles"] == ["user"]


def test_update_user_two_admins_demote_self(auth, client, admin):
    """With another active admin an admin may demote themself."""
    auth.make_admin()
    response = patch_user(client, admin["access_token"], admin["user"]["id"], {"role": "user"})
    assert assert_ok(response)["user"]["role"] == "user"


def test_update_user_inactive_admin_does_not_count(auth, client, admin):
    """An inactive second admin does not save the active one from being the last."""
    second = auth.make_admin()
    assert_ok(patch_user(client, admin["access_token"], second["user"]["id"], {"is_active": False}))
    response = patch_user(client, admin["access_token"], admin["user"]["id"], {"role": "user"})
    assert_problem(response, 409, "last_admin")


# DELETE /users/{id}


def test_delete_user_admin_deletes_user(app, auth, client, admin, user):
    """An admin deletes a user: 404 afterwards, tokens void, login fails."""
    other_session = auth.login(user["user"]["email"])
    response = client.delete(f"/users/{user['user_id']}", headers=bearer(admin["access_token"]))
    assert_ok(response)
    assert db_user(app, user["user_id"]) is None
    fetched = client.get(f"/users/{user['user_id']}", headers=bearer(admin["access_token"]))
    assert_problem(fetched, 404, "not_found")
    for session in (user, other_session):
        assert check_token(client, session["access_token"])["valid"] is False
        assert_problem(client.get("/me", headers=bearer(session["access_token"])), 401, "token_revoked")
    assert_problem(client.post("/refresh", json={"refresh_token": user["refresh_token"]}), 401, "token_revoked")
    assert_problem(login_response(client, user["user"]["email"]), 401, "invalid_credentials")


def test_delete_user_self(app, client, user):
    """A user may delete themself through /users/{id}, with the password DELETE /me asks for."""
    response = client.delete(
        f"/users/{user['user_id']}", json={"password": PASSWORD}, headers=bearer(user["access_token"])
    )
    assert_ok(response)
    assert db_user(app, user["user_id"]) is None
    assert check_token(client, user["access_token"])["valid"] is False
    assert_problem(login_response(client, user["user"]["email"]), 401, "invalid_credentials")


@pytest.mark.parametrize("body", [None, {}, {"password": "not the password"}])
@pytest.mark.parametrize("who", ["user", "admin"])
def test_delete_user_self_without_the_password_deletes_nothing(app, client, auth, who, body):
    """The token alone cannot do through /users/{own id} what DELETE /me guards with the password."""
    caller = auth.signup() if who == "user" else auth.make_admin()
    if who == "admin":
        auth.make_admin()  # not the last admin: only the password may stop this
    kwargs = {"json": body} if body is not None else {}
    response = client.delete(f"/users/{caller['user']['id']}", headers=bearer(caller["access_token"]), **kwargs)
    if body and "password" in body:
        assert_problem(response, 401, "invalid_credentials")
    else:
        assert_problem(response, 400, "validation_error")["errors"]["password"]
    assert db_user(app, caller["user"]["id"]) is not None
    assert check_token(client, caller["access_token"])["valid"] is True


def test_admin_cannot_set_own_password_without_the_current_one(app, client, auth, admin):
    """PATCH /users/{own id} with `password` would skip the current password POST /me/password needs."""
    response = patch_user(client, admin["access_token"], admin["user"]["id"], {"password": "a brand new passphrase"})
    assert_problem(response, 400, "validation_error")["errors"]["password"]
    auth.login(admin["user"]["email"])  # the old password still works


def test_delete_user_other_as_user_forbidden(app, auth, client, user):
    """A user may not delete another user."""
    other = auth.signup()
    response = client.delete(f"/users/{other['user_id']}", headers=bearer(user["access_token"]))
    assert_problem(response, 403, "forbidden")
    assert db_user(app, other["user_id"]) is not None
    assert check_token(client, other["access_token"])["valid"] is True


@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_delete_user_unknown_not_found(client, admin, user_id):
    """Deleting an id that names no user is 404."""
    response = client.delete(f"/users/{user_id}", headers=bearer(admin["access_token"]))
    assert_problem(response, 404, "not_found")


def test_delete_user_without_token_unauthorized(app, client, user):
    """DELETE /users/{id} needs a token."""
    assert_problem(client.delete(f"/users/{user['user_id']}"), 401, "missing_token")
    assert db_user(app, user["user_id"]) is not None


def test_authentication_comes_before_validation(client):
    # An anonymous caller learns nothing about the input rules of admin endpoints.
    assert_problem(client.post("/users", json={"role": "nonsense"}), 401, "missing_token")
    assert_problem(client.get("/users", query_string={"per_page": 1000}), 401, "missing_token")

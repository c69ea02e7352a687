"""The password policy (NIST 800-63B 5.1.1.2): length, common passwords, the account's identifiers."""

from __future__ import annotations

import pytest

from app.services.passwords import common_passwords
from tests.helpers import PASSWORD, assert_problem, bearer


def test_common_password_list_is_large_and_real():
    passwords = common_passwords()
    assert len(passwords) >= 10_000
    assert {"123456", "password", "qwerty", "iloveyou"} <= passwords


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("password1", "common"),
        ("Password1", "common"),  # compared case-insensitively
        ("ＰＡＳＳＷＯＲＤ１", "common"),  # NFKC: full-width letters are the same password
        ("iloveyou", "common"),
        ("shorty7", "at least 8"),
        ("my-annabelle-pass", "email address"),
        ("MyAnnabellePass!", "email address"),
        ("zz-Bobby_T-zz", "username"),
        ("        ", "repeated"),
        ("ababababab", "repeated"),
        ("xyzxyzxyz", "repeated"),
        ("34567890", "sequential"),
        ("qponmlkjih", "sequential"),
    ],
)
def test_signup_refuses_weak_password_with_reason(client, password, reason):
    body = {"email": "annabelle@example.com", "password": password, "name": "A", "username": "bobby_t"}
    problem = assert_problem(client.post("/signup", json=body), 400, "validation_error")
    assert any(reason in message for message in problem["errors"]["password"]), problem


@pytest.mark.parametrize("password", ["correct horse battery staple", "ab!cd?ef", "Tr0ub4dor&3-x"])
def test_signup_accepts_uncommon_password_without_composition_rules(client, password):
    body = {"email": "al@example.com", "password": password, "name": "Al"}
    assert client.post("/signup", json=body).status_code == 201


def test_short_local_part_does_not_block_passwords(client):
    body = {"email": "al@example.com", "password": "always a long passphrase", "name": "Al"}
    assert client.post("/signup", json=body).status_code == 201


def test_minimum_length_comes_from_config(make_app):
    client = make_app(PASSWORD_MIN_LENGTH=15).test_client()
    body = {"email": "m@example.com", "password": "fourteen chars", "name": "M"}
    problem = assert_problem(client.post("/signup", json=body), 400, "validation_error")
    assert "at least 15" in problem["errors"]["password"][0]
    body["password"] = "fifteen chars!!"
    assert client.post("/signup", json=body).status_code == 201


def test_password_change_applies_policy(client, user):
    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "qwerty123"},
        headers=bearer(user["access_token"]),
    )
    problem = assert_problem(response, 400, "validation_error")
    assert "new_password" in problem["errors"]


def test_admin_password_reset_applies_policy(client, admin, user):
    response = client.patch(
        f"/users/{user['user_id']}", json={"password": "password"}, headers=bearer(admin["access_token"])
    )
    problem = assert_problem(response, 400, "validation_error")
    assert "password" in problem["errors"]

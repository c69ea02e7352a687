"""The token validity rules of docs/CONTRACT.md ("Token model"), one by one.

Each rule is checked where a token is judged: POST /checkToken (200, `valid: false`, `reason`),
a protected endpoint (GET /me: 401 problem+json with a Bearer challenge) and GET /validate (401).
Forged tokens start from the claims of a real token (real user, real session) and are re-signed
with the app's own secret, so each one is wrong in exactly the way its test names; the control
test shows that re-signing the unmodified claims gives a valid token.
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime

import jwt
import pytest

from app.extensions import db
from app.models import RevokedToken, Session, User
from tests.helpers import (
    PASSWORD,
    assert_accepted,
    assert_rejected,
    assert_unauthorized,
    b64,
    bearer,
    check_token,
    claims_of,
    forge,
    sign,
    unb64,
)

REQUIRED_CLAIMS = ["exp", "iat", "nbf", "jti", "sub", "type", "iss", "sid"]


# --- helpers ---------------------------------------------------------------------------------


def leeway(app) -> int:
    """The configured clock-skew tolerance, seconds."""
    return int(app.config["JWT_DECODE_LEEWAY"])


def set_user(app, user_id: str, **values) -> None:
    """Change a user's row directly in the database."""
    with app.app_context():
        row = db.session.get(User, uuid.UUID(user_id))
        for name, value in values.items():
            setattr(row, name, value)
        db.session.commit()


# --- what a valid token carries ----------------------------------------------------------------


def test_signup_access_token_has_every_claim(app, user):
    claims = claims_of(user["access_token"])
    assert claims["sub"] == user["user_id"]
    assert isinstance(claims["sub"], str)
    assert claims["type"] == "access"
    assert claims["roles"] == ["user"]
    assert claims["iss"] == app.config["JWT_ISSUER"]
    assert claims["fresh"] is True
    assert uuid.UUID(claims["sid"])
    assert claims["jti"]
    assert claims["iat"] <= claims["nbf"] <= time.time() + 1
    assert claims["exp"] - claims["iat"] == 900


def test_login_access_token_is_fresh(auth, user):
    claims = claims_of(auth.login(user["user"]["email"])["access_token"])
    assert claims["fresh"] is True
    assert claims["type"] == "access"
    assert claims["sub"] == user["user_id"]


def test_check_token_valid_response_says_whose_token(client, user):
    body = check_token(client, user["access_token"])
    claims = claims_of(user["access_token"])
    assert body["valid"] is True
    assert body["user_id"] == user["user_id"]
    assert body["email"] == user["user"]["email"]
    assert body["roles"] == ["user"]
    assert body["jti"] == claims["jti"]
    assert body["sid"] == claims["sid"]
    assert datetime.fromisoformat(body["expires_at"]) == datetime.fromtimestamp(claims["exp"], UTC)
    assert "reason" not in body


def test_check_token_accepts_bearer_header(client, user):
    response = client.post("/checkToken", headers=bearer(user["access_token"]))
    assert response.status_code == 200
    body = response.get_json()
    assert body["valid"] is True
    assert body["user_id"] == user["user_id"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"json": {}},
        {"headers": {"Authorization": "Bearer "}},
        {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
    ],
    ids=["no-body", "empty-object", "empty-bearer", "basic-auth"],
)
def test_check_token_without_token_is_missing_token(client, kwargs):
    response = client.post("/checkToken", **kwargs)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "missing_token"


def test_validate_valid_token_sets_user_headers(client, user):
    response = client.get("/validate", headers=bearer(user["access_token"]))
    assert response.status_code == 200
    assert response.headers["X-User-Id"] == user["user_id"]
    assert response.headers["X-User-Email"] == user["user"]["email"]
    assert response.headers["X-User-Roles"] == "user"


@pytest.mark.parametrize("path", ["/me", "/validate"])
def test_protected_endpoint_without_token_is_missing_token(client, path):
    assert_unauthorized(client.get(path), "missing_token")


def test_resign_unmodified_claims_is_valid(app, client, user):
    # The control for every forged token below: the forging itself does not break a token.
    assert_accepted(client, forge(app, user["access_token"]), user["user_id"])


# --- time claims -----------------------------------------------------------------------------


def test_check_expired_beyond_leeway_is_expired(app, client, user):
    exp = int(time.time()) - leeway(app) - 60
    token = forge(app, user["access_token"], exp=exp, iat=exp - 900, nbf=exp - 900)
    assert_rejected(client, token, "expired")


def test_check_expired_within_leeway_is_accepted(app, client, user):
    exp = int(time.time()) - leeway(app) // 2
    token = forge(app, user["access_token"], exp=exp, iat=exp - 900, nbf=exp - 900)
    assert_accepted(client, token, user["user_id"])


def test_check_expired_by_short_lifetime_is_expired(make_app, auth, user):
    # A real token, not a forged one: a 3-second lifetime (iat is a whole second, so a 1-second
    # one could expire before a busy machine checks it) and a wait past its exp, leeway 0.
    short = make_app(JWT_ACCESS_TOKEN_EXPIRES=3, JWT_LEEWAY=0)
    client = short.test_client()
    token = client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}).get_json()[
        "access_token"
    ]
    assert client.post("/checkToken", json={"token": token}).get_json()["valid"] is True
    time.sleep(max(0.0, claims_of(token)["exp"] - time.time()) + 0.2)
    assert_rejected(client, token, "expired")


def test_check_not_yet_valid_beyond_leeway_is_invalid(app, client, user):
    nbf = int(time.time()) + leeway(app) + 60
    token = forge(app, user["access_token"], nbf=nbf)
    assert_rejected(client, token, "invalid")


def test_check_not_yet_valid_within_leeway_is_accepted(app, client, user):
    nbf = int(time.time()) + leeway(app) // 2
    token = forge(app, user["access_token"], nbf=nbf)
    assert_accepted(client, token, user["user_id"])


# --- type ------------------------------------------------------------------------------------


def test_check_refresh_token_is_wrong_type(client, user):
    assert_rejected(client, user["refresh_token"], "wrong_type")


def test_check_refresh_token_as_bearer_is_wrong_type(client, user):
    response = client.post("/checkToken", headers=bearer(user["refresh_token"]))
    assert response.status_code == 200
    assert response.get_json()["valid"] is False
    assert response.get_json()["reason"] == "wrong_type"


def test_refresh_with_access_token_is_rejected(client, user):
    response = client.post("/refresh", json={"refresh_token": user["access_token"]})
    assert_unauthorized(response, "wrong_token_type")
    # Refused before anything was spent: the real refresh token still works.
    assert client.post("/refresh", json={"refresh_token": user["refresh_token"]}).status_code == 200


@pytest.mark.parametrize("token_type", ["id", "ACCESS", "", "refresh "])
def test_check_unknown_type_is_invalid(app, client, user, token_type):
    assert_rejected(client, forge(app, user["access_token"], type=token_type), "invalid")


# --- revocation ------------------------------------------------------------------------------


def test_revoked_jti_alone_revokes_token(app, client, user):
    claims = claims_of(user["access_token"])
    with app.app_context():
        db.session.add(
            RevokedToken(
                jti=claims["jti"],
                token_type="access",
                user_id=uuid.UUID(user["user_id"]),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        )
        db.session.commit()
    assert_rejected(client, user["access_token"], "revoked")
    # The session itself is untouched: its refresh token still works.
    assert client.post("/refresh", json={"refresh_token": user["refresh_token"]}).status_code == 200


def test_revoked_session_alone_revokes_token(app, client, user):
    sid = uuid.UUID(claims_of(user["access_token"])["sid"])
    with app.app_context():
        db.session.get(Session, sid).revoked_at = datetime.now(UTC)
        db.session.commit()
    assert_rejected(client, user["access_token"], "revoked")


def test_check_inactive_user_is_user_inactive(app, client, user):
    set_user(app, user["user_id"], is_active=False)
    assert_rejected(client, user["access_token"], "user_inactive")


def test_check_deactivated_then_reactivated_user_old_token_stays_invalid(client, admin, user):
    admin_auth = bearer(admin["access_token"])
    off = client.patch(f"/users/{user['user_id']}", json={"is_active": False}, headers=admin_auth)
    assert off.status_code == 200, off.get_json()
    on = client.patch(f"/users/{user['user_id']}", json={"is_active": True}, headers=admin_auth)
    assert on.status_code == 200, on.get_json()
    assert_rejected(client, user["access_token"], ("revoked", "user_inactive"))
    assert_unauthorized(client.post("/refresh", json={"refresh_token": user["refresh_token"]}))


def test_check_deleted_user_is_not_valid(client, user):
    response = client.delete("/me", json={"password": PASSWORD}, headers=bearer(user["access_token"]))
    assert response.status_code == 200, response.get_json()
    assert_rejected(client, user["access_token"], ("revoked", "invalid"))
    assert_unauthorized(client.post("/refresh", json={"refresh_token": user["refresh_token"]}))


def test_check_password_reset_by_admin_voids_earlier_tokens(auth, client, admin, user):
    new_password = "a brand new passphrase"
    response = client.patch(
        f"/users/{user['user_id']}", json={"password": new_password}, headers=bearer(admin["access_token"])
    )
    assert response.status_code == 200, response.get_json()
    assert_rejected(client, user["access_token"], ("revoked", "invalid"))
    assert_unauthorized(client.post("/refresh", json={"refresh_token": user["refresh_token"]}))
    fresh = auth.login(user["user"]["email"], new_password)
    assert_accepted(client, fresh["access_token"], user["user_id"])


def test_check_password_changed_after_issue_alone_voids_token(app, client, user):
    # Only the cut-off moves (no session is revoked): the iat rule alone must catch it.
    iat = claims_of(user["access_token"])["iat"]
    set_user(app, user["user_id"], tokens_valid_after=datetime.fromtimestamp(iat + 1, UTC))
    assert_rejected(client, user["access_token"], ("revoked", "invalid"))


def test_check_token_issued_after_password_change_is_valid(app, client, user):
    iat = claims_of(user["access_token"])["iat"]
    set_user(app, user["user_id"], tokens_valid_after=datetime.fromtimestamp(iat - 5, UTC))
    assert_accepted(client, user["access_token"], user["user_id"])


def test_check_unknown_user_is_not_valid(app, client, user):
    token = forge(app, user["access_token"], sub=str(uuid.uuid4()))
    assert_rejected(client, token, ("revoked", "invalid"))


def test_check_sid_of_another_users_session_is_not_valid(app, auth, client, user):
    other = auth.signup()
    token = forge(app, user["access_token"], sid=claims_of(other["access_token"])["sid"])
    assert_rejected(client, token, ("revoked", "invalid"))


def test_check_unknown_sid_is_not_valid(app, client, user):
    token = forge(app, user["access_token"], sid=str(uuid.uuid4()))
    assert_rejected(client, token, ("revoked", "invalid"))


def test_check_roles_come_from_the_database(app, client, user):
    # A validly signed token claiming admin for a plain user gives it no admin role.
    token = forge(app, user["access_token"], roles=["admin"])
    assert check_token(client, token)["roles"] == ["user"]
    assert client.get("/users", headers=bearer(token)).status_code == 403


# --- signature and algorithm -----------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("keep_signature", [False, True], ids=["no-signature", "old-signature"])
def test_check_unsigned_token_is_invalid(client, user, alg, keep_signature):
    header, payload, signature = user["access_token"].split(".")
    token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{payload}.{signature if keep_signature else ''}"
    assert_rejected(client, token, "invalid")


def test_check_pyjwt_alg_none_token_is_invalid(client, user):
    token = jwt.encode(claims_of(user["access_token"]), None, algorithm="none")
    assert_rejected(client, token, "invalid")


@pytest.mark.parametrize("claim", ["sub", "roles", "exp", "sid"])
def test_check_tampered_payload_is_invalid(auth, client, user, claim):
    other = auth.signup()
    header, payload, signature = user["access_token"].split(".")
    claims = unb64(payload)
    claims[claim] = {
        "sub": other["user_id"],
        "roles": ["admin"],
        "exp": claims["exp"] + 3600,
        "sid": claims_of(other["access_token"])["sid"],
    }[claim]
    token = f"{header}.{b64(claims)}.{signature}"
    assert_rejected(client, token, "invalid")


def test_check_bad_signature_is_invalid(client, user):
    header, payload, signature = user["access_token"].split(".")
    # Change the first character: the last one may carry only padding bits.
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert_rejected(client, f"{header}.{payload}.{flipped}", "invalid")


def test_check_signature_of_other_token_is_invalid(auth, client, user):
    other = auth.signup()
    header, payload, _ = user["access_token"].split(".")
    assert_rejected(client, f"{header}.{payload}.{other['access_token'].split('.')[2]}", "invalid")


def test_check_other_secret_is_invalid(app, client, user):
    token = sign(app, claims_of(user["access_token"]), key=secrets.token_urlsafe(48))
    assert_rejected(client, token, "invalid")


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_check_other_hmac_algorithm_with_same_secret_is_invalid(app, client, user, algorithm):
    token = sign(app, claims_of(user["access_token"]), algorithm=algorithm)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    assert_rejected(client, token, "invalid")


@pytest.mark.parametrize(
    "headers",
    [{"crit": ["exp"]}, {"crit": ["b64"], "b64": True}, {"crit": ["x-custom"], "x-custom": 1}],
    ids=["unknown", "b64-understood-by-pyjwt", "custom"],
)
def test_check_crit_header_is_invalid(app, client, user, headers):
    token = sign(app, claims_of(user["access_token"]), headers=headers)
    assert_rejected(client, token, "invalid")


# --- claims ----------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_check_missing_claim_is_invalid(app, client, user, claim):
    assert_rejected(client, forge(app, user["access_token"], drop=(claim,)), "invalid")


@pytest.mark.parametrize("issuer", ["someone-else", "", "auth-service ", ["auth-service"]])
def test_check_wrong_issuer_is_invalid(app, client, user, issuer):
    assert_rejected(client, forge(app, user["access_token"], iss=issuer), "invalid")


@pytest.mark.parametrize(
    "changes",
    [
        {"sub": 12345},
        {"sub": None},
        {"sub": ["x"]},
        {"jti": 12345},
        {"sid": 12345},
        {"type": ["access"]},
        {"exp": "tomorrow"},
        {"iat": "yesterday"},
    ],
    ids=["sub-int", "sub-null", "sub-list", "jti-int", "sid-int", "type-list", "exp-string", "iat-string"],
)
def test_check_claim_of_wrong_json_type_is_invalid(app, client, user, changes):
    assert_rejected(client, forge(app, user["access_token"], **changes), "invalid")


@pytest.mark.parametrize("claim", ["sub", "sid"])
def test_check_claim_that_is_not_a_uuid_is_invalid(app, client, user, claim):
    assert_rejected(client, forge(app, user["access_token"], **{claim: "not-a-uuid"}), "invalid")


@pytest.mark.parametrize(
    "token",
    ["abc", "a.b.c", "a.b", "...", "eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer x.y.z", "\u00e9.\u00e9.\u00e9"],
)
def test_check_garbage_is_invalid(client, token):
    assert_rejected(client, token, "invalid")


def test_check_empty_string_token_is_bad_request(client):
    response = client.post("/checkToken", json={"token": ""})
    assert response.status_code == 400
    assert response.get_json()["code"] == "missing_token"


# --- refresh tokens at /refresh ----------------------------------------------------------------


def test_refresh_expired_refresh_token_is_rejected(app, client, user):
    exp = int(time.time()) - leeway(app) - 60
    token = forge(app, user["refresh_token"], exp=exp, iat=exp - 3600, nbf=exp - 3600)
    assert_unauthorized(client.post("/refresh", json={"refresh_token": token}), "token_expired")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_refresh_token_missing_claim_is_rejected(app, client, user, claim):
    token = forge(app, user["refresh_token"], drop=(claim,))
    assert_unauthorized(client.post("/refresh", json={"refresh_token": token}), "invalid_token")
    # Nothing was spent by the refused attempt.
    assert client.post("/refresh", json={"refresh_token": user["refresh_token"]}).status_code == 200


def test_refresh_unsigned_refresh_token_is_rejected(client, user):
    _, payload, _ = user["refresh_token"].split(".")
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    assert_unauthorized(client.post("/refresh", json={"refresh_token": token}), "invalid_token")


def test_refresh_of_inactive_user_is_rejected(app, client, user):
    set_user(app, user["user_id"], is_active=False)
    assert_unauthorized(client.post("/refresh", json={"refresh_token": user["refresh_token"]}), "user_inactive")


def test_check_expired_with_other_secret_is_invalid_not_expired(app, client, user):
    # The signature is judged before the time claims: a forgery learns nothing from "expired".
    exp = int(time.time()) - leeway(app) - 60
    claims = {**claims_of(user["access_token"]), "exp": exp, "iat": exp - 900, "nbf": exp - 900}
    assert_rejected(client, sign(app, claims, key=secrets.token_urlsafe(48)), "invalid")


# --- the memory of verified tokens (TOKEN_CACHE_SIZE) ------------------------------------------

"""app/services/token_codec.py: the per-worker memory of verified tokens (the signature and claim rules are
in test_verification.py, where every consumer is checked)."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from tests.helpers import PASSWORD, assert_rejected, bearer, check_token, claims_of, forge

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def pyjwt_calls(monkeypatch):
    """How many times PyJWT really verified a token."""
    calls = []
    real = jwt.decode_complete

    def counting(token, *args, **kwargs):
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode_complete", counting)
    return calls


def test_a_token_verified_once_is_not_parsed_again(client, user, pyjwt_calls):
    token = user["access_token"]
    for _ in range(3):
        assert check_token(client, token)["valid"] is True
        assert client.get("/validate", headers=bearer(token)).status_code == 200
    assert pyjwt_calls.count(token) == 1


def test_a_failed_token_is_never_remembered(app, client, user, pyjwt_calls):
    forged = forge(app, user["access_token"], iss="someone-else")
    assert_rejected(client, forged, "invalid")
    per_round = pyjwt_calls.count(forged)
    for _ in range(2):
        assert_rejected(client, forged, "invalid")
    assert per_round >= 3 and pyjwt_calls.count(forged) == 3 * per_round  # every time, in full


def test_a_remembered_token_is_still_revoked_at_once(client, user, pyjwt_calls):
    token = user["access_token"]
    assert check_token(client, token)["valid"] is True
    assert client.post("/logout", headers=bearer(token)).status_code == 200
    assert_rejected(client, token, "revoked")
    assert pyjwt_calls.count(token) == 1


def test_a_remembered_token_expires_on_time(make_app, user, pyjwt_calls):
    short = make_app(JWT_ACCESS_TOKEN_EXPIRES=2, JWT_LEEWAY=0)
    client = short.test_client()
    login = client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}).get_json()
    token = login["access_token"]
    exp = claims_of(token)["exp"]
    while time.time() < exp - 0.5:
        assert check_token(client, token)["valid"] is True
        time.sleep(0.1)
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert_rejected(client, token, "expired")
    assert pyjwt_calls.count(token) == 1  # decided by the remembered exp, not by PyJWT again


def test_remembered_claims_are_read_only(app, user):
    from app.services import token_codec

    with app.app_context():
        claims = token_codec.decode_verified(user["access_token"]).claims
        with pytest.raises(TypeError):
            claims["sub"] = str(uuid.uuid4())  # type: ignore[index]
        assert token_codec.decode_verified(user["access_token"]).claims["sub"] == user["user_id"]


def test_token_cache_size_zero_verifies_every_time(make_app, user, pyjwt_calls):
    client = make_app(TOKEN_CACHE_SIZE=0).test_client()
    token = client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}).get_json()[
        "access_token"
    ]
    for _ in range(3):
        assert check_token(client, token)["valid"] is True
    assert pyjwt_calls.count(token) == 3


def test_the_memory_is_bounded(make_app, user, pyjwt_calls):
    small = make_app(TOKEN_CACHE_SIZE=2)
    client = small.test_client()
    tokens = [
        client.post("/login", json={"email": user["user"]["email"], "password": PASSWORD}).get_json()["access_token"]
        for _ in range(3)
    ]
    for token in tokens:  # the third pushes the first out
        assert check_token(client, token)["valid"] is True
    assert check_token(client, tokens[0])["valid"] is True
    assert pyjwt_calls.count(tokens[0]) == 2
    assert small.extensions["verified_tokens"].cache_info().currsize == 2


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_a_time_claim_that_is_not_a_number_is_invalid(app, client, user, claim):
    # RFC 7519 2: NumericDate is a JSON number; PyJWT alone accepts "1796302468" (it calls int()).
    claims = claims_of(user["access_token"])
    forged = forge(app, user["access_token"], **{claim: str(claims[claim])})
    assert check_token(client, forged) == {"success": True, "valid": False, "reason": "invalid"}
    assert client.get("/me", headers=bearer(forged)).status_code == 401

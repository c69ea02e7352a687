"""Asymmetric signing: key files, kid, JWKS, rotation, pruning, and algorithm confusion (RFC 8725)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.services import keys
from tests.helpers import PASSWORD, Auth, assert_problem, b64, check_token, claims_of


@pytest.fixture
def key_app(make_app, tmp_path):
    """Build an app signing with key files of `algorithm` in a fresh directory."""

    def build(algorithm="ES256", generate=True, **overrides):
        directory = tmp_path / "keys"
        if generate and not (directory / keys.MANIFEST).exists():
            keys.generate(directory, algorithm)
        return make_app(JWT_ALGORITHM=algorithm, JWT_KEYS_DIR=str(directory), **overrides)

    return build


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
def test_asymmetric_tokens_carry_kid_and_verify_with_the_jwks(key_app, algorithm):
    client = key_app(algorithm).test_client()
    body = Auth(client).signup("k@example.com")
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == algorithm and header["kid"]
    assert check_token(client, body["access_token"])["valid"] is True
    jwks = client.get("/.well-known/jwks.json").get_json()
    assert [key["kid"] for key in jwks["keys"]] == [header["kid"]]
    assert jwks["keys"][0]["alg"] == algorithm and jwks["keys"][0]["use"] == "sig"
    assert "d" not in jwks["keys"][0]  # never the private part
    public = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(body["access_token"], public, algorithms=[algorithm], issuer="auth-service")
    assert claims["sub"] == body["user_id"]


def test_rotation_keeps_retired_keys_verifying_until_pruned(key_app, tmp_path):
    first = key_app().test_client()
    old_token = Auth(first).signup("k@example.com")["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    keys.rotate(tmp_path / "keys", algorithm="ES256")
    second = key_app().test_client()
    new_token = Auth(second).login("k@example.com")["access_token"]
    new_kid = jwt.get_unverified_header(new_token)["kid"]
    assert new_kid != old_kid
    assert check_token(second, old_token)["valid"] is True  # the retired key still verifies
    assert check_token(second, new_token)["valid"] is True
    assert {key["kid"] for key in second.get("/.well-known/jwks.json").get_json()["keys"]} == {old_kid, new_kid}

    # Nothing is pruned while a token of the retired key can be alive…
    assert keys.prune(tmp_path / "keys", max_token_lifetime=timedelta(days=30)) == []
    # …and once it is pruned, its tokens stop verifying.
    assert keys.prune(tmp_path / "keys", max_token_lifetime=timedelta(0)) == [old_kid]
    third = key_app().test_client()
    assert check_token(third, old_token) == {"success": True, "valid": False, "reason": "invalid"}
    assert check_token(third, new_token)["valid"] is True
    assert [key["kid"] for key in third.get("/.well-known/jwks.json").get_json()["keys"]] == [new_kid]


def test_hs256_jwks_is_empty(client):
    assert client.get("/.well-known/jwks.json").get_json() == {"keys": []}


def forge(header: dict, claims: dict, sign) -> str:
    """A JWT with any header, signed by `sign(signing_input) -> bytes`."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def test_hs256_signed_with_the_public_key_is_refused_under_rs256(key_app, tmp_path):
    client = key_app("RS256").test_client()
    token = Auth(client).signup("k@example.com")["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    jwks_key = client.get("/.well-known/jwks.json").get_json()["keys"][0]
    public_pem = jwt.PyJWK(jwks_key).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = forge(
        {"alg": "HS256", "typ": "JWT", "kid": kid},
        claims_of(token),
        lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
    )
    assert check_token(client, forged) == {"success": True, "valid": False, "reason": "invalid"}


def test_rs256_token_is_refused_under_hs256(client, user):
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims_of(user["access_token"]), attacker, algorithm="RS256", headers={"kid": "x"})
    assert check_token(client, forged)["reason"] == "invalid"


def test_token_signed_by_another_key_with_a_known_kid_is_refused(key_app):
    client = key_app().test_client()
    token = Auth(client).signup("k@example.com")["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    attacker = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims_of(token), attacker, algorithm="ES256", headers={"kid": kid})
    assert check_token(client, forged)["reason"] == "invalid"


@pytest.mark.parametrize("extra", ["jwk", "jku", "x5u", "no-kid", "unknown-kid"])
def test_key_location_headers_are_never_followed(key_app, extra):
    client = key_app().test_client()
    token = Auth(client).signup("k@example.com")["access_token"]
    attacker = ec.generate_private_key(ec.SECP256R1())
    headers = {"kid": jwt.get_unverified_header(token)["kid"]}
    public_jwk = jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    if extra == "jwk":
        headers["jwk"] = public_jwk
    elif extra in ("jku", "x5u"):
        headers[extra] = "http://127.0.0.1:9/keys.json"
    elif extra == "no-kid":
        del headers["kid"]
    else:
        headers["kid"] = "attacker-kid"
    forged = jwt.encode(claims_of(token), attacker, algorithm="ES256", headers=headers)
    assert check_token(client, forged)["reason"] == "invalid"


def test_missing_keys_fail_closed(key_app):
    client = key_app(generate=False).test_client()
    assert_problem(client.get("/ready"), 503, "not_ready")
    signup_response = client.post("/signup", json={"email": "z@example.com", "password": PASSWORD, "name": "Z"})
    assert_problem(signup_response, 503, "keys_unavailable")
    well_formed = jwt.encode({"sub": "x"}, ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": "k"})
    # Whether it is valid cannot be known without the keys: 503, never a verdict.
    assert_problem(client.post("/checkToken", json={"token": well_formed}), 503, "keys_unavailable")


def test_audience_is_written_and_required_when_configured(make_app):
    client = make_app(JWT_AUDIENCE="orders-api").test_client()
    token = Auth(client).signup("k@example.com")["access_token"]
    claims = claims_of(token)
    assert claims["aud"] == "orders-api"
    assert check_token(client, token)["valid"] is True
    secret = client.application.config["JWT_SECRET_KEY"]
    for audience in (None, "billing-api"):
        forged_claims = {**claims, "aud": audience} if audience else {k: v for k, v in claims.items() if k != "aud"}
        forged = jwt.encode(forged_claims, secret, algorithm="HS256")
        assert check_token(client, forged)["reason"] == "invalid"


def test_keys_cli_generate_rotate_list_prune(make_app, tmp_path):
    app = make_app(JWT_ALGORITHM="EdDSA", JWT_KEYS_DIR=str(tmp_path / "k"))
    runner = app.test_cli_runner()
    generated = runner.invoke(args=["keys", "generate"])
    assert generated.exit_code == 0, generated.output
    assert (tmp_path / "k" / keys.MANIFEST).exists()
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (tmp_path / "k").glob("*.pem"))
    again = runner.invoke(args=["keys", "generate"])
    assert again.exit_code != 0 and "rotate" in again.output
    assert runner.invoke(args=["keys", "rotate"]).exit_code == 0
    listing = runner.invoke(args=["keys", "list"]).output
    assert listing.count("\n") == 2 and "current" in listing and "retired" in listing
    pruned = runner.invoke(args=["keys", "prune"])
    assert pruned.exit_code == 0 and "Removed 0" in pruned.output


def test_keys_cli_refuses_wrong_algorithm(make_app, tmp_path):
    keys.generate(tmp_path / "k", "ES256")
    runner = make_app(JWT_ALGORITHM="RS256", JWT_KEYS_DIR=str(tmp_path / "k")).test_cli_runner()
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code != 0 and "ES256" in result.output
    assert runner.invoke(args=["keys", "generate", "--algorithm", "HS256"]).exit_code != 0

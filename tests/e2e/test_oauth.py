"""End to end: a third-party OAuth client (Authlib's OAuth2Session) against the real server (gunicorn, TLS,
production settings): discovery, client credentials, introspection; and a deleted client's token refused
by a second instance on the same PostgreSQL within the revocation bound."""

from __future__ import annotations

import os
import re
import subprocess
import time

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.requests_client import OAuthError as AuthlibError
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from tests.e2e.server import BIN, ROOT, free_port, running_server

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery staple"
REVOCATION_BOUND_SECONDS = 1.0


def flask_clients(server, *args: str) -> str:
    """`flask clients …` on the server's database, as an operator runs it; its output."""
    env = {**os.environ, "APP_ENV": "testing", "DATABASE_URL": server.database_url, "FLASK_APP": "wsgi"}
    result = subprocess.run([str(BIN / "flask"), "clients", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def create_client(server, name: str) -> tuple[str, str]:
    """A new client's id and secret."""
    output = flask_clients(server, "create", "--name", name)
    return re.search(r"client_id: (\S+)", output).group(1), re.search(r"client_secret: (\S+)", output).group(1)


def session(server, client_id: str, secret: str) -> OAuth2Session:
    """Authlib's client, authenticating by HTTP Basic, trusting only the server's certificate."""
    oauth = OAuth2Session(client_id, secret, token_endpoint_auth_method="client_secret_basic")
    oauth.verify = str(server.cafile)
    oauth.trust_env = False  # REQUESTS_CA_BUNDLE would replace the one certificate trusted here
    return oauth


def discover(server) -> dict:
    """The RFC 8414 document, as a client finds the server."""
    response = requests.get(f"{server.base}/.well-known/oauth-authorization-server", verify=str(server.cafile))
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """The service under gunicorn with TLS and production settings, on a fresh PostgreSQL database."""
    problem = request.config.backend_problems.get("postgresql")
    if problem is not None:
        pytest.skip(f"postgresql unreachable: {problem}")
    port = free_port()
    # PUBLIC_URL: the issuer (and iss) an https URL, as RFC 8414 2 wants; the metadata's URLs start with it.
    with running_server(tmp_path_factory.mktemp("oauth"), "postgresql", workers=2, port=port,
                        PUBLIC_URL=f"https://localhost:{port}") as server:  # fmt: skip
        yield server


def test_discovery_then_client_credentials_then_introspection(server):
    metadata = discover(server)
    assert metadata["issuer"] == server.base and metadata["token_endpoint"] == f"{server.base}/oauth/token"
    assert metadata["introspection_endpoint"] == f"{server.base}/introspect"
    # Authlib's own RFC 8414 checks, but for response_types_supported, which has no true non-empty value
    # on a server without an authorization endpoint (it is [] here).
    checked = AuthorizationServerMetadata(metadata)
    for key in set(checked.REGISTRY_KEYS) - {"response_types_supported"}:
        getattr(checked, f"validate_{key}")()
    assert requests.get(metadata["jwks_uri"], verify=str(server.cafile)).status_code == 200

    client_id, secret = create_client(server, "orders")
    oauth = session(server, client_id, secret)
    token = oauth.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and token["expires_in"] == 900
    assert jwt.decode(token["access_token"], options={"verify_signature": False})["iss"] == metadata["issuer"]

    status, _, check = server.call("POST", "/checkToken", {"token": token["access_token"]})
    assert status == 200 and check["valid"] is True and check["client_id"] == client_id and "email" not in check
    status, _, me = server.call("GET", "/me", token=token["access_token"])
    assert status == 401 and me["code"] == "invalid_token"

    own = oauth.introspect_token(metadata["introspection_endpoint"], token=token["access_token"]).json()
    assert own["active"] is True and own["client_id"] == client_id and own["sub"] == f"client:{client_id}"

    status, _, user = server.call("POST", "/signup", {"email": "intro@example.com", "password": PASSWORD, "name": "I"})
    assert status == 201
    about = oauth.introspect_token(metadata["introspection_endpoint"], token=user["access_token"],
                                   token_type_hint="access_token").json()  # fmt: skip
    assert about["active"] is True and about["sub"] == user["user_id"] and about["email"] == "intro@example.com"
    for inactive in (user["refresh_token"], "garbage"):
        answer = oauth.introspect_token(metadata["introspection_endpoint"], token=inactive)
        assert answer.status_code == 200 and answer.content == b'{"active":false}'
    server.call("POST", "/logout", token=user["access_token"])
    revoked = oauth.introspect_token(metadata["introspection_endpoint"], token=user["access_token"])
    assert revoked.content == b'{"active":false}'


def test_wrong_credentials_are_invalid_client_to_authlib(server):
    client_id, _ = create_client(server, "wrong-secret")
    oauth = session(server, client_id, "not-the-secret")
    with pytest.raises(AuthlibError) as raised:
        oauth.fetch_token(f"{server.base}/oauth/token", grant_type="client_credentials")
    assert raised.value.error == "invalid_client"
    answer = oauth.introspect_token(f"{server.base}/introspect", token="x")
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


def test_a_json_body_is_refused_the_oauth_way(server):
    client_id, secret = create_client(server, "json-body")
    response = requests.post(f"{server.base}/oauth/token", json={"grant_type": "client_credentials"},
                             auth=(client_id, secret), verify=str(server.cafile))  # fmt: skip
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_a_rotated_client_loses_its_tokens_and_authlib_gets_new_ones(server):
    client_id, secret = create_client(server, "rotating")
    token = session(server, client_id, secret).fetch_token(f"{server.base}/oauth/token")["access_token"]
    output = flask_clients(server, "rotate", "rotating")
    new_secret = re.search(r"client_secret: (\S+)", output).group(1)
    assert server.call("POST", "/checkToken", {"token": token})[2]["reason"] == "revoked"
    fresh = session(server, client_id, new_secret).fetch_token(f"{server.base}/oauth/token")["access_token"]
    assert server.call("POST", "/checkToken", {"token": fresh})[2]["valid"] is True


def test_a_deleted_clients_token_is_refused_by_another_instance_in_time(server, tmp_path):
    # A second instance on the same database and secret, as a replica behind a load balancer.
    secret_key = server_secret(server)
    with running_server(tmp_path, "postgresql", workers=2, database_url=server.database_url,
                        JWT_SECRET_KEY=secret_key, PUBLIC_URL=server.base) as other:  # fmt: skip
        client_id, secret = create_client(server, "deleted")
        token = session(server, client_id, secret).fetch_token(f"{server.base}/oauth/token")["access_token"]
        for _ in range(4):  # every worker of the other instance has seen (and may remember) it as valid
            assert other.call("POST", "/checkToken", {"token": token})[2]["valid"] is True
        flask_clients(server, "delete", "deleted")
        started = time.monotonic()
        while other.call("POST", "/checkToken", {"token": token})[2]["valid"]:
            assert time.monotonic() - started < REVOCATION_BOUND_SECONDS, "the deletion was not seen in time"
            time.sleep(0.02)
        for _ in range(4):
            assert other.call("POST", "/checkToken", {"token": token})[2] == {
                "success": True,
                "valid": False,
                "reason": "revoked",
            }


def server_secret(server) -> str:
    """The JWT secret the module's server was started with (read back from its process environment)."""
    return server.jwt_secret

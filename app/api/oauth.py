"""Controllers of the OAuth 2.0 endpoints: client credentials, introspection, server metadata.

/oauth/token and /introspect answer errors as RFC 6749 5.2 says (app/oauth.py), every kind of
error included (429, 503); they are the only endpoints that do not answer problem+json.
"""

from __future__ import annotations

from flask import current_app, request
from werkzeug.exceptions import HTTPException

from app import hotpath
from app.api.auth import as_response
from app.api.openapi import Blueprint
from app.errors import AppError, as_app_error, handle_http_exception, request_id
from app.oauth import (
    FORM_CONTENT_TYPE,
    OAuthError,
    basic_credentials,
    from_app_error,
    invalid_client,
    only_basic,
    parameter,
    require_form,
    required_parameter,
)
from app.schemas.oauth import (
    INTROSPECT_REQUEST,
    OAUTH_ERROR_RESPONSES,
    TOKEN_REQUEST,
    IntrospectionSchema,
    MetadataSchema,
    OAuthTokenSchema,
)
from app.services import clients

blp = Blueprint("oauth", __name__, description="OAuth 2.0: client credentials, introspection, metadata")
GRANT_TYPES = ["client_credentials"]
AUTH_METHODS = ["client_secret_basic"]


def _form() -> dict[str, list[str]] | None:
    """The body's parameters when it is a form, else None."""
    if request.mimetype != FORM_CONTENT_TYPE:
        return None
    return request.form.to_dict(flat=False)


def _answer(error: OAuthError):
    """An OAuth error as a Flask response."""
    return as_response(hotpath.oauth_error_answer(error))


@blp.errorhandler(Exception)
def oauth_errors(error: Exception):
    """Every error of this blueprint's endpoints in OAuth's words, with the status and headers it would have had."""
    if isinstance(error, OAuthError):
        return _answer(error)
    if request.endpoint not in ("oauth.token", "oauth.introspect"):
        raise error  # the metadata documents: problem+json as everywhere else
    if isinstance(error, HTTPException):  # Flask-Limiter's 429, werkzeug's 413, …: their status and headers
        rendered = handle_http_exception(error)
        failure = AppError(error.description if rendered.status_code < 500 else None)
        failure.status = rendered.status_code
        failure.headers = {
            name: rendered.headers[name] for name in ("Retry-After", "Allow") if name in rendered.headers
        }
        error = failure
    elif not isinstance(error, AppError):
        error = as_app_error(error, request_id())  # a database outage is a 503, a bug a logged 500
    return _answer(from_app_error(error))


@blp.route("/oauth/token", methods=["POST"])
@blp.doc(requestBody=TOKEN_REQUEST, security=[{"clientBasic": []}], responses=OAUTH_ERROR_RESPONSES)
@blp.response(200, OAuthTokenSchema)
def token():
    """Client credentials grant (RFC 6749 4.4): a service client's access token.

    Form-encoded `grant_type=client_credentials`; the client authenticates by HTTP Basic
    (RFC 6749 2.3.1). The token has `sub: "client:<client_id>"`, `client_id`, `roles: ["service"]`,
    no `sid`: /checkToken and /introspect accept it, no user endpoint does. Errors are RFC 6749 5.2
    bodies (`invalid_request`, `invalid_client` 401 with `WWW-Authenticate: Basic`,
    `unsupported_grant_type`); failed authentications count against the per-IP budget of /login.
    """
    form = require_form(_form())
    credentials = basic_credentials(request.headers.get("Authorization"))
    if credentials is None:
        raise invalid_client("Authenticate with your client_id and client_secret by HTTP Basic.")
    only_basic(form)
    try:
        client_id, found = clients.authenticate(*credentials)
    except OAuthError:
        clients.record_failure(credentials[0], "token")
        raise
    grant_type = required_parameter(form, "grant_type")
    if grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", "Only grant_type=client_credentials is supported.")
    parameter(form, "scope", required=False)  # no scopes here: a requested one is ignored (RFC 6749 3.3)
    return clients.issue_token(client_id, found), {"Cache-Control": "no-store", "Pragma": "no-cache"}


@blp.route("/introspect", methods=["POST"])
@blp.doc(requestBody=INTROSPECT_REQUEST, security=[{"clientBasic": []}], responses=OAUTH_ERROR_RESPONSES)
@blp.response(200, IntrospectionSchema)
def introspect():
    """Token introspection (RFC 7662): is this token active, and whose is it.

    Form-encoded `token`, optional `token_type_hint`; the caller is a service client by HTTP
    Basic (else 401 `invalid_client` with `WWW-Authenticate: Basic`). The token is judged by the
    rules and the function of /checkToken: `active: true` with its members, or exactly
    `{"active": false}` (expired, revoked, a refresh token, garbage). Served by the fast path
    (app/hotpath.py) through the same builder; counts against /checkToken's per-IP limit. A failed
    client authentication spends the per-IP budget of /login's failures; once it is spent, 429
    `temporarily_unavailable` with `Retry-After`, before any secret is checked.
    """
    answer = hotpath.introspect_answer(_form(), request.headers.get("Authorization"), request.remote_addr, request_id())
    return as_response(answer)


def public_base() -> str:
    """The service's external base URL: PUBLIC_URL, else this request's scheme and host (trusted proxies
    rewrite them, app/proxy.py) with URL_PREFIX."""
    config = current_app.config
    return config["PUBLIC_URL"] or f"{request.host_url.rstrip('/')}{config['URL_PREFIX']}"


def metadata_cache_control() -> dict[str, str]:
    """Shared caches may keep the document only when PUBLIC_URL made it: one built from this request's
    Host must not be served to anyone else (a forged Host would poison a cache, OWASP WSTG-INPV-17)."""
    return {"Cache-Control": "public, max-age=300" if current_app.config["PUBLIC_URL"] else "no-store"}


def metadata() -> dict:
    """The RFC 8414 document (and its OpenID Connect Discovery subset)."""
    base = public_base()
    return {
        "issuer": current_app.config["JWT_ISSUER"],
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "token_endpoint": f"{base}/oauth/token",
        "introspection_endpoint": f"{base}/introspect",
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        # RFC 8414 2 requires the member; no grant here uses an authorization endpoint, so none.
        "response_types_supported": [],
        "subject_types_supported": ["public"],
    }


@blp.route("/.well-known/oauth-authorization-server", methods=["GET"])
@blp.response(200, MetadataSchema)
def authorization_server_metadata():
    """RFC 8414 authorization server metadata: the issuer (the tokens' `iss`) and the endpoints' absolute URLs.

    The URLs start with PUBLIC_URL when set, else with this request's scheme and host (from
    X-Forwarded-Proto/-Host of TRUSTED_PROXIES only) and URL_PREFIX, and are then never cached
    (`no-store`): set PUBLIC_URL in production.
    """
    return metadata(), metadata_cache_control()


@blp.route("/.well-known/openid-configuration", methods=["GET"])
@blp.response(200, MetadataSchema)
def openid_configuration():
    """OpenID Connect Discovery, the subset this service has: the same document as RFC 8414's."""
    return metadata(), metadata_cache_control()

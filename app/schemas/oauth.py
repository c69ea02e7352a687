"""Schemas (and OpenAPI fragments) of the OAuth endpoints: form bodies, token and introspection answers, metadata."""

from __future__ import annotations

from marshmallow import Schema, fields

FORM = "application/x-www-form-urlencoded"


def _form_body(properties: dict, required: list[str]) -> dict:
    """An OpenAPI requestBody of a form (the views read it themselves: app/oauth.py)."""
    return {
        "required": True,
        "content": {FORM: {"schema": {"type": "object", "properties": properties, "required": required}}},
    }


TOKEN_REQUEST = _form_body(
    {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "scope": {"type": "string", "description": "Ignored: this server has no scopes (RFC 6749 3.3)"},
    },
    ["grant_type"],
)
INTROSPECT_REQUEST = _form_body(
    {
        "token": {"type": "string", "maxLength": 8192},
        "token_type_hint": {
            "type": "string",
            "description": "access_token or refresh_token; unknown hints are ignored",
        },
    },
    ["token"],
)
_OAUTH_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "string",
            "enum": [
                "invalid_request",
                "invalid_client",
                "unsupported_grant_type",
                "temporarily_unavailable",
                "server_error",
            ],
        },
        "error_description": {"type": "string"},
    },
    "required": ["error"],
}


def _oauth_error(description: str) -> dict:
    """An OpenAPI response of an RFC 6749 5.2 error body."""
    return {"description": description, "content": {"application/json": {"schema": _OAUTH_ERROR}}}


OAUTH_ERROR_RESPONSES = {
    "400": _oauth_error("invalid_request (not a form, a parameter missing or repeated), unsupported_grant_type"),
    "401": _oauth_error("invalid_client, with WWW-Authenticate: Basic"),
    "413": _oauth_error("invalid_request: the body is over MAX_CONTENT_LENGTH"),
    "429": _oauth_error("temporarily_unavailable, with Retry-After: too many requests from this address"),
    "503": _oauth_error("temporarily_unavailable, with Retry-After: the database is unreachable"),
}


class OAuthTokenSchema(Schema):
    """200 from /oauth/token (RFC 6749 4.4.3, 5.1)."""

    access_token = fields.String()
    token_type = fields.String(metadata={"enum": ["Bearer"]})
    expires_in = fields.Integer()


class IntrospectionSchema(Schema):
    """200 from /introspect (RFC 7662 2.2): `active` and, when true, the token's members."""

    active = fields.Boolean(required=True)
    sub = fields.String(metadata={"description": 'The user id, or "client:<client_id>" for a client token'})
    username = fields.String(metadata={"description": "The user's username (when set), or the client's name"})
    email = fields.String(metadata={"description": "User tokens only"})
    roles = fields.List(fields.String())
    client_id = fields.String(metadata={"description": "Client tokens only"})
    token_type = fields.String(metadata={"enum": ["access_token"]})
    exp = fields.Integer()
    iat = fields.Integer()
    nbf = fields.Integer()
    jti = fields.String()
    iss = fields.String()
    aud = fields.Raw(metadata={"description": "When JWT_AUDIENCE is set"})
    sid = fields.String(metadata={"description": "User tokens only"})
    amr = fields.List(fields.String(), metadata={"description": "User tokens only"})


class MetadataSchema(Schema):
    """RFC 8414 authorization server metadata (also served as OpenID Connect Discovery's subset)."""

    issuer = fields.String()
    jwks_uri = fields.String()
    token_endpoint = fields.String()
    introspection_endpoint = fields.String()
    grant_types_supported = fields.List(fields.String())
    token_endpoint_auth_methods_supported = fields.List(fields.String())
    introspection_endpoint_auth_methods_supported = fields.List(fields.String())
    response_types_supported = fields.List(fields.String())
    subject_types_supported = fields.List(fields.String())

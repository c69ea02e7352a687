"""The blueprints (controllers), registered under URL_PREFIX."""

from __future__ import annotations

from flask import Flask

from app.api import auth, me, meta, users
from app.api.base import Api

BLUEPRINTS = (auth.blp, me.blp, users.blp, meta.blp)
API_DESCRIPTION = (
    "Accounts and JWTs. Errors are RFC 9457 problem documents (application/problem+json) "
    "with a stable `code`. Access tokens travel as `Authorization: Bearer <token>`."
)


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint under URL_PREFIX and document the Bearer scheme."""
    prefix = app.config["URL_PREFIX"]
    api = Api(app, spec_kwargs={"info": {"description": API_DESCRIPTION}})
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint, url_prefix=prefix or None)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})

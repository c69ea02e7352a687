"""Controllers of the operational endpoints: health, readiness, the JWK set."""

from __future__ import annotations

import hmac

from flask import current_app

from app import observability
from app.api.access import bearer_token
from app.api.openapi import Blueprint
from app.errors import MissingToken, NotFound, NotReady, TokenError
from app.schemas.meta import HealthSchema, JWKSetSchema
from app.services import health, keys

blp = Blueprint("meta", __name__, description="Operations")


@blp.route("/health", methods=["GET"])
@blp.response(200, HealthSchema)
def liveness():
    """200 while the process is up; touches nothing else."""
    # Under gunicorn each worker serves this on one thread of its own (deploy/gthread.py), so that
    # probes pass while every request thread waits on the database: keep it waiting on nothing.
    return {"status": "ok"}


@blp.route("/ready", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.problem(503, "The instance is stopping (DRAIN_FILE exists), or the database is unreachable or not migrated")
def readiness():
    """200 when the database answers and its schema is at the latest migration; 503 otherwise, and while stopping."""
    problem = health.draining_problem(current_app.config["DRAIN_FILE"])
    problem = problem or (keys.key_ring().problem and "Signing keys are unavailable; see the log.")
    problem = problem or health.readiness_problem(current_app.config["MIGRATIONS_DIR"])
    if problem is not None:
        raise NotReady(problem)
    return {"status": "ready"}


@blp.route("/metrics", methods=["GET"])
@blp.doc(
    responses={
        "200": {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}
    }
)
@blp.problem(404, "Metrics are disabled (METRICS_ENABLED=false), or closed: production without METRICS_TOKEN")
@blp.problem(401, "METRICS_TOKEN is set and the Bearer credential is not it")
def metrics():
    """Prometheus metrics of every worker: requests, latency, logins, tokens issued and revoked, reuse.

    With METRICS_TOKEN set, only for `Authorization: Bearer <METRICS_TOKEN>`; without it, only
    where METRICS_PUBLIC is true (not in production unless an operator says so)."""
    if not observability.metrics_served(current_app.config):
        raise NotFound()
    expected = current_app.config["METRICS_TOKEN"]
    if expected and not hmac.compare_digest((bearer_token() or "").encode(), expected.encode()):
        raise (
            TokenError("This needs the metrics token.")
            if bearer_token()
            else MissingToken("This needs the metrics token.")
        )
    return observability.metrics_response()


@blp.route("/.well-known/jwks.json", methods=["GET"])
@blp.response(200, JWKSetSchema)
def jwks():
    """The public keys that verify this service's tokens, each with its kid: the current key and
    retired ones whose tokens may still be alive. Empty under HS256 (a shared secret)."""
    return keys.key_ring().jwks(), {"Cache-Control": "public, max-age=300"}

"""GET /docs: Swagger UI over /openapi.json, from files the service serves itself (no CDN).

The Swagger UI build comes from the pinned swagger-ui-bundle package, so the page works offline
and in a locked-down cluster, always with the same, reviewed code (ASVS 14.2.3: no unpinned
third-party scripts). The asset URLs carry a digest of the files, so they can be cached for a
year and a new release is fetched at once.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import swagger_ui_bundle
from flask import Blueprint, Response, current_app, send_from_directory, url_for
from markupsafe import escape

from app.errors import NotFound

SWAGGER_UI_DIR = Path(str(swagger_ui_bundle.swagger_ui_path))
OWN_DIR = Path(__file__).resolve().parents[1] / "data" / "docs"
# What the page needs, and the only files served: nothing else of either folder is reachable.
ASSETS = {
    "swagger-ui.css": (SWAGGER_UI_DIR, "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": (SWAGGER_UI_DIR, "text/javascript; charset=utf-8"),
    "favicon-32x32.png": (SWAGGER_UI_DIR, "image/png"),
    "initializer.js": (OWN_DIR, "text/javascript; charset=utf-8"),
}
ONE_YEAR = 365 * 24 * 3600
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{favicon}">
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec}"></div>
<script src="{bundle}"></script>
<script src="{initializer}"></script>
</body>
</html>
"""

blp = Blueprint("docs", __name__)


@functools.cache
def assets_version() -> str:
    """A digest of every served asset: part of their URLs, so a cached copy is never stale."""
    digest = hashlib.sha256()
    for name, (folder, _) in sorted(ASSETS.items()):
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()[:16]


def _asset_url(name: str) -> str:
    """Where the page loads an asset from (under URL_PREFIX)."""
    return url_for("docs.asset", version=assets_version(), name=name)


@blp.route("/docs", methods=["GET"])
def page() -> Response:
    """The Swagger UI page; every script and style it loads is served by this service."""
    html = PAGE.format(
        title=escape(current_app.config["API_TITLE"]),
        favicon=_asset_url("favicon-32x32.png"),
        css=_asset_url("swagger-ui.css"),
        spec=escape(url_for("api-docs.openapi_json")),
        bundle=_asset_url("swagger-ui-bundle.js"),
        initializer=_asset_url("initializer.js"),
    )
    return current_app.response_class(html, mimetype="text/html")


@blp.route("/docs/assets/<version>/<name>", methods=["GET"])
def asset(version: str, name: str) -> Response:
    """One of the page's files, cached for a year: its URL changes whenever its content does."""
    if name not in ASSETS or version != assets_version():
        raise NotFound()
    folder, content_type = ASSETS[name]
    response = send_from_directory(folder, name, mimetype=content_type, max_age=ONE_YEAR, conditional=True)
    response.cache_control.immutable = True
    return response

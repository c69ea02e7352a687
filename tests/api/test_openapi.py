"""The served OpenAPI document is valid and says where the API is; /docs needs no other host."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from openapi_spec_validator import validate

from tests.helpers import assert_problem


@pytest.mark.parametrize("prefix", ["", "/auth"])
def test_openapi_document_is_valid_and_relative_to_its_server(make_app, prefix):
    # Issue 9.21: "servers" was null (invalid), and nothing validated the document.
    app = make_app(URL_PREFIX=prefix)
    response = app.test_client().get(f"{prefix}/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)  # raises with the first violation of the OpenAPI 3.0 schema
    # A relative server URL resolves against the document's own location, so the document works
    # behind any host and gateway; paths are relative to it (OpenAPI 3.0.3, 4.7.5 and 4.7.9).
    assert spec["servers"] == [{"url": prefix or "/"}]
    assert "/signup" in spec["paths"] and "/validate" in spec["paths"]
    assert not any(path.startswith("/auth/") for path in spec["paths"])
    # Every documented path answers under the server URL (a GET or the method it documents).
    client = app.test_client()
    assert client.post(f"{prefix}/checkToken", json={"token": "a.b.c"}).get_json()["valid"] is False
    assert client.get(f"{prefix}/health").status_code == 200


class References(HTMLParser):
    """Every src and href of an HTML page, and the data-spec-url."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        """Collect the URL-valued attributes."""
        self.urls += [value for name, value in attrs if name in ("src", "href", "data-spec-url") and value]


ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.mark.parametrize("prefix", ["", "/auth"])
def test_docs_page_loads_only_assets_the_service_serves(make_app, prefix):
    # Issue 9.24: /docs pulled Swagger UI from a CDN (a floating major version, no integrity):
    # a blank page offline or in a locked-down cluster.
    app = make_app(URL_PREFIX=prefix)
    client = app.test_client()
    page = client.get(f"{prefix}/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "//" not in html  # no http://, https:// or protocol-relative URL
    assert "<script>" not in html  # no inline script: the initializer is a file (CSP without unsafe-inline)
    parser = References()
    parser.feed(html)
    assert len(parser.urls) == 5, parser.urls  # favicon, stylesheet, document, bundle, initializer
    for url in parser.urls:
        assert url.startswith(f"{prefix}/"), url
        with client.get(url) as answer:
            assert answer.status_code == 200, url
            assert answer.mimetype == ASSET_TYPES[url[url.rindex(".") :]], (url, answer.mimetype)
            if "/docs/assets/" in url:
                assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                assert answer.headers["X-Content-Type-Options"] == "nosniff"
    with client.get(next(url for url in parser.urls if url.endswith("initializer.js"))) as answer:
        initializer = answer.get_data(as_text=True)
    assert "validatorUrl: null" in initializer  # Swagger UI would call validator.swagger.io otherwise
    assert "http" not in initializer


def test_docs_serves_no_other_file(client):
    url = next(url for url in _references(client.get("/docs").get_data(as_text=True)) if url.endswith(".js"))
    folder = url.rsplit("/", 1)[0]
    for name in ("index.html", "swagger-ui-bundle.js.map", "..%2F__init__.py", "oauth2-redirect.html"):
        assert_problem(client.get(f"{folder}/{name}"), 404, "not_found")
    stale = url.replace(folder.rsplit("/", 1)[1], "0" * 16)
    assert_problem(client.get(stale), 404, "not_found")


def _references(html: str) -> list[str]:
    """The URLs a page refers to."""
    parser = References()
    parser.feed(html)
    return parser.urls

"""The README's PyJWKClient recipe, run as written against a live server signing with ES256."""

from __future__ import annotations

import re

import jwt
import pytest

from app.services import keys
from tests.e2e.server import ROOT, running_server

pytestmark = pytest.mark.e2e


def readme_snippet() -> str:
    """The code between the verify-locally markers of README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- verify-locally -->\s*```python\n(.*?)```\s*<!-- /verify-locally -->", text, re.S)
    assert match, "README.md lost its verify-locally snippet"
    return match.group(1)


def test_readme_snippet_verifies_tokens_of_a_live_server(tmp_path):
    directory = tmp_path / "keys"
    keys.generate(directory, "ES256")
    with running_server(
        tmp_path, "sqlite", tls=False, workers=1, JWT_ALGORITHM="ES256", JWT_KEYS_DIR=str(directory)
    ) as server:
        status, _, body = server.call(
            "POST", "/signup", {"email": "jwks@example.com", "password": "correct horse battery staple", "name": "J"}
        )
        assert status == 201
        code = readme_snippet().replace("https://auth.example.com", server.base)
        namespace: dict = {}
        exec(compile(code, "README.md#verify-locally", "exec"), namespace)  # noqa: S102 - our own docs
        verify_locally = namespace["verify_locally"]

        claims = verify_locally(body["access_token"])
        assert claims["sub"] == body["user_id"] and claims["type"] == "access"
        with pytest.raises(jwt.InvalidTokenError):
            verify_locally(body["refresh_token"])
        head, payload, signature = body["access_token"].split(".")
        tampered = f"{head}.{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{signature}"
        with pytest.raises(jwt.InvalidTokenError):
            verify_locally(tampered)

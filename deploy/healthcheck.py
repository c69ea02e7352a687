"""Container healthcheck: GET <URL_PREFIX>/health on this container's own port; exit 0 on a 200.

Reads the settings the entrypoint reads: GUNICORN_BIND (the port), PLAIN_HTTP (the scheme),
URL_PREFIX. Liveness only: /ready (the database) is for load balancers, and restarting a
container because its database is down would not help.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping


def health_url(environ: Mapping[str, str]) -> str:
    """The URL of this instance's /health on loopback."""
    bind = environ.get("GUNICORN_BIND", "0.0.0.0:8443").strip()
    port = bind.rsplit(":", 1)[-1]
    if not port.isdigit():
        raise ValueError(f"cannot tell the port from GUNICORN_BIND={bind!r}")
    plain = environ.get("PLAIN_HTTP", "").strip().lower() in ("1", "true", "yes", "on")
    prefix = environ.get("URL_PREFIX", "").strip().strip("/")
    path = f"/{prefix}/health" if prefix else "/health"
    return f"{'http' if plain else 'https'}://127.0.0.1:{port}{path}"


def main() -> int:
    """0 when /health answers 200 within the timeout, 1 otherwise."""
    url = health_url(os.environ)
    # This asks our own process over loopback: the certificate names the public host, not
    # 127.0.0.1, so it is not verified here (clients and probes elsewhere do verify).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=context, timeout=3) as response:
            if response.status == 200:
                return 0
            print(f"healthcheck: {url} answered {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

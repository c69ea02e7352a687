"""The yardsticks: a bare Flask app and a bare WSGI callable, each answering one small JSON object.

Both are served by the service's gunicorn config (`gunicorn --config deploy/gunicorn.conf.py
bench.baseline:app`, and `bench.baseline:floor`), with the same workers and threads as the service.
A ratio to `app` measures what the service adds on top of Flask; a ratio to `floor` measures how
far the service is from what gunicorn itself can serve (no framework at all: the floor of any
Python service behind this server configuration).
"""

import json

from flask import Flask

BODY = {"success": True, "status": "ok"}

app = Flask(__name__)


@app.get("/ping")
def ping():
    """A small JSON object, as small as a /checkToken answer's envelope."""
    return BODY


# What Flask's jsonify sends for BODY (compact separators, a trailing newline), so both send the same bytes.
_FLOOR_BODY = (json.dumps(BODY, separators=(",", ":"), sort_keys=True) + "\n").encode()
_FLOOR_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(_FLOOR_BODY)))]


def floor(environ, start_response):
    """A plain WSGI callable: the same body for every request, no routing, no framework."""
    start_response("200 OK", _FLOOR_HEADERS)
    return [_FLOOR_BODY]

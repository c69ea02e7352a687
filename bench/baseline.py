"""The yardstick: a bare Flask app with one small JSON endpoint, served by the service's gunicorn config.

`gunicorn --config deploy/gunicorn.conf.py bench.baseline:app` runs it with the same workers and
threads as the service, so a ratio to it measures what the service adds on top of Flask itself.
"""

from flask import Flask

app = Flask(__name__)


@app.get("/ping")
def ping():
    """A small JSON object, as small as a /checkToken answer's envelope."""
    return {"success": True, "status": "ok"}

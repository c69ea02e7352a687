"""WSGI entry point: `gunicorn wsgi:app`, and `flask` commands (FLASK_APP=wsgi)."""

import click

from app import create_app
from config import ConfigError, exit_on_config_error

try:
    app = create_app()
except ConfigError as error:
    if click.get_current_context(silent=True) is None:
        # A gunicorn worker: the traceback goes to gunicorn, which stops (its master checked the
        # same settings before forking, deploy/gunicorn.conf.py, so this is rare).
        raise
    exit_on_config_error(error)  # a flask command: one line and exit status 1

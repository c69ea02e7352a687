#!/bin/sh
# Container start: wait for the database, migrate, then hand the process to gunicorn.
set -eu
attempts="${DB_WAIT_ATTEMPTS:-30}"
until python -c "
import sys, sqlalchemy as sa
from config import normalize_database_url
import os
engine = sa.create_engine(normalize_database_url(os.environ['DATABASE_URL']))
engine.connect().close()
" 2>/dev/null; do
  attempts=$((attempts - 1))
  if [ "$attempts" -le 0 ]; then
    echo "entrypoint: the database did not answer; giving up" >&2
    exit 1
  fi
  echo "entrypoint: waiting for the database..." >&2
  sleep 2
done
flask db upgrade
exec gunicorn --config deploy/gunicorn.conf.py "$@" wsgi:app

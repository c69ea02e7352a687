#!/bin/sh
# Container start: choose how to serve, wait for the database, migrate, then `exec gunicorn` so
# that gunicorn is the process Docker and Kubernetes signal (SIGTERM = graceful shutdown).
#
# How it serves, decided first so that a mistake fails at once (exit 64):
#   TLS_CERT_FILE + TLS_KEY_FILE  HTTPS with that certificate (Kubernetes: mounted from a Secret)
#   PLAIN_HTTP=1                  plain HTTP, only behind a TLS-terminating proxy; set
#                                 TRUSTED_PROXIES to its addresses (X-Forwarded-For/-Proto)
#   TLS_SELF_SIGNED=1             no certificate given: make a self-signed one for localhost in
#                                 TLS_SELF_SIGNED_DIR (default /tmp/auth-certs); trials only
#   none of these                 refuse to start: never plain HTTP by accident
# PLAIN_HTTP=1 together with a certificate is refused too: the two asks contradict.
#
# Other settings: DB_WAIT_TIMEOUT (seconds, default 60), MIGRATE_ON_START (default 1; 0 when a
# separate job runs `flask db upgrade`, as the Kubernetes manifests do). Arguments are passed to
# gunicorn. Nothing is written outside /tmp (and /dev/shm): the root filesystem may be read-only.
set -eu
cd "$(dirname "$0")/.."
export FLASK_APP="${FLASK_APP:-wsgi}"

log() { echo "entrypoint: $*" >&2; }
die() { log "$*"; exit 64; }

# flag NAME VALUE: true for 1/true/yes/on, false for empty/0/false/no/off, refuse anything else.
flag() {
  case "$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')" in
    1 | true | yes | on) return 0 ;;
    '' | 0 | false | no | off) return 1 ;;
    *) die "$1 must be 1 or 0, got '$2'" ;;
  esac
}

cert="${TLS_CERT_FILE:-}"
key="${TLS_KEY_FILE:-}"
if { [ -n "$cert" ] && [ -z "$key" ]; } || { [ -z "$cert" ] && [ -n "$key" ]; }; then
  die "set both TLS_CERT_FILE and TLS_KEY_FILE, or neither"
fi

if flag PLAIN_HTTP "${PLAIN_HTTP:-}"; then
  [ -z "$cert" ] || die "PLAIN_HTTP=1 and TLS_CERT_FILE/TLS_KEY_FILE are both set: choose one"
  mode="plain HTTP (PLAIN_HTTP=1): TLS must be terminated by a proxy in front;"
  mode="$mode X-Forwarded-* trusted from ${TRUSTED_PROXIES:-nobody (set TRUSTED_PROXIES)}"
elif [ -n "$cert" ]; then
  [ -r "$cert" ] || die "TLS_CERT_FILE=$cert is not a readable file"
  [ -r "$key" ] || die "TLS_KEY_FILE=$key is not a readable file"
  mode="HTTPS with $cert"
elif flag TLS_SELF_SIGNED "${TLS_SELF_SIGNED:-}"; then
  mode="self-signed"
else
  die "no TLS certificate. Set TLS_CERT_FILE and TLS_KEY_FILE (HTTPS), or PLAIN_HTTP=1 (plain HTTP" \
    "behind a TLS-terminating proxy), or TLS_SELF_SIGNED=1 (a self-signed certificate, for trials)"
fi
migrate=1
if [ -n "${MIGRATE_ON_START:-}" ] && ! flag MIGRATE_ON_START "$MIGRATE_ON_START"; then
  migrate=0
fi

# Fails fast (64) on a refused configuration, then polls the database.
python deploy/dbctl.py wait

if [ "$mode" = "self-signed" ]; then
  dir="${TLS_SELF_SIGNED_DIR:-/tmp/auth-certs}"
  flask dev-cert --out "$dir" >&2
  export TLS_CERT_FILE="$dir/cert.pem" TLS_KEY_FILE="$dir/key.pem"
  mode="HTTPS with a SELF-SIGNED certificate for localhost ($dir): for trials, not for clients"
fi

if [ "$migrate" = 1 ]; then
  python deploy/dbctl.py locked -- flask db upgrade
else
  log "MIGRATE_ON_START=0: not migrating (/ready answers 503 until the schema is at head)"
fi

log "serving $mode"
exec gunicorn --config deploy/gunicorn.conf.py "$@" wsgi:app

"""gunicorn settings for every deployment (`make run`, the container, Kubernetes).

Everything is read from the environment; command-line flags (`--bind`, `--certfile`, ...) win.
The app's settings (config.py) are checked here too, in the master before anything is bound or
forked: a refused setting stops gunicorn with one line (`auth-service: configuration error: …`)
and exit status 1, never a worker traceback after "ready".

| variable | meaning | default |
|---|---|---|
| GUNICORN_BIND | address:port to listen on | 0.0.0.0:8443 |
| GUNICORN_WORKERS | worker processes | usable CPUs (cgroup quota aware) |
| GUNICORN_THREADS | threads per gthread worker | 4 |
| GUNICORN_TIMEOUT | seconds a request may take before its worker is restarted | 30 |
| GUNICORN_GRACEFUL_TIMEOUT | seconds in-flight requests get to finish after SIGTERM | 30 |
| GUNICORN_KEEPALIVE | seconds an idle keep-alive connection is held open | 5 |
| GUNICORN_MAX_REQUESTS | restart a worker after this many requests (0 = never) | 0 |
| TLS_CERT_FILE, TLS_KEY_FILE | serve HTTPS with this certificate chain and key (both or neither) | unset: plain HTTP |
| TRUSTED_PROXIES | comma-separated IPs/CIDRs of the proxies in front, whose X-Forwarded-* are believed | none |
| GUNICORN_CONTROL_SOCKET | path of gunicorn's control socket (gunicornc) | unset: no control socket |
| GUNICORN_ACCESS_LOG | 1: gunicorn's own access log too (the app already logs every request as JSON) | off |
| PROMETHEUS_MULTIPROC_DIR | where workers keep metrics for /metrics (emptied at start) | a new folder in $TMPDIR |
"""

import math
import os
import shutil
import ssl
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from config import ConfigError, check_serving, env_int, exit_on_config_error, get_config  # noqa: E402 - needs the path above


def _cgroup_cpu_quota() -> float | None:
    """The CPU limit of this container in CPUs (cgroup v2 or v1), or None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process may really use: its affinity, capped by a container CPU limit.

    os.cpu_count() reports the whole node, so a pod limited to 1 CPU on a 64-core node would
    otherwise start 129 workers and be killed for memory.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def _app_settings():
    """The app's configuration as its workers will build it (with .env, as create_app reads it)."""
    from dotenv import load_dotenv

    load_dotenv(override=False)
    return get_config()


try:
    APP_SETTINGS = _app_settings()
    workers = env_int(os.environ, "GUNICORN_WORKERS", usable_cpus(), minimum=1)
    check_serving(APP_SETTINGS, workers)  # again in on_starting, for a --workers flag
    threads = env_int(os.environ, "GUNICORN_THREADS", 4, minimum=1)
    timeout = env_int(os.environ, "GUNICORN_TIMEOUT", 30, minimum=1)
    graceful_timeout = env_int(os.environ, "GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1)
    keepalive = env_int(os.environ, "GUNICORN_KEEPALIVE", 5, minimum=0)
    max_requests = env_int(os.environ, "GUNICORN_MAX_REQUESTS", 0, minimum=0)
    certfile = os.environ.get("TLS_CERT_FILE", "").strip() or None
    keyfile = os.environ.get("TLS_KEY_FILE", "").strip() or None
    # TLS: both files or neither; half a TLS configuration is a mistake, not plain HTTP.
    if (certfile is None) != (keyfile is None):
        raise ConfigError("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
except ConfigError as error:
    # gunicorn prints a traceback for an exception in its config file; SystemExit passes through.
    exit_on_config_error(error)

wsgi_app = "wsgi:app"
proc_name = "auth-service"
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8443")

# gthread: a few processes, each with a thread pool; the work is argon2 (releases the GIL) and
# database round-trips, so threads overlap well. deploy/gthread.py's subclass also spreads new
# connections over the workers instead of letting the first to wake take them all, and stops
# listening at once on SIGTERM.
worker_class = "deploy.gthread.BalancedThreadWorker"
# One process per usable CPU: the CPU-bound work (argon2, JWT signatures, Python itself under
# the GIL) runs one per process, so more processes than cores only add memory and context
# switches; the threads overlap the waits (database, network). Scale out with replicas.
# (workers, threads, timeout: read above.)
# SIGTERM (docker stop, Kubernetes): the master and every worker close their listening sockets at
# once (new connections are refused, so clients retry elsewhere), requests in flight get
# graceful_timeout to finish, then the workers exit. Keep terminationGracePeriodSeconds above it.
# keepalive: a proxy that pools upstream connections must close idle ones before this (nginx
# upstream keepalive_timeout below it), or it may send on a connection gunicorn is closing.
max_requests_jitter = max_requests // 10


def ssl_context(config, default_ssl_context_factory):
    """The default context with old protocol versions refused (TLS 1.2 is the floor)."""
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# Behind a TLS-terminating proxy: believe X-Forwarded-Proto only from the addresses the app
# trusts too (TRUSTED_PROXIES; unset = nobody, not gunicorn's own loopback default), so
# request.is_secure (HSTS) reflects the client's connection. The app applies X-Forwarded-For
# from the same list. Only that one header here: the other "secure scheme" headers gunicorn
# knows would let a client make its requests fail to parse.
forwarded_allow_ips = os.environ.get("TRUSTED_PROXIES", "").strip()
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
# No proxy may rewrite SCRIPT_NAME/PATH_INFO through headers; URL_PREFIX is the mount point.
forwarder_headers = ""

# The heartbeat file lives in memory: /tmp may be a slow disk, and the root filesystem is
# read-only in Kubernetes.
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
# gunicorn 25+ opens a control socket under $HOME by default: not writable on a read-only
# root filesystem, and two instances on one host would share it. Opt in with a path.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip() or "gunicorn.ctl"
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()

# The app writes one JSON line per request itself, with its request id (app/observability.py);
# gunicorn's own access log would repeat it without one. GUNICORN_ACCESS_LOG=1 turns it on.
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "").strip() in ("1", "true", "yes") else None
errorlog = "-"
# gunicorn's own lines in the app's LOG_FORMAT (JSON with ISO 8601 UTC times in production), and
# never a query string, which may carry a token (deploy/gunicorn_logging.py).
from deploy.gunicorn_logging import logger_for  # noqa: E402 - needs the path above

logger_class = logger_for(APP_SETTINGS.LOG_FORMAT)


_MADE_MARK = "AUTH_SERVICE_METRICS_DIR_MADE"  # the folder on_starting made, so on_exit removes only that


def on_starting(server):
    """Refuse a set-up whose limits would not hold; give the metrics an empty folder before any worker starts.

    Workers inherit PROMETHEUS_MULTIPROC_DIR and write their metrics there; /metrics adds up
    every worker's (app/observability.py). Files left by an earlier run would be added too.
    """
    try:
        check_serving(APP_SETTINGS, server.cfg.workers)  # the final count, should --workers override
    except ConfigError as error:
        exit_on_config_error(error)
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
    else:
        # $TMPDIR or /tmp (an emptyDir in Kubernetes): each worker maps a few MiB of files there.
        made = tempfile.mkdtemp(prefix="auth-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
        os.environ[_MADE_MARK] = made


def child_exit(server, worker):
    """A dead worker's live gauges must stop counting."""
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder this instance made for itself."""
    made = os.environ.get(_MADE_MARK)
    if made and made == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(made, ignore_errors=True)


def when_ready(server):
    """Say once, at start, how this instance serves."""
    scheme = "https" if server.cfg.certfile else "http (TLS must be terminated in front)"
    server.log.info(
        "auth-service ready: %s on %s, %d workers x %d threads, trusting X-Forwarded-Proto from %s",
        scheme,
        ", ".join(server.cfg.bind),
        server.cfg.workers,
        server.cfg.threads,
        ", ".join(server.cfg.forwarded_allow_ips) or "nobody",
    )
    _check_connection_budget(server)


def _check_connection_budget(server):
    """Warn once per instance when the workers' pools may outgrow the database's max_connections."""
    try:
        from dotenv import load_dotenv

        from app.capacity import check_connection_budget
        from config import get_config

        load_dotenv(override=False)
        check_connection_budget(get_config(), server.cfg.workers, server.log)
    except Exception as error:  # a bad setting is the workers' to report, with its message
        server.log.warning("connection budget not checked: %s", error)

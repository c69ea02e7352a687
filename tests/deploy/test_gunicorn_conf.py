"""deploy/gunicorn.conf.py: what it derives from the environment, checked by gunicorn's own settings."""

from __future__ import annotations

import os
import runpy
import ssl
from pathlib import Path

import pytest
from gunicorn.config import Config

from tests.deploy.conftest import ROOT

CONF = ROOT / "deploy" / "gunicorn.conf.py"


def load(monkeypatch, **environ: str) -> dict:
    """The config file's settings under `environ` (and nothing else gunicorn-related)."""
    for name in list(os.environ):
        if name.startswith(("GUNICORN_", "TLS_")) or name in ("TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("APP_ENV", "testing")  # the file checks the app's settings too
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def applied(namespace: dict) -> Config:
    """The settings as gunicorn validates them (an invalid value raises here)."""
    config = Config()
    for name, value in namespace.items():
        if name in config.settings:
            config.set(name, value)
    return config


def test_defaults_serve_gthread_on_8443_sized_from_the_usable_cpus(monkeypatch):
    namespace = load(monkeypatch)
    config = applied(namespace)
    cpus = namespace["usable_cpus"]()
    assert 1 <= cpus <= (os.cpu_count() or 1)
    assert config.workers == cpus
    assert config.worker_class_str == "deploy.gthread.BalancedThreadWorker" and config.threads == 4
    assert config.bind == ["0.0.0.0:8443"]
    assert (config.timeout, config.graceful_timeout, config.keepalive) == (30, 30, 5)
    assert config.certfile is None and config.keyfile is None
    assert config.wsgi_app == "wsgi:app"
    # No proxy is trusted until one is named, and nothing is written under $HOME.
    assert config.forwarded_allow_ips == []
    assert config.forwarder_headers == []
    assert config.secure_scheme_headers == {"X-FORWARDED-PROTO": "https"}
    assert config.control_socket_disable is True


def test_the_environment_overrides_every_setting(monkeypatch, tmp_path):
    config = applied(
        load(
            monkeypatch,
            GUNICORN_BIND="127.0.0.1:9000",
            GUNICORN_WORKERS="3",
            GUNICORN_THREADS="8",
            GUNICORN_TIMEOUT="60",
            GUNICORN_GRACEFUL_TIMEOUT="20",
            GUNICORN_KEEPALIVE="2",
            GUNICORN_MAX_REQUESTS="1000",
            TLS_CERT_FILE="/etc/tls/tls.crt",
            TLS_KEY_FILE="/etc/tls/tls.key",
            TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1",
            GUNICORN_CONTROL_SOCKET=str(tmp_path / "gunicorn.ctl"),
        )
    )
    assert config.bind == ["127.0.0.1:9000"]
    assert (config.workers, config.threads, config.timeout, config.graceful_timeout) == (3, 8, 60, 20)
    assert (config.keepalive, config.max_requests, config.max_requests_jitter) == (2, 1000, 100)
    assert (config.certfile, config.keyfile) == ("/etc/tls/tls.crt", "/etc/tls/tls.key")
    assert config.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]
    assert config.control_socket_disable is False
    assert config.control_socket == str(tmp_path / "gunicorn.ctl")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TLS_CERT_FILE": "/etc/tls/tls.crt"}, "set both TLS_CERT_FILE and TLS_KEY_FILE, or neither"),
        ({"TLS_KEY_FILE": "/etc/tls/tls.key"}, "set both TLS_CERT_FILE and TLS_KEY_FILE, or neither"),
        ({"GUNICORN_WORKERS": "many"}, "GUNICORN_WORKERS must be a whole number, got 'many'"),
        ({"GUNICORN_THREADS": "0"}, "GUNICORN_THREADS must be at least 1, got 0"),
        ({"JWT_ACCESS_TOKEN_EXPIRES": "15m"}, "JWT_ACCESS_TOKEN_EXPIRES must be a whole number, got '15m'"),
        ({"APP_ENV": "prod"}, "APP_ENV must be one of development, testing, production, got 'prod'"),
    ],
)
def test_nonsense_stops_start_up_with_one_clear_line(monkeypatch, capsys, environ, message):
    """gunicorn prints a traceback for an exception in its config file; SystemExit it passes on."""
    with pytest.raises(SystemExit) as stopped:
        load(monkeypatch, **environ)
    assert stopped.value.code == 1
    assert capsys.readouterr().err == f"auth-service: configuration error: {message}\n"


def test_tls_older_than_1_2_is_refused(monkeypatch):
    namespace = load(monkeypatch)
    context = namespace["ssl_context"](None, lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_worker_heartbeats_stay_off_the_root_filesystem(monkeypatch):
    namespace = load(monkeypatch)
    if os.access("/dev/shm", os.W_OK):
        assert namespace["worker_tmp_dir"] == "/dev/shm"


class FakeServer:
    """What the hooks use of gunicorn's arbiter."""

    class cfg:  # noqa: N801 - mimics the attribute
        workers = 1

    class log:  # noqa: N801 - mimics the attribute
        @staticmethod
        def info(*args):
            """Drop the message."""


def test_metrics_get_a_fresh_folder_of_their_own_and_it_is_removed_at_exit(monkeypatch, tmp_path):
    namespace = load(monkeypatch)
    # Set (to "", which counts as unset) so that monkeypatch restores whatever the hook writes.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.setenv("AUTH_SERVICE_METRICS_DIR_MADE", "")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    namespace["on_starting"](FakeServer())
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.is_dir() and made.parent == tmp_path
    namespace["on_exit"](FakeServer())
    assert not made.exists()


def test_a_given_metrics_folder_is_emptied_of_an_earlier_runs_files_and_kept(monkeypatch, tmp_path):
    namespace = load(monkeypatch)
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("AUTH_SERVICE_METRICS_DIR_MADE", "")
    namespace["on_starting"](FakeServer())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    namespace["on_exit"](FakeServer())
    assert tmp_path.is_dir()

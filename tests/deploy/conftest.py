"""Shared set-up of the deployment tests: throwaway PostgreSQL databases, the real entrypoint as a
subprocess, free loopback ports, and HTTP calls that can choose their source address.

The live tests are marked `slow`: `make test` (CI) runs them; `-m "not slow"` leaves them out.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.databases import BACKENDS, IN_CI, POSTGRES_SERVER, TEST_REDIS_URL
from tests.deploy.engine import IMAGE_REPORT

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def pytest_configure(config):
    """Register the marker of the tests that start real processes."""
    config.addinivalue_line("markers", "slow: starts real servers (gunicorn, nginx); deselect with -m 'not slow'")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """What `make image-test` measured: where its base came from, the build's time, the image's size."""
    report = config.stash.get(IMAGE_REPORT, None)
    if report:
        terminalreporter.write_sep("-", "container image")
        for name, value in report.items():
            terminalreporter.write_line(f"{name}: {value}")


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition()` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Response:
    """What an HTTP call returned."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        """The body parsed as JSON."""
        return json.loads(self.body or b"null")


def call(
    url: str,
    method: str = "GET",
    body: dict | None = None,
    headers: dict | None = None,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
    source: str | None = None,
    timeout: float = 10,
) -> Response:
    """One HTTP(S) request; `source` picks the client's loopback address (127.0.0.x)."""
    scheme, rest = url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    source_address = (source, 0) if source else None
    if scheme == "https":
        conn = http.client.HTTPSConnection(
            host, int(port), timeout=timeout, context=context, source_address=source_address
        )
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout, source_address=source_address)
    all_headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, "/" + path, body=data, headers=all_headers)
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        conn.close()


def answers(url: str, context: ssl.SSLContext | None = None, status: int = 200):
    """A condition for wait_until: `url` answers with `status`."""

    def check():
        try:
            return call(url, context=context, timeout=3).status == status
        except (OSError, http.client.HTTPException):
            return False

    return check


def trusting(cert: Path) -> ssl.SSLContext:
    """A client context that trusts exactly this certificate."""
    return ssl.create_default_context(cafile=str(cert))


class Databases:
    """Fresh PostgreSQL databases on the test server, each dropped at the end."""

    def __init__(self) -> None:
        """Nothing made yet."""
        self.urls: list[str] = []
        self.backend = BACKENDS["postgresql"]

    def url(self, create: bool = True) -> str:
        """The URL of a new database; `create=False` only names it (create it later with create())."""
        name = f"auth_deploy_{uuid.uuid4().hex[:10]}"
        url = sa.engine.make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
        self.urls.append(url)
        if create:
            self.create(url)
        return url

    def create(self, url: str) -> None:
        """Create the database a URL names."""
        name = sa.engine.make_url(url).database
        engine = sa.create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()

    def scalar(self, url: str, sql: str):
        """One value from a query on a database."""
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(sql)).scalar()
        finally:
            engine.dispose()

    def drop_all(self) -> None:
        """Drop every database named here (IF EXISTS: some were never created)."""
        for url in self.urls:
            self.backend.drop(url)


@pytest.fixture(scope="module")
def databases(request):
    """Fresh PostgreSQL databases; skipped when the server is unreachable (a failure under CI=true)."""
    problem = request.config.backend_problems.get("postgresql")
    if problem is not None:
        pytest.skip(f"postgresql unreachable: {problem}")
    made = Databases()
    yield made
    made.drop_all()


def service_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a production instance: the venv first in PATH, nothing from the caller's .env."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GUNICORN_", "TLS_", "DB_WAIT", "ARGON2_", "JWT_", "PROMETHEUS_", "AUTH_SERVICE_"))
        and key not in ("DATABASE_URL", "URL_PREFIX", "PLAIN_HTTP", "TRUSTED_PROXIES", "MIGRATE_ON_START", "APP_ENV")
    }
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "APP_ENV": "production",
            "DATABASE_URL": database_url,
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
            "URL_PREFIX": "",
            "CORS_ORIGINS": "",
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "4",
            # Production with two workers shares its per-IP limits through Redis (config.check_serving).
            "REDIS_URL": TEST_REDIS_URL,
            "RATELIMIT_KEY_PREFIX": f"t{secrets.token_hex(5)}",
            "GUNICORN_GRACEFUL_TIMEOUT": "10",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(overrides)
    return env


# In a private mount namespace: the scratch folder stays writable, then the whole root
# filesystem is remounted read-only (only here: the namespace dies with the process).
READ_ONLY_ROOT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro / && shift && exec "$@"'


def _read_only_root_works() -> bool:
    """Whether we may run a command on a read-only root filesystem (root, util-linux unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    scratch = Path(tempfile.mkdtemp(prefix="auth-deploy-probe-"))
    try:
        probe = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_ROOT, "sh", str(scratch),
             "sh", "-c", f'touch "{scratch}/ok" && ! touch "{ROOT}/.read-only-probe" 2>/dev/null'],
            cwd="/", capture_output=True, timeout=30,
        )  # fmt: skip
        return probe.returncode == 0 and (scratch / "ok").exists() and not (ROOT / ".read-only-probe").exists()
    except OSError:
        return False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def read_only_root() -> bool:
    """Whether entrypoints run with the root filesystem read-only but for their scratch folder
    and /dev/shm, as in Kubernetes (readOnlyRootFilesystem + an emptyDir on /tmp)."""
    return _read_only_root_works()


@dataclass
class Entrypoint:
    """deploy/entrypoint.sh running as a subprocess, its output in a log file."""

    env: dict[str, str]
    workdir: Path
    read_only_root: bool = False
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self) -> Entrypoint:
        """Start it (cwd is / on purpose: the script finds the project by itself).

        On a read-only root the wrapper execs the script, which execs gunicorn: one process id.
        """
        self.log_path = self.workdir / f"entrypoint-{uuid.uuid4().hex[:6]}.log"
        command = [str(ENTRYPOINT), *self.args]
        if self.read_only_root:
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_ROOT, "sh",
                       str(self.workdir), *command]  # fmt: skip
        env = {**self.env, "HOME": str(self.workdir), "TMPDIR": str(self.workdir)}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd="/", env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def running(self) -> bool:
        """Whether it is still running."""
        return self.process is not None and self.process.poll() is None

    def wait_for(self, url: str, context: ssl.SSLContext | None = None, timeout: float = 90) -> None:
        """Until `url` answers 200; fail with the log if the process dies first."""

        def up():
            if not self.running():
                pytest.fail(f"the entrypoint exited with {self.process.returncode}:\n{self.log}")
            return answers(url, context)()

        wait_until(up, timeout, f"{url}\n{self.log}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal it and wait for the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Send `sig` unless it has exited and wait for it; killed if it outlives `timeout`. Its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


@pytest.fixture
def workdir():
    """A scratch folder for one entrypoint (its /tmp: certificates, HOME, logs); removed after."""
    path = Path(tempfile.mkdtemp(prefix="auth-deploy-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_workdir():
    """As `workdir`, for module-scoped servers."""
    path = Path(tempfile.mkdtemp(prefix="auth-deploy-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def entrypoints(read_only_root):
    """Start entrypoints with `start(env, workdir)`; every one still running is stopped at the end."""
    started: list[Entrypoint] = []

    def start(env: dict[str, str], workdir: Path, args: list[str] | None = None) -> Entrypoint:
        started.append(Entrypoint(env=env, workdir=workdir, read_only_root=read_only_root, args=args or []).start())
        return started[-1]

    yield start
    for entry in started:
        entry.stop()


def flask(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a `flask` command of the venv in the project, as an operator (or a Job) would."""
    return subprocess.run(
        [str(BIN / "flask"), *args], cwd=ROOT, env={**env, "FLASK_APP": "wsgi"}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_problem() -> str | None:
    """None when the test Redis answers PING, else why not."""
    address = sa.engine.make_url(REDIS_URL.replace("redis://", "redis+x://", 1))
    try:
        with socket.create_connection((address.host or "127.0.0.1", address.port or 6379), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as error:
        return f"{REDIS_URL}: {error}"
    return None if answer.startswith(b"+PONG") else f"{REDIS_URL} answered {answer!r}"


def require_or_skip(problem: str) -> None:
    """Skip with `problem` locally; fail under CI=true, where everything must run."""
    if IN_CI:
        pytest.fail(f"CI=true: {problem}")
    pytest.skip(problem)


def find_binary(name: str, fallback: str) -> str | None:
    """A Debian package's binary on PATH, or at `fallback` (/usr/sbin is not in every PATH)."""
    found = shutil.which(name)
    if found:
        return found
    return fallback if os.access(fallback, os.X_OK) else None


def apt_install(package: str, name: str, fallback: str) -> str | None:
    """apt-get install `package` (refreshing the package lists once if needed); None or why not."""
    if shutil.which("apt-get") is None:
        return f"{package} is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return f"{package} is not installed and installing it needs root: apt-get install {package}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or find_binary(name, fallback) is None:
        return f"apt-get install {package} failed: {(result.stderr or result.stdout).strip()[-500:]}"
    return None


def debian_binary(package: str, fallback: str) -> str:
    """The package's binary, installed when missing; a skip locally (a failure under CI) if impossible."""
    binary = find_binary(package, fallback)
    if binary is None:
        problem = apt_install(package, package, fallback)
        if problem is not None:
            require_or_skip(problem)
        binary = find_binary(package, fallback)
    assert binary is not None
    return binary


# The password the gateway tests sign up with.
GATEWAY_PASSWORD = "correct horse battery staple"


def gw(gateway, path: str, method: str = "GET", **kwargs):
    """A call through the gateway over HTTPS."""
    return call(gateway["base"] + path, method, context=gateway["context"], timeout=10, **kwargs)


def signup(gateway, email: str) -> dict:
    """Sign up through the gateway."""
    response = gw(gateway, "/auth/signup", "POST", body={"email": email, "password": GATEWAY_PASSWORD, "name": "Gate"})
    assert response.status == 201, response.body
    return response.json()

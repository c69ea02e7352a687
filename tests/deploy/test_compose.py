"""docker-compose.yml against the Compose Specification JSON schema, and the project's own rules.

The schema is the copy check-jsonschema ships (check_jsonschema/builtin_schemas/vendor/
compose-spec.json, from github.com/compose-spec/compose-spec, pinned through requirements-dev.txt),
read as a file without importing check-jsonschema. Validation is `jsonschema`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = ("JWT_SECRET_KEY", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME, and $$ (a literal $).
VARIABLE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
)


def compose_schema() -> dict:
    """The Compose Specification schema shipped in the check-jsonschema package."""
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations, "pip install -r requirements-dev.txt"
    path = Path(spec.submodule_search_locations[0]) / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


def interpolate(value, env: dict[str, str], missing: list[str]):
    """Compose's variable interpolation over every string of a parsed file; names of required
    variables that are unset are collected in `missing`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env, missing) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, missing) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg, current = match.group("op"), match.group("arg") or "", env.get(name)
        if op is None:
            return current or ""
        unset = not current if op.startswith(":") else current is None
        if not unset:
            return current
        if op.endswith("?"):
            missing.append(name)
            return ""
        return arg

    return VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    """docker-compose.yml, parsed."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_file_follows_the_compose_specification(compose):
    jsonschema.validate(compose, compose_schema(), cls=jsonschema.Draft202012Validator)


def test_the_schema_check_catches_a_broken_file(compose):
    broken = {**compose, "services": {**compose["services"], "auth": {**compose["services"]["auth"], "restrat": "no"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema(), cls=jsonschema.Draft202012Validator)


def test_compose_refuses_to_start_without_the_secrets(compose):
    missing: list[str] = []
    interpolate(compose, {}, missing)
    assert set(missing) == set(SECRETS)
    assert "${JWT_SECRET_KEY:?" in compose["services"]["auth"]["environment"]["JWT_SECRET_KEY"]


def test_compose_file_with_its_secrets_set_is_still_valid(compose):
    missing: list[str] = []
    env = {"JWT_SECRET_KEY": "k" * 48, "POSTGRES_PASSWORD": "pw-from-env", "RABBITMQ_PASSWORD": "mq-from-env"}
    resolved = interpolate(compose, env, missing)
    assert missing == []
    jsonschema.validate(resolved, compose_schema(), cls=jsonschema.Draft202012Validator)
    auth = resolved["services"]["auth"]["environment"]
    assert auth["DATABASE_URL"] == "postgresql://auth:pw-from-env@auth-db:5432/auth"
    assert auth["JWT_SECRET_KEY"] == "k" * 48
    assert auth["EVENTS_AMQP_URL"] == "amqp://auth:mq-from-env@rabbitmq:5672/%2F"
    assert resolved["services"]["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"] == "mq-from-env"
    # Without a certificate of one's own: HTTPS with a self-signed one, never plain HTTP.
    assert (auth["TLS_CERT_FILE"], auth["PLAIN_HTTP"], auth["TLS_SELF_SIGNED"]) == ("", "0", "1")


def test_no_secret_is_written_into_the_compose_file(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET")):
                assert str(value).startswith("${") and ":?" in str(value), (name, key)


def test_auth_db_is_healthchecked_with_its_own_named_volume(compose):
    db = compose["services"]["auth-db"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume, target = db["volumes"][0].split(":")[:2]
    assert target == "/var/lib/postgresql/data"
    assert volume in compose["volumes"], "a named volume, declared at the top level"


def test_auth_starts_only_when_its_dependencies_are_healthy(compose):
    auth = compose["services"]["auth"]
    assert auth["depends_on"]["auth-db"] == {"condition": "service_healthy"}
    assert auth["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "healthcheck" in compose["services"]["redis"]
    assert auth["environment"]["REDIS_URL"].startswith("redis://redis:")


def test_auth_runs_like_in_kubernetes(compose):
    auth = compose["services"]["auth"]
    assert auth["ports"] == ["8443:8443"]
    assert auth["read_only"] is True and "/tmp" in auth["tmpfs"]
    assert auth["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in auth["security_opt"]
    assert auth["environment"]["APP_ENV"] == "production"


def test_the_outbox_worker_runs_beside_the_service_from_the_same_image(compose):
    worker, auth = compose["services"]["outbox-worker"], compose["services"]["auth"]
    assert worker["image"] == auth["image"]
    assert worker["entrypoint"] == ["flask", "outbox", "run"]
    assert worker["depends_on"]["auth-db"] == {"condition": "service_healthy"}
    names = ("DATABASE_URL", "JWT_SECRET_KEY", "MAIL_URL", "MAIL_FROM", "FRONTEND_URL", "APP_ENV", "EVENTS_AMQP_URL")
    for name in (*names, "EVENTS_EXCHANGE"):
        assert worker["environment"][name] == auth["environment"][name], name
    assert worker["read_only"] is True and worker["cap_drop"] == ["ALL"]


def test_the_worker_relays_events_to_a_healthchecked_rabbitmq_with_its_own_volume(compose):
    worker, broker = compose["services"]["outbox-worker"], compose["services"]["rabbitmq"]
    assert worker["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert "@rabbitmq:5672/" in worker["environment"]["EVENTS_AMQP_URL"]
    assert broker["image"].startswith("rabbitmq:")
    assert "rabbitmq-diagnostics" in broker["healthcheck"]["test"]
    assert "${RABBITMQ_PASSWORD:?" in broker["environment"]["RABBITMQ_DEFAULT_PASS"]
    volume, target = broker["volumes"][0].split(":")[:2]
    assert target == "/var/lib/rabbitmq" and volume in compose["volumes"]

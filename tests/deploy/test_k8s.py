"""deploy/k8s/: every manifest against the Kubernetes API schemas (kubernetes-validate, strict: an
unknown field is an error), and the properties the service depends on."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import utils as k8s

from config import ConfigError, get_config
from tests.deploy.conftest import ROOT

K8S_DIR = ROOT / "deploy" / "k8s"
# The oldest Kubernetes these manifests are meant for; every API they use is GA there.
KUBERNETES_VERSION = "1.33.0"
MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))


def load(path: Path) -> list[dict]:
    """The documents of one manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    """Every object, by kind (one of each kind here)."""
    found: dict[str, dict] = {}
    for path in MANIFESTS:
        for doc in load(path):
            # The outbox worker is the one second Deployment: "Deployment/auth-outbox-worker".
            key = (
                doc["kind"]
                if doc["metadata"]["name"] != "auth-outbox-worker"
                else f"{doc['kind']}/{doc['metadata']['name']}"
            )
            assert key not in found, f"two {doc['kind']} objects: adapt this test"
            found[key] = doc
    return found


def test_the_expected_manifests_are_there(objects):
    assert set(objects) >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "Job",
        "CronJob",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
    }


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifest_is_valid_for_kubernetes_in_strict_mode(path):
    for doc in load(path):
        k8s.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_misspelled_field(objects):
    broken = copy.deepcopy(objects["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(k8s.ValidationError):
        k8s.validate(broken, KUBERNETES_VERSION, strict=True)


def pod_spec(obj: dict) -> dict:
    """The pod template's spec of a Deployment, Job or CronJob."""
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def assert_hardened(pod: dict) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities, /tmp writable."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "the only writable place is an emptyDir on /tmp"


def test_deployment_probes_health_and_ready_over_https(objects):
    container = pod_spec(objects["Deployment"])["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"https": 8443}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "https", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "https", "scheme": "HTTPS"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    # The probes' paths are only right when the service is mounted at the root.
    assert objects["ConfigMap"]["data"]["URL_PREFIX"] == ""


def test_deployment_pods_are_hardened(objects):
    assert_hardened(pod_spec(objects["Deployment"]))


def test_deployment_serves_with_the_mounted_tls_secret(objects):
    pod = pod_spec(objects["Deployment"])
    config = objects["ConfigMap"]["data"]
    mounts = {mount["name"]: mount for mount in pod["containers"][0]["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    tls_dir = mounts["tls"]["mountPath"]
    assert volumes["tls"]["secret"]["secretName"] == "auth-tls"
    assert (config["TLS_CERT_FILE"], config["TLS_KEY_FILE"]) == (f"{tls_dir}/tls.crt", f"{tls_dir}/tls.key")
    assert "PLAIN_HTTP" not in config


def test_shutdown_fits_in_the_grace_period(objects):
    """A preStop pause takes the pod out of the endpoints before SIGTERM makes gunicorn refuse
    connections; the grace period covers the pause and gunicorn's graceful timeout."""
    pod = pod_spec(objects["Deployment"])
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"]
    # Readiness fails first: the hook creates DRAIN_FILE (/ready then answers 503), on a writable /tmp.
    touch, sleep = command[2].split(" && ")
    assert touch == 'touch "$DRAIN_FILE"' and objects["ConfigMap"]["data"]["DRAIN_FILE"].startswith("/tmp/")
    assert any(mount["mountPath"] == "/tmp" for mount in pod["containers"][0]["volumeMounts"])
    pause = int(sleep.split()[-1])
    assert pause >= 3, "endpoints need a few seconds to drop the pod"
    graceful = int(objects["ConfigMap"]["data"]["GUNICORN_GRACEFUL_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > pause + graceful


def test_the_migration_job_runs_flask_db_upgrade_with_the_deployments_image(objects):
    job, deployment = objects["Job"], objects["Deployment"]
    pod = pod_spec(job)
    command = " ".join(pod["containers"][0]["command"])
    assert "flask db upgrade" in command
    assert "dbctl.py wait" in command and "dbctl.py locked" in command
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["image"] == pod_spec(deployment)["containers"][0]["image"]
    assert pod["containers"][0]["envFrom"] == pod_spec(deployment)["containers"][0]["envFrom"]
    assert_hardened(pod)
    # Serving pods leave migrations to the Job.
    assert objects["ConfigMap"]["data"]["MIGRATE_ON_START"] == "0"


def test_the_purge_cronjob_runs_purge_tokens(objects):
    pod = pod_spec(objects["CronJob"])
    assert pod["containers"][0]["command"] == ["flask", "purge-tokens"]
    assert objects["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"
    assert_hardened(pod)


def test_selectors_pick_the_serving_pods_only(objects):
    serving = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    others = [
        pod["metadata"]["labels"]
        for pod in (objects["Job"]["spec"]["template"], objects["Deployment/auth-outbox-worker"]["spec"]["template"])
    ]
    others.append(objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
    for selector in (
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        objects["Deployment"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= serving.items()
        for labels in others:
            assert not selector.items() <= labels.items(), "a job pod would receive traffic"


def test_autoscaler_disruption_budget_service_and_ingress_fit_together(objects):
    deployment, service = objects["Deployment"], objects["Service"]
    hpa, pdb, ingress = objects["HorizontalPodAutoscaler"], objects["PodDisruptionBudget"], objects["Ingress"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "auth"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 8443, "targetPort": "https", "protocol": "TCP", "appProtocol": "https"}
    ]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "https"}}
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"


def test_the_example_secret_cannot_be_deployed_as_it_is(objects):
    settings = {**objects["ConfigMap"]["data"], **objects["Secret"]["stringData"]}
    with pytest.raises(ConfigError, match="placeholder"):
        get_config(settings)


def test_the_pods_get_a_metrics_token_and_metrics_stay_closed_without_one(objects):
    """Production answers /metrics only with METRICS_TOKEN (scraped as a Bearer credential)."""
    settings = {**objects["ConfigMap"]["data"], **objects["Secret"]["stringData"]}
    assert "METRICS_TOKEN" in objects["Secret"]["stringData"] and "METRICS_PUBLIC" not in settings
    settings.update(JWT_SECRET_KEY="k" * 48, METRICS_TOKEN="m" * 32)
    assert get_config(settings).METRICS_PUBLIC is False
    with pytest.raises(ConfigError, match="METRICS_TOKEN looks like a placeholder"):
        get_config({**settings, "METRICS_TOKEN": objects["Secret"]["stringData"]["METRICS_TOKEN"]})


def test_the_outbox_worker_runs_flask_outbox_run_with_the_services_image_and_settings(objects):
    worker, deployment = objects["Deployment/auth-outbox-worker"], objects["Deployment"]
    pod = pod_spec(worker)
    container = pod["containers"][0]
    assert container["command"] == ["flask", "outbox", "run"]
    assert container["image"] == pod_spec(deployment)["containers"][0]["image"]
    assert container["envFrom"] == pod_spec(deployment)["containers"][0]["envFrom"]
    assert_hardened(pod)
    config = objects["ConfigMap"]["data"]
    assert {port["containerPort"] for port in container["ports"]} == {int(config["OUTBOX_METRICS_PORT"])}
    # The worker has time to finish the mail in hand after SIGTERM.
    assert pod["terminationGracePeriodSeconds"] > int(config["MAIL_TIMEOUT"])


def test_the_mail_settings_start_in_production(objects):
    settings = {**objects["ConfigMap"]["data"], **objects["Secret"]["stringData"]}
    config = get_config({**settings, "JWT_SECRET_KEY": "k" * 48, "METRICS_TOKEN": "m" * 32})
    assert config.MAIL_URL.startswith("smtp://") and config.FRONTEND_URL == "https://app.example.com"
    assert config.PASSWORD_RESET_URL == "https://app.example.com/reset-password?token={token}"


def test_the_events_settings_reach_the_api_and_the_relay(objects):
    """Both Deployments read auth-config and auth-secrets: the API writes events, the worker relays them."""
    settings = {**objects["ConfigMap"]["data"], **objects["Secret"]["stringData"]}
    config = get_config({**settings, "JWT_SECRET_KEY": "k" * 48, "METRICS_TOKEN": "m" * 32})
    assert config.EVENTS_AMQP_URL.startswith("amqps://") and config.EVENTS_EXCHANGE == "auth.events"
    assert "EVENTS_AMQP_URL" not in objects["ConfigMap"]["data"], "it holds the broker password: the Secret"
    for name in ("Deployment", "Deployment/auth-outbox-worker"):
        sources = pod_spec(objects[name])["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "auth-secrets"}} in sources
        assert {"configMapRef": {"name": "auth-config"}} in sources

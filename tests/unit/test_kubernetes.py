"""deploy/kubernetes/: every manifest validates offline against the Kubernetes JSON schemas
(strict: unknown fields are errors) of the oldest and newest versions kubernetes-validate
ships, and the relay's Deployment has what production needs: probes on the relay's health
endpoints, resources, a non-root security context, a disruption budget, scrape annotations,
credentials from Secrets and settings from a ConfigMap."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, latest_version

from relay.settings import RelaySettings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy/kubernetes").glob("*.yaml"))
VERSIONS = sorted({min(all_versions()), latest_version()})


def documents() -> list[dict[str, Any]]:
    return [
        document
        for path in MANIFESTS
        for document in yaml.safe_load_all(path.read_text())
        if document is not None
    ]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    kinds = {d["kind"] for d in documents()}
    assert {"Deployment", "Job", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds
    for document in documents():
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = copy.deepcopy(one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)
    deployment = copy.deepcopy(one("Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


def test_relay_deployment_is_production_shaped() -> None:
    deployment = one("Deployment", "vertector-relay")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (relay,) = spec["containers"]
    assert relay["args"] == ["run"]
    port = RelaySettings.model_fields["metrics_port"].default
    assert relay["ports"] == [{"name": "metrics", "containerPort": port}]
    assert relay["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert relay["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert relay["resources"]["requests"] and relay["resources"]["limits"]["memory"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert relay["securityContext"]["allowPrivilegeEscalation"] is False
    assert relay["securityContext"]["readOnlyRootFilesystem"] is True
    assert relay["securityContext"]["capabilities"]["drop"] == ["ALL"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    # Each replica names itself after its pod: two relays never share an instance name.
    (name,) = [e for e in relay["env"] if e["name"] == "RELAY_INSTANCE_NAME"]
    assert name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert deployment["spec"]["replicas"] >= 2

    budget = one("PodDisruptionBudget", "vertector-relay")
    assert (
        budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    assert budget["spec"]["minAvailable"] >= 1
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_credentials_come_from_secrets_and_settings_from_a_config_map() -> None:
    relay = one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    sources = relay["envFrom"]
    config = one("ConfigMap", sources[0]["configMapRef"]["name"])
    credentials = one("Secret", sources[1]["secretRef"]["name"])
    assert {"OUTBOX_DATABASE_URL", "NATS_USERNAME", "NATS_PASSWORD"} <= set(
        credentials["stringData"]
    )
    secret_words = ("PASSWORD", "TOKEN", "DATABASE_URL", "SEED", "CREDENTIALS")
    leaked = [key for key in config["data"] if any(word in key for word in secret_words)]
    assert not leaked, f"credentials in the ConfigMap: {leaked}"
    assert config["data"]["NATS_ENABLE_AUTH"] == "true"
    assert not [e for e in relay.get("env", []) if "value" in e and "PASSWORD" in e["name"]]

    job = one("Job", "vertector-migrate")
    pod = job["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    assert migrate["args"] == ["migrate"]
    owner = one("Secret", migrate["envFrom"][0]["secretRef"]["name"])
    assert owner["metadata"]["name"] != credentials["metadata"]["name"]
    (roles,) = pod["containers"]
    assert "/sql/roles.sql" in " ".join(roles["command"])
    assert pod["securityContext"]["runAsNonRoot"] is True

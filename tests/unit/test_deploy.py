"""Deployment files that cannot run here (no Docker engine) are checked for what can be known:
the compose file's structure, the dashboard's metric names, the image's commands."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

from relay.cli import _parser
from relay.metrics import RelayMetrics
from relay.stats import RelayStats

ROOT = Path(__file__).resolve().parents[2]


def exported_names() -> set[str]:
    from prometheus_client import REGISTRY

    import outbox_client.consumer

    stats = RelayStats()
    stats.by_type[("S", "t")] = 1
    stats.retries["x"] = 1
    stats.quarantined["x"] = 1
    names = RelayMetrics(stats).names()
    outbox_client.consumer.HANDLER_SECONDS.labels("probe").observe(0.1)
    for metric in REGISTRY.collect():
        names |= {sample.name for sample in metric.samples} | {metric.name}
    names |= {
        f"vertector_consumer_{n}_total"
        for n in ("processed", "failed", "redelivered", "dead_lettered")
    }
    return names


def test_dashboard_uses_only_metrics_the_code_exports() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/vertector-outbox.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"vertector_[a-z_]+", expr)}
    missing = used - exported_names()
    assert not missing, f"dashboard queries metrics nobody exports: {sorted(missing)}"
    assert len(used) >= 15


def test_compose_file_holds_the_described_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "nats", "migrate", "streams", "relay", "notes-consumer"} <= set(services)
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    assert "3000:3000" in services["grafana"]["ports"]
    assert "8222:8222" in services["nats"]["ports"]
    assert services["migrate"]["entrypoint"][:1] == ["alembic"]
    assert services["streams"]["command"] == ["streams", "apply"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    nats_conf = (ROOT / "deploy/nats/nats.conf").read_text()
    assert "sync_interval: always" in nats_conf
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert "relay:9464" in prometheus["scrape_configs"][0]["static_configs"][0]["targets"]


def test_image_entrypoint_and_healthcheck_exist_in_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["vertector-relay"]' in dockerfile
    assert 'CMD ["run"]' in dockerfile
    assert 'CMD ["vertector-relay", "check"]' in dockerfile
    assert "USER relay" in dockerfile
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["vertector-relay"] == "relay.cli:main"
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"run", "check", "streams", "migrate", "status"} <= set(commands)
    import examples.notes_consumer  # noqa: F401 - the compose consumer's module exists


def test_compose_config_when_docker_compose_is_available() -> None:
    import subprocess

    import pytest

    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0
    ):
        pytest.skip("docker compose is not installed here (no Docker on this machine)")
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr

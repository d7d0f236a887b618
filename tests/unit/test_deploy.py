"""Deployment files, checked for what can be known without a Docker engine: the compose file's
structure and least privilege, the dashboard's metric names, the image's commands; and the
compose file against the real docker-compose (1.29) / `docker compose` (v2) where those are
installed. `make deploy-check` runs the stack in real containers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
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
    assert services["migrate"]["command"] == ["migrate"]  # vertector-relay migrate
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
    assert "relay:9464" in scrape_targets(prometheus)


def test_image_entrypoint_and_healthcheck_exist_in_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["vertector-relay"]' in dockerfile
    assert 'CMD ["run"]' in dockerfile
    assert 'CMD ["vertector-relay", "check"]' in dockerfile
    assert "USER 10001:10001" in dockerfile  # numeric, so runAsNonRoot can verify it
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["vertector-relay"] == "relay.cli:main"
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"run", "check", "streams", "migrate", "status"} <= set(commands)
    import examples.notes_consumer  # noqa: F401 - the compose consumer's module exists


COMPOSE = ROOT / "docker-compose.yml"
CHECK_OVERRIDE = ROOT / "deploy/check/compose.local.yml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def scrape_targets(prometheus: dict[str, Any]) -> set[str]:
    return {
        target
        for job in prometheus["scrape_configs"]
        for group in job.get("static_configs", [])
        for target in group["targets"]
    }


def test_compose_uses_only_top_level_keys_docker_compose_1_29_knows() -> None:
    # Debian 12's docker-compose 1.29 validates against a schema without `name` (compose v2's):
    # "'name' does not match any of the regexes". Its other top-level keys are these.
    known = {"version", "services", "networks", "volumes", "secrets", "configs"}
    unknown = {key for key in compose() if key not in known and not key.startswith("x-")}
    assert not unknown, f"docker-compose 1.29 rejects top-level keys {sorted(unknown)}"


@pytest.mark.parametrize(
    "command",
    [["docker-compose"], ["docker", "compose"]],
    ids=["docker-compose-1.29", "docker-compose-v2"],
)
def test_compose_config_accepts_the_file_and_the_check_override(command: list[str]) -> None:
    if shutil.which(command[0]) is None or (
        subprocess.run([*command, "version"], capture_output=True).returncode != 0
    ):
        pytest.skip(f"`{' '.join(command)}` is not installed here, so this check did not run")
    for files in ([COMPOSE], [COMPOSE, CHECK_OVERRIDE]):
        options = [option for path in files for option in ("-f", str(path))]
        result = subprocess.run(
            [*command, *options, "config", "-q"], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 0, f"{' '.join(command)} config {files}: {result.stderr}"


def test_nats_healthcheck_runs_a_tool_the_nats_image_has() -> None:
    nats = compose()["services"]["nats"]
    test = nats["healthcheck"]["test"]
    tool = test[1] if test[0] == "CMD" else test[1].split()[0]
    # The plain nats:2.x tags are scratch images (no shell, no wget): never healthy.
    assert tool == "wget" and nats["image"].endswith("-alpine"), (nats["image"], test)
    assert "8222" in " ".join(test)


def test_compose_runs_the_relay_and_the_consumer_with_least_privilege() -> None:
    services = compose()["services"]

    def db_user(name: str) -> str | None:
        url = services[name].get("environment", {}).get("OUTBOX_DATABASE_URL")
        return re.match(r"postgresql://([^:@]+)", url).group(1) if url else None  # type: ignore[union-attr]

    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    logins_sql = (ROOT / "deploy/postgres/logins.sql").read_text()
    roles_sql = (ROOT / "deploy/postgres/roles.sql").read_text()
    logins = dict(re.findall(r"\('([\w-]+)', '(\w+)'\)", logins_sql))
    assert set(logins.values()) <= set(re.findall(r"CREATE ROLE (\w+) NOLOGIN", roles_sql))
    assert db_user("migrate") == owner
    assert logins[db_user("relay") or ""] == "vertector_relay"
    # Row-level security: a consumer's login is named like its inbox consumer.
    for name, example in (
        ("notes-consumer", "notes_service"),
        ("search-indexer", "search_indexer"),
    ):
        assert logins[db_user(name) or ""] == "vertector_consumer", name
        assert f'consumer="{db_user(name)}")' in (ROOT / f"examples/{example}.py").read_text()
    as_owner = sorted(name for name in services if db_user(name) == owner)
    assert as_owner == ["migrate"], f"only the migration connects as the owner, not {as_owner}"

    roles = services["roles"]
    assert roles["environment"]["PGUSER"] == owner
    argv = " ".join(roles["entrypoint"] + roles["command"])
    assert argv.index("/sql/roles.sql") < argv.index("/sql/logins.sql")
    for variable in set(re.findall(r":'(\w+)'", logins_sql)):
        assert f"-v {variable}=" in argv, f"logins.sql needs -v {variable}=..."
    assert roles["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("relay", "notes-consumer", "search-indexer"):
        assert services[name]["depends_on"]["roles"]["condition"] == (
            "service_completed_successfully"
        )


def test_prometheus_scrapes_what_speaks_prometheus() -> None:
    services = compose()["services"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job  # /varz is JSON
    consumer_port = services["notes-consumer"]["environment"]["CONSUMER_METRICS_PORT"]
    targets = scrape_targets(prometheus)
    indexer_port = services["search-indexer"]["environment"]["CONSUMER_METRICS_PORT"]
    assert {"relay:9464", f"notes-consumer:{consumer_port}", "nats-exporter:7777"} <= targets
    assert f"search-indexer:{indexer_port}" in targets
    assert {target.split(":")[0] for target in targets} <= set(services)
    exporter = services["nats-exporter"]
    assert exporter["image"].startswith("natsio/prometheus-nats-exporter:")
    assert exporter["command"][-1] == "http://nats:8222"
    assert exporter["profiles"] == ["monitoring"]


def test_compose_nats_admits_only_its_users() -> None:
    services = compose()["services"]
    nats_conf = (ROOT / "deploy/nats/nats.conf").read_text()
    permissions = (ROOT / "deploy/nats/relay-permissions.conf").read_text()
    assert "include ./relay-permissions.conf" in nats_conf
    assert "no_auth_user" not in nats_conf + permissions
    users = set(re.findall(r"user:\s*(\w+)", permissions))
    clients = {
        name: service["environment"]
        for name, service in services.items()
        if "NATS_SERVERS" in service.get("environment", {})
    }
    assert {"streams", "relay", "notes-consumer", "search-indexer"} <= set(clients)
    for name, environment in clients.items():
        assert environment["NATS_ENABLE_AUTH"] == "true", name
        assert environment["NATS_USERNAME"] in users, name
    assert clients["relay"]["NATS_USERNAME"] == "relay"
    nats = services["nats"]
    for placeholder in set(re.findall(r'"\$([A-Z_]+)"', permissions)):
        assert placeholder in nats["environment"], f"nats gets no {placeholder}"
        assert f"s/[$$]{placeholder}/$${placeholder}/g" in nats["command"][0]


def test_image_and_compose_offer_no_demo() -> None:
    # The demo and its embedded servers are dev-only (devtools/): nothing shipped runs them.
    services = compose()["services"]
    for name, service in services.items():
        argv = [*service.get("entrypoint", []), *service.get("command", [])]
        assert not any("demo" in str(arg) for arg in argv), (name, argv)
    for name in ("notes-consumer", "search-indexer"):
        consumer = services[name]["entrypoint"]
        assert consumer[:2] == ["python", "-m"]
        module = consumer[2]
        assert (ROOT / f"{module.replace('.', '/')}.py").exists()
        assert (
            f"COPY {module.split('.')[0]} /app/{module.split('.')[0]}"
            in (ROOT / "Dockerfile").read_text()
        )

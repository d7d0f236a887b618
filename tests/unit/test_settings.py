"""Settings as a user writes them: the shipped .env template, blank values, bad values, and the
names errors use; secrets masked wherever a URL is shown; log fields that cannot forge lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbox_client.nats_config import NATSConfig
from outbox_client.redact import redact
from relay.errors import ConfigError
from relay.log import ConsoleFormatter, JsonFormatter, log_event
from relay.settings import load, load_common, load_database

TEMPLATE = Path(__file__).resolve().parents[2] / ".env.example"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory and an environment holding none of the settings' variables."""
    import os

    for name in list(os.environ):
        if name.startswith(("NATS_", "RELAY_", "OUTBOX_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def template(**filled: str) -> str:
    """The shipped .env.example with some variables filled in, as a user edits it."""
    lines = []
    for line in TEMPLATE.read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={filled.pop(name)}" if name in filled else line)
    assert not filled, f"not in the template: {sorted(filled)}"
    return "\n".join(lines) + "\n"


def test_the_template_as_shipped_is_read_from_dot_env(workdir: Path) -> None:
    (workdir / ".env").write_text(template(NATS_SERVERS="nats://10.0.0.9:4222"))
    config = NATSConfig()
    assert config.servers == ["nats://10.0.0.9:4222"]
    options = config.connect_options()
    assert not {"user", "password", "token", "user_credentials", "nkeys_seed", "tls"} & set(options)
    assert load_database().database_url == "postgresql://app@localhost:5432/app"


def test_the_template_filled_for_token_auth_sends_the_token_and_no_user(workdir: Path) -> None:
    (workdir / ".env").write_text(template(NATS_ENABLE_AUTH="true", NATS_TOKEN="t0k"))
    options = NATSConfig().connect_options()
    assert options["token"] == "t0k"
    assert "user" not in options and "password" not in options


def test_the_template_filled_for_user_and_password(workdir: Path) -> None:
    (workdir / ".env").write_text(
        template(NATS_ENABLE_AUTH="true", NATS_USERNAME="app", NATS_PASSWORD="pw")
    )
    options = NATSConfig().connect_options()
    assert (options["user"], options["password"]) == ("app", "pw")
    assert "token" not in options


def test_the_template_filled_for_ca_only_tls(workdir: Path) -> None:
    import trustme

    trustme.CA().cert_pem.write_to_path(str(workdir / "ca.pem"))
    (workdir / ".env").write_text(
        template(NATS_ENABLE_TLS="true", NATS_TLS_CA_CERT_FILE=str(workdir / "ca.pem"))
    )
    config = NATSConfig()
    assert config.tls_cert_file is None and config.tls_key_file is None
    assert config.connect_options()["tls"] is not None


def test_the_environment_wins_over_dot_env_and_blank_means_unset(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / ".env").write_text(template(NATS_CLIENT_NAME="from-file"))
    monkeypatch.setenv("NATS_CLIENT_NAME", "from-env")
    monkeypatch.setenv("NATS_USERNAME", "")
    config = NATSConfig()
    assert config.client_name == "from-env"
    assert config.username is None


def test_credentials_without_enable_auth_are_an_error_not_ignored(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://app@db/app")
    monkeypatch.setenv("NATS_TOKEN", "t0k")
    with pytest.raises(ConfigError, match="NATS_TOKEN set but NATS_ENABLE_AUTH is not true"):
        load()


def test_a_missing_database_url_names_the_variable_the_user_sets(workdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load()
    assert str(info.value) == "invalid configuration: OUTBOX_DATABASE_URL: is not set"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RELAY_RETENTION_SECONDS", "inf"),
        ("RELAY_PURGE_INTERVAL_SECONDS", "nan"),
        ("RELAY_STALL_SECONDS", "inf"),
        ("NATS_CONNECT_TIMEOUT_SECONDS", "inf"),
    ],
)
def test_infinite_numbers_are_refused(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://app@db/app")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"{variable}: Input should be a finite number"):
        load()


def test_an_unknown_log_format_or_level_is_an_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_LOG_FORMAT", "jsno")
    with pytest.raises(ConfigError, match="RELAY_LOG_FORMAT"):
        load_common()
    monkeypatch.setenv("RELAY_LOG_FORMAT", "json")
    monkeypatch.setenv("RELAY_LOG_LEVEL", "debug")
    assert load_common().log_level == "DEBUG"
    monkeypatch.setenv("RELAY_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match="RELAY_LOG_LEVEL"):
        load_common()


def test_credentials_in_urls_are_masked() -> None:
    assert redact("nats://relay:pw@a:4222,tls://tok@b:4222") == (
        "nats://relay:***@a:4222,tls://***@b:4222"
    )
    assert redact("cannot reach postgresql+asyncpg://app:s3@db:5432/x?password=s3") == (
        "cannot reach postgresql+asyncpg://app:***@db:5432/x?password=***"
    )
    config = NATSConfig(servers=["nats://relay:pw@a:4222"], enable_auth=True)
    assert "pw" not in config.describe()


def test_settings_errors_do_not_echo_secrets(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "mysql://app:hunter2@db/app")
    monkeypatch.setenv("NATS_SERVERS", "relay:hunter2@nats:4222")
    for attempt in (load, load_database):
        with pytest.raises(ConfigError) as info:
            attempt()
        assert "hunter2" not in str(info.value)
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://app:hunter2@db/app")
    with pytest.raises(ConfigError, match="NATS_SERVERS") as info:
        load()
    assert "hunter2" not in str(info.value)


def _emit(formatter: logging.Formatter, **fields: object) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.settings.log")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    log_event(logger, "relay.event.quarantined", level=logging.WARNING, **fields)
    return out.getvalue()


def test_a_field_holding_a_newline_cannot_forge_a_console_line() -> None:
    forged = "a.b\n12:00:00.000 info    relay.stopped published=0"
    text = _emit(ConsoleFormatter(), subject=forged, reason="x=1 y=2", event_id="e1")
    assert text.count("\n") == 1, text
    assert 'subject="a.b\\n12:00:00.000 info    relay.stopped published=0"' in text
    assert 'reason="x=1 y=2"' in text and "event_id=e1" in text


def test_log_fields_are_redacted_in_both_formats() -> None:
    for formatter in (ConsoleFormatter(), JsonFormatter()):
        text = _emit(formatter, nats="nats://relay:hunter2@n:4222", error="x")
        assert "hunter2" not in text and "relay:***@n:4222" in text
    entry = json.loads(_emit(JsonFormatter(), subject="a\nb"))
    assert entry["subject"] == "a\nb"


def test_nats_enable_metrics_false_leaves_no_consumer_series() -> None:
    from prometheus_client import REGISTRY, generate_latest

    from outbox_client import ConsumerConfig, EventConsumer, NATSClient

    for name, enabled in (("metrics-on", True), ("metrics-off", False)):
        client = NATSClient(NATSConfig(enable_metrics=enabled))
        EventConsumer(client, "ACADEMIC_EVENTS", ConsumerConfig(durable_name=name))
    scraped = generate_latest(REGISTRY).decode()
    assert 'vertector_consumer_processed_total{consumer="metrics-on"}' in scraped
    assert 'consumer="metrics-off"' not in scraped


def test_only_the_settings_module_reads_the_environment() -> None:
    """Every variable the relay honours goes through relay/settings.py (its names, defaults,
    validation and --help in one place): no other module of the relay touches os.environ."""
    import ast

    relay_dir = Path(__file__).resolve().parents[2] / "relay"
    readers = []
    for path in sorted(relay_dir.glob("*.py")):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if name in ("environ", "getenv", "environb", "getenvb"):
                readers.append(f"{path.name}:{node.lineno}")
    assert readers == [], f"the environment is read outside relay/settings.py: {readers}"


def test_the_streams_file_setting_names_the_streams(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outbox_client.streams import DEFAULT_STREAMS
    from relay.settings import configured_streams

    assert configured_streams() == tuple(DEFAULT_STREAMS)
    mine = [{"name": "COURSES", "subjects": ["academic.course.>"]}]
    (workdir / "streams.json").write_text(json.dumps(mine))
    monkeypatch.setenv("RELAY_STREAMS_FILE", str(workdir / "streams.json"))
    assert [s.name for s in configured_streams()] == ["COURSES"]
    (workdir / "other.json").write_text(json.dumps([{"name": "OTHER", "subjects": ["x.>"]}]))
    assert [s.name for s in configured_streams(workdir / "other.json")] == ["OTHER"]

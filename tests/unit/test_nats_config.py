from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from outbox_client import NATSConfig


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("NATS_"):
            monkeypatch.delenv(name)


def test_environment_variables_of_the_product_description(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_SERVERS", "nats://n1:4222, nats://n2:4222")
    monkeypatch.setenv("NATS_CLIENT_NAME", "notes-service")
    monkeypatch.setenv("NATS_MAX_RECONNECT_ATTEMPTS", "10")
    monkeypatch.setenv("NATS_RECONNECT_WAIT_SECONDS", "2")
    monkeypatch.setenv("NATS_ENABLE_AUTH", "true")
    monkeypatch.setenv("NATS_USERNAME", "app_user")
    monkeypatch.setenv("NATS_PASSWORD", "s3cret-pw")
    config = NATSConfig()
    assert config.servers == ["nats://n1:4222", "nats://n2:4222"]
    options = config.connect_options()
    assert options["name"] == "notes-service"
    assert options["max_reconnect_attempts"] == 10
    assert options["user"] == "app_user" and options["password"] == "s3cret-pw"


def test_defaults_reconnect_forever_and_ping_often() -> None:
    options = NATSConfig().connect_options()
    assert options["max_reconnect_attempts"] == -1
    assert options["ping_interval"] <= 10


def test_secrets_never_show() -> None:
    config = NATSConfig(enable_auth=True, username="u", password="s3cret-pw", token=None)
    assert "s3cret-pw" not in repr(config)
    assert "s3cret-pw" not in str(config)
    assert "s3cret-pw" not in config.describe()
    with pytest.raises(ValidationError) as info:
        NATSConfig(enable_auth=True, username="u", password="s3cret-pw", max_reconnect_attempts=-5)
    assert "s3cret-pw" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"enable_auth": True}, "needs credentials"),
        ({"enable_auth": True, "username": "u"}, "NATS_USERNAME is set without NATS_PASSWORD"),
        ({"tls_cert_file": "/x.pem"}, "go together"),
        ({"servers": ["tls://h:4222"]}, "needs NATS_ENABLE_TLS=true"),
        ({"servers": ["localhost:4222"]}, "nats://localhost:4222"),
        ({"servers": []}, "NATS_SERVERS is empty"),
        ({"inbox_prefix": "_INBOX.>"}, "not a subject prefix"),
        ({"inbox_prefix": "my inbox"}, "not a subject prefix"),
        ({"inbox_prefix": "_INBOX_relay."}, "not a subject prefix"),
        ({"enable_tls": True, "tls_ca_cert_file": "/nonexistent/ca.pem"}, "does not exist"),
    ],
)
def test_invalid_combinations_say_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NATSConfig(**kwargs)


def test_the_example_env_file_lists_every_variable() -> None:
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for name in NATSConfig.model_fields:
        assert f"NATS_{name.upper()}=" in example, name
    assert "OUTBOX_DATABASE_URL=" in example


def test_the_relay_receives_replies_under_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.settings import load

    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://u@h/db")
    assert NATSConfig().connect_options()["inbox_prefix"] == "_INBOX"
    _, relay_nats = load()
    assert relay_nats.connect_options()["inbox_prefix"] == "_INBOX_relay"
    assert relay_nats.client_name == "vertector-relay"
    monkeypatch.setenv("NATS_INBOX_PREFIX", "_INBOX_relay_eu")
    assert load()[1].inbox_prefix == "_INBOX_relay_eu"

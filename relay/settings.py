"""The relay's settings: one frozen, validated object built from the environment once.

Every field is a ``RELAY_<FIELD>`` variable, except the database URL (``OUTBOX_DATABASE_URL``)
and NATS (``NATS_*``, see :class:`outbox_client.nats_config.NATSConfig`).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox_client.dburl import asyncpg_dsn
from outbox_client.errors import OutboxError
from outbox_client.nats_config import NATSConfig
from relay.errors import ConfigError


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RelaySettings(BaseSettings):
    """What ``vertector-relay run`` needs; the docstring of each field is its ``--help`` text."""

    model_config = SettingsConfigDict(
        env_prefix="RELAY_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    database_url: str = Field(
        validation_alias=AliasChoices("OUTBOX_DATABASE_URL", "database_url"),
        description="PostgreSQL URL, postgresql:// or postgresql+asyncpg:// (OUTBOX_DATABASE_URL)",
    )
    instance_name: str = Field(
        default_factory=_default_instance, description="name of this relay in logs and status"
    )
    batch_size: int = Field(default=1000, ge=1, le=50_000, description="rows claimed per batch")
    max_in_flight: int = Field(
        default=4096, ge=1, le=100_000, description="unacknowledged publishes at once"
    )
    publish_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="time a publish may wait for its PubAck"
    )
    poll_interval_seconds: float = Field(
        default=0.5, gt=0, le=3600, description="rescan interval when no notification arrives"
    )
    retry_backoff_seconds: float = Field(
        default=0.1, gt=0, le=60, description="first delay before retrying a failed publish"
    )
    retry_backoff_max_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="cap on retry delays (NATS, PostgreSQL, events)"
    )
    no_stream_max_attempts: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="'no responders' answers before the JetStream API is asked; quarantined"
        " only if no stream captures the subject",
    )
    retention_seconds: float = Field(
        default=0.0,
        ge=0,
        description="how long sent rows stay (for replay and audit); 0 deletes them on PubAck",
    )
    purge_interval_seconds: float = Field(
        default=30.0, gt=0, description="time between purge rounds"
    )
    purge_batch_size: int = Field(
        default=5000, ge=1, le=100_000, description="rows deleted per purge statement"
    )
    shutdown_timeout_seconds: float = Field(
        default=20.0, gt=0, le=600, description="bound on finishing the in-flight batch at stop"
    )
    vacuum_every_rows: int = Field(
        default=20_000, ge=0, description="VACUUM the outbox after this many deleted rows; 0 off"
    )
    pool_size: int = Field(default=4, ge=2, le=100, description="PostgreSQL connections")
    db_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="bound on connecting to PostgreSQL and on each statement; then retried",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="address of /metrics, /healthz, /readyz (0.0.0.0: all)"
    )
    metrics_port: int = Field(
        default=9464, ge=-1, le=65535, description="port of /metrics etc.; 0 any free, -1 off"
    )
    lease_seconds: float = Field(
        default=10.0,
        ge=1,
        le=600,
        description="partition lease: a silent relay's partitions move after about this long",
    )
    stall_seconds: float = Field(
        default=30.0, gt=0, description="not ready when visible rows wait this long unpublished"
    )

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        try:
            asyncpg_dsn(value)
        except OutboxError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RelaySettings:
        if self.retry_backoff_max_seconds < self.retry_backoff_seconds:
            raise ValueError(
                "RELAY_RETRY_BACKOFF_MAX_SECONDS must be >= RELAY_RETRY_BACKOFF_SECONDS"
            )
        return self

    @property
    def dsn(self) -> str:
        """The URL as asyncpg takes it."""
        return asyncpg_dsn(self.database_url)


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return "OUTBOX_DATABASE_URL" if field == "database_url" else f"RELAY_{field.upper()}"


#: The relay's own defaults for NATS settings (each still overridden by its NATS_* variable):
#: its name on the server, and a private reply prefix that deploy/nats/relay-permissions.conf
#: lets it subscribe to (and nothing else).
RELAY_NATS_DEFAULTS = {"client_name": "vertector-relay", "inbox_prefix": "_INBOX_relay"}


def load(overrides: dict[str, Any] | None = None) -> tuple[RelaySettings, NATSConfig]:
    """Build both settings objects from the environment plus explicit ``overrides``
    (CLI flags); translate validation errors into one :class:`ConfigError` naming variables."""
    relay_overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        relay = RelaySettings(**relay_overrides)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, env_name)) from exc
    try:
        nats = NATSConfig.model_validate(
            {
                name: os.environ.get(f"NATS_{name.upper()}", default)
                for name, default in RELAY_NATS_DEFAULTS.items()
            }
        )
    except ValidationError as exc:
        raise ConfigError(_explain(exc, lambda f: f"NATS_{f.upper()}")) from exc
    return relay, nats


def _explain(exc: ValidationError, name: Any) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = name(field) if field else "settings"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is not set"
        lines.append(f"{where}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)

"""The relay's settings: frozen, validated objects built from the environment once.

Every field is a ``RELAY_<FIELD>`` variable, except the database URL (``OUTBOX_DATABASE_URL``)
and NATS (``NATS_*``, see :class:`outbox_client.nats_config.NATSConfig`). Variables come from
the environment and, below it, from a ``.env`` file in the working directory (the template is
``.env.example``); a variable set to nothing (``NATS_USERNAME=``) counts as not set. Numbers
must be finite: ``inf`` and ``nan`` are refused.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox_client.dburl import asyncpg_dsn
from outbox_client.errors import OutboxError
from outbox_client.nats_config import NATSConfig
from outbox_client.redact import redact
from outbox_client.streams import StreamConfig, load_streams
from relay.errors import ConfigError

_S = TypeVar("_S", bound=BaseSettings)

#: Where every settings object reads variables the environment does not set.
ENV_FILE = ".env"
_CONFIG = SettingsConfigDict(
    env_prefix="RELAY_",
    frozen=True,
    extra="ignore",
    hide_input_in_errors=True,
    env_file=ENV_FILE,
    env_ignore_empty=True,
    allow_inf_nan=False,
)


def _default_instance() -> str:
    import os

    return f"{socket.gethostname()}-{os.getpid()}"


class CommonSettings(BaseSettings):
    """What every command reads: logging and the streams file."""

    model_config = _CONFIG

    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="json | console | auto (console on a terminal, else json)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="DEBUG | INFO | WARNING | ERROR"
    )
    streams_file: Path | None = Field(
        default=None, description="JSON list of streams (default: the product's)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class DatabaseSettings(BaseSettings):
    """The outbox's database, for commands that need nothing else."""

    model_config = _CONFIG

    database_url: str = Field(
        validation_alias=AliasChoices("OUTBOX_DATABASE_URL", "database_url"),
        description="PostgreSQL URL, postgresql:// or postgresql+asyncpg:// (OUTBOX_DATABASE_URL)",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        try:
            asyncpg_dsn(value)
        except OutboxError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @property
    def dsn(self) -> str:
        """The URL as asyncpg takes it."""
        return asyncpg_dsn(self.database_url)


class WalSettings(DatabaseSettings):
    """Capture mode and, for WAL capture, the slot and publication (``vertector-relay wal``)."""

    model_config = _CONFIG

    capture: Literal["table", "wal"] = Field(
        default="table",
        validation_alias=AliasChoices("OUTBOX_CAPTURE", "capture"),
        description="table: claim outbox_events rows; wal: read a logical replication slot "
        "(producers must use the same OUTBOX_CAPTURE)",
    )
    wal_slot: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,63}$",
        description="WAL capture's replication slot (default vertector_outbox_<database>)",
    )
    wal_publication: str = Field(
        default="vertector_outbox",
        pattern=r"^[a-z0-9_]{1,63}$",
        description="WAL capture's publication (no tables: it carries the event messages)",
    )
    wal_read: Literal["functions", "stream"] = Field(
        default="functions",
        description="WAL capture: how the slot is read. functions: the slot functions through "
        "migration 0007's (the relay's role needs no REPLICATION); stream: the streaming "
        "replication protocol, pushed as transactions commit and decoded once (faster; the "
        "role needs the REPLICATION attribute)",
    )
    wal_poll_interval_seconds: float = Field(
        default=0.05, gt=0, le=60, description="WAL capture: how often an idle slot is read"
    )
    wal_busy_poll_interval_seconds: float = Field(
        default=0.002,
        gt=0,
        le=60,
        description="WAL capture: how often the slot is read while events keep arriving "
        "(within the last second)",
    )
    wal_buffer_events: int = Field(
        default=100_000,
        ge=1000,
        le=10_000_000,
        description="WAL capture: events read ahead of the slot's confirmed position at most",
    )
    wal_accept_lost_events: bool = Field(
        default=False,
        description="WAL capture: start even though the slot was invalidated while the relay "
        "was down (events committed meanwhile may be lost); the slot is recreated",
    )
    wal_atomic_batches: bool = Field(
        default=True,
        description="WAL capture: publish a transaction's events as one atomic batch (all "
        "visible at once or none) where the stream has allow_atomic (nats-server 2.12.1+)",
    )

    @property
    def slot_name(self) -> str:
        """The slot: RELAY_WAL_SLOT, else ``vertector_outbox_<database name>``."""
        if self.wal_slot:
            return self.wal_slot
        from sqlalchemy.engine import make_url

        database = make_url(self.database_url).database or "postgres"
        cleaned = "".join(c if c.isalnum() else "_" for c in database.lower())
        return f"vertector_outbox_{cleaned}"[:63]


class MetricsSettings(BaseSettings):
    """Where the relay serves /metrics, /healthz and /readyz (``check`` asks there)."""

    model_config = _CONFIG

    metrics_host: str = Field(
        default="127.0.0.1", description="address of /metrics, /healthz, /readyz (0.0.0.0: all)"
    )
    metrics_port: int = Field(
        default=9464, ge=-1, le=65535, description="port of /metrics etc.; 0 any free, -1 off"
    )


class RelaySettings(WalSettings, MetricsSettings):
    """What ``vertector-relay run`` needs; the description of each field is its ``--help``."""

    model_config = _CONFIG

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
    lease_seconds: float = Field(
        default=10.0,
        ge=1,
        le=600,
        description="partition lease: a silent relay's partitions move after about this long",
    )
    stall_seconds: float = Field(
        default=30.0, gt=0, description="not ready when visible rows wait this long unpublished"
    )
    validate_raw_rows: bool = Field(
        default=False,
        description="check rows not written by outbox_client against the schema registry "
        "(bucket VERTECTOR_SCHEMAS, which the relay's NATS user must be able to read) and "
        "quarantine those that break their contract",
    )
    cloudevents: bool = Field(
        default=False, description="add CloudEvents binary-mode ce-* headers to every message"
    )

    @model_validator(mode="after")
    def _consistent(self) -> RelaySettings:
        if self.retry_backoff_max_seconds < self.retry_backoff_seconds:
            raise ValueError(
                "RELAY_RETRY_BACKOFF_MAX_SECONDS must be >= RELAY_RETRY_BACKOFF_SECONDS"
            )
        return self


def env_name(field: str) -> str:
    """The environment variable of a settings field (or of an alias pydantic reports)."""
    if field in ("database_url", "OUTBOX_DATABASE_URL"):
        return "OUTBOX_DATABASE_URL"
    if field in ("capture", "OUTBOX_CAPTURE"):
        return "OUTBOX_CAPTURE"
    return f"RELAY_{field.upper()}"


def nats_env_name(field: str) -> str:
    return f"NATS_{field.upper()}"


def _build(cls: type[_S], name: Any, **overrides: Any) -> _S:
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, name)) from exc


def load_common(**overrides: Any) -> CommonSettings:
    """Logging and streams settings, from the environment plus CLI flags (``None``: unset)."""
    return _build(CommonSettings, env_name, **overrides)


def configured_streams(path: Path | None = None) -> tuple[StreamConfig, ...]:
    """The streams the relay works with: those of ``path`` (``streams apply --file``), else of
    ``RELAY_STREAMS_FILE``, else the product's defaults."""
    return load_streams(path or load_common().streams_file)


def load_database() -> DatabaseSettings:
    """``OUTBOX_DATABASE_URL`` alone, for the commands that need nothing else."""
    return _build(DatabaseSettings, env_name)


def load_wal() -> WalSettings:
    """The database and WAL capture settings, for ``vertector-relay wal``."""
    return _build(WalSettings, env_name)


def load_nats() -> NATSConfig:
    """The ``NATS_*`` settings, with :data:`RELAY_NATS_DEFAULTS` for those not set."""
    return with_relay_defaults(_build(NATSConfig, nats_env_name))


def with_relay_defaults(config: NATSConfig) -> NATSConfig:
    """``config`` with :data:`RELAY_NATS_DEFAULTS` for the fields it was not given (by its
    caller or a ``NATS_*`` variable): a relay built in code gets the relay's private reply
    prefix, as one started by the CLI does."""
    unset = {k: v for k, v in RELAY_NATS_DEFAULTS.items() if k not in config.model_fields_set}
    return config.model_copy(update=unset) if unset else config


def probe_address() -> tuple[str, int]:
    """Where ``check`` finds the running relay: its metrics host (a wildcard means this host)
    and port."""
    metrics = _build(MetricsSettings, env_name)
    if metrics.metrics_port <= 0:
        raise ConfigError(
            f"RELAY_METRICS_PORT={metrics.metrics_port}: the relay has no fixed port to ask; "
            "set the port the relay listens on"
        )
    host = metrics.metrics_host
    return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), metrics.metrics_port


#: The relay's own defaults for NATS settings (each still overridden by its NATS_* variable):
#: its name on the server, and a private reply prefix that deploy/nats/relay-permissions.conf
#: lets it subscribe to (and nothing else).
RELAY_NATS_DEFAULTS = {"client_name": "vertector-relay", "inbox_prefix": "_INBOX_relay"}


def load(overrides: dict[str, Any] | None = None) -> tuple[RelaySettings, NATSConfig]:
    """Build both settings objects from the environment plus explicit ``overrides``
    (CLI flags); translate validation errors into one :class:`ConfigError` naming variables."""
    return _build(RelaySettings, env_name, **(overrides or {})), load_nats()


def _explain(exc: ValidationError, name: Any) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is not set"
        lines.append(f"{name(field)}: {redact(message)}" if field else redact(message))
    return "invalid configuration: " + "; ".join(lines)

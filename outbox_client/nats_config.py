"""``NATSConfig``: the product description's NATS settings, from code or ``NATS_*`` variables.

>>> NATSConfig(servers=["nats://localhost:4222"]).servers
['nats://localhost:4222']
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from outbox_client.redact import redact


class NATSConfig(BaseSettings):
    """How to reach NATS. Every field has a ``NATS_<FIELD>`` environment variable, also read
    from a ``.env`` file in the working directory (the environment wins; blank means unset).

    ``enable_tracing``: W3C trace context goes out with what ``EventPublisher`` publishes and the
    relay forwards, and the consumer continues it in a span (with OpenTelemetry installed).
    ``enable_metrics``: ``EventConsumer`` records its Prometheus metrics
    (``vertector_consumer_*``); the relay's own metrics are ``RELAY_METRICS_PORT``'s.

    Reconnection is forever by default (``max_reconnect_attempts=-1``): a service must ride
    out an outage, not exit after nats-py's default of about two minutes. Pings every 10 s
    (nats-py pings every two minutes) so a dead server is noticed in ~30 s.
    """

    model_config = SettingsConfigDict(
        env_prefix="NATS_",
        frozen=True,
        extra="ignore",
        hide_input_in_errors=True,
        # The template says: copy .env.example to .env. Variables in the environment win, and
        # one left blank (NATS_USERNAME=) is not set, as the template means it.
        env_file=".env",
        env_ignore_empty=True,
        allow_inf_nan=False,
    )

    servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nats://localhost:4222"]
    )
    client_name: str = "vertector-service"
    max_reconnect_attempts: int = Field(default=-1, ge=-1)
    reconnect_wait_seconds: float = Field(default=2.0, gt=0, le=300)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    ping_interval_seconds: float = Field(default=10.0, gt=0, le=600)
    max_outstanding_pings: int = Field(default=3, ge=1, le=100)
    #: Where replies (PubAcks, API answers) come back: ``<prefix>.<unique>``. A private prefix
    #: lets the server's permissions give this user its own replies only (``_INBOX_<user>.>``
    #: instead of everyone's ``_INBOX.>``).
    inbox_prefix: str = "_INBOX"

    enable_auth: bool = False
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    credentials_file: Path | None = None
    nkey_seed_file: Path | None = None

    enable_tls: bool = False
    tls_ca_cert_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_hostname: str | None = None

    enable_jetstream: bool = True
    enable_tracing: bool = True
    enable_metrics: bool = True

    @field_validator("servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not value:
            raise ValueError("NATS_SERVERS is empty: give at least one nats://host:port")
        return value

    @field_validator("servers")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if "://" not in url:
                host = url.rpartition("@")[2]  # never echo credentials
                raise ValueError(f"{host!r} is not a URL: write nats://{host} (or tls://{host})")
        return value

    @field_validator("inbox_prefix")
    @classmethod
    def _inbox_prefix(cls, value: str) -> str:
        def bad(token: str) -> bool:
            return not token or token in ("*", ">") or any(c.isspace() for c in token)

        if any(bad(token) for token in value.split(".")):
            raise ValueError(
                f"{value!r} is not a subject prefix: use dot-separated tokens without spaces"
                " or wildcards, e.g. _INBOX_relay"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NATSConfig:
        credentials = ("username", "password", "token", "credentials_file", "nkey_seed_file")
        given = [f"NATS_{name.upper()}" for name in credentials if getattr(self, name) is not None]
        if given and not self.enable_auth:
            raise ValueError(
                f"{', '.join(given)} set but NATS_ENABLE_AUTH is not true: set "
                "NATS_ENABLE_AUTH=true to use them, or unset them"
            )
        if self.username is not None and self.password is None:
            raise ValueError("NATS_USERNAME is set without NATS_PASSWORD")
        if self.enable_auth:
            has_user = self.username is not None and self.password is not None
            others = (self.token, self.credentials_file, self.nkey_seed_file)
            in_urls = any("@" in url.split("://", 1)[-1].split("/")[0] for url in self.servers)
            if not (has_user or in_urls) and all(item is None for item in others):
                raise ValueError(
                    "NATS_ENABLE_AUTH=true needs credentials: set NATS_USERNAME and NATS_PASSWORD, "
                    "or NATS_TOKEN, or NATS_CREDENTIALS_FILE, or NATS_NKEY_SEED_FILE"
                )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together: set both")
        if self.enable_tls:
            for name in ("tls_ca_cert_file", "tls_cert_file", "tls_key_file"):
                path = getattr(self, name)
                if path is not None and not Path(path).is_file():
                    raise ValueError(f"NATS_{name.upper()}={path} does not exist")
        elif any(url.startswith("tls://") for url in self.servers):
            raise ValueError("a tls:// server needs NATS_ENABLE_TLS=true")
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the connection, or ``None`` when TLS is off."""
        if not self.enable_tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.tls_ca_cert_file) if self.tls_ca_cert_file else None
        )
        if self.tls_cert_file and self.tls_key_file:
            context.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file))
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (secrets included: never log them)."""
        options: dict[str, Any] = {
            "servers": list(self.servers),
            "name": self.client_name,
            "allow_reconnect": True,
            "max_reconnect_attempts": self.max_reconnect_attempts,
            "reconnect_time_wait": self.reconnect_wait_seconds,
            "connect_timeout": self.connect_timeout_seconds,
            "ping_interval": self.ping_interval_seconds,
            "max_outstanding_pings": self.max_outstanding_pings,
            "inbox_prefix": self.inbox_prefix,
        }
        if self.enable_auth:
            if self.username is not None and self.password is not None:
                options["user"] = self.username
                options["password"] = self.password.get_secret_value()
            if self.token is not None:
                options["token"] = self.token.get_secret_value()
            if self.credentials_file is not None:
                options["user_credentials"] = str(self.credentials_file)
            if self.nkey_seed_file is not None:
                options["nkeys_seed"] = str(self.nkey_seed_file)
        context = self.ssl_context()
        if context is not None:
            options["tls"] = context
            if self.tls_hostname:
                options["tls_hostname"] = self.tls_hostname
        return options

    def describe(self) -> str:
        """A one-line, secret-free description for logs."""
        auth = "auth" if self.enable_auth else "no auth"
        tls = "tls" if self.enable_tls else "plain"
        servers = redact(",".join(self.servers))
        return f"{servers} ({tls}, {auth}, client {self.client_name})"

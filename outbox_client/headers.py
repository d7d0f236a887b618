"""NATS header names the outbox writes and the consumer reads (magic strings live here only)."""

from __future__ import annotations

from enum import StrEnum


class Header(StrEnum):
    MSG_ID = "Nats-Msg-Id"
    EVENT_TYPE = "Vertector-Event-Type"
    SCHEMA_VERSION = "Vertector-Schema-Version"
    PARTITION_KEY = "Vertector-Partition-Key"
    CORRELATION_ID = "Vertector-Correlation-Id"
    CAUSATION_ID = "Vertector-Causation-Id"
    SOURCE_SERVICE = "Vertector-Source-Service"
    #: Set by ``outbox_client`` (value ``PRODUCED_BY_OUTBOX_CLIENT``): the row's event was
    #: validated by its class; the relay checks other rows against the schema registry.
    PRODUCER = "Vertector-Producer"
    #: Refused from producers (``outbox_client.policy``): a replay's label is the row's
    #: ``replay_label`` column, set only by `vertector-relay replay --fresh-ids`. Releases before
    #: migration 0006 kept it in this header, where any producer could forge it.
    REPLAY = "Vertector-Replay"
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"


PRODUCED_BY_OUTBOX_CLIENT = "outbox_client"


def check_header_value(name: str, value: str) -> str:
    """Reject what nats-py would silently mangle (it turns CR/LF into spaces)."""
    if "\r" in value or "\n" in value or "\0" in value:  # every header of every event: no genexpr
        raise ValueError(f"header {name!r} must not contain CR, LF or NUL characters")
    return value

"""Contracts from code: one JSON Schema document per ``(event_type, schema_version)``.

A contract holds two JSON Schemas (draft 2020-12): the ``payload`` (the event's JSON, from its
pydantic class) and the ``headers`` ``outbox_client`` sends with it. Producers and consumers in
other languages read them from the committed snapshot (``schemas/``) or from the registry
bucket in JetStream (``outbox_client.schemas.registry``).

>>> from outbox_client import ClassScheduleCreatedEvent
>>> c = contract_of(ClassScheduleCreatedEvent)
>>> (c.key, c.compatibility, c.payload["properties"]["schema_version"]["const"])
('academic.schedule.created.v2', <Mode.BACKWARD: 'BACKWARD'>, 2)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outbox_client.errors import OutboxError
from outbox_client.events.base import BaseEvent
from outbox_client.events.registry import event_type_of, event_versions, schema_version_of
from outbox_client.headers import Header
from outbox_client.schemas.compat import Mode, Schema, strip_annotations

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Headers every event carries (the partition key is added by ``enqueue``).
REQUIRED_HEADERS = (
    Header.EVENT_TYPE, Header.SCHEMA_VERSION, Header.SOURCE_SERVICE, Header.PARTITION_KEY
)  # fmt: skip
OPTIONAL_HEADERS = (
    Header.CORRELATION_ID, Header.CAUSATION_ID, Header.TRACEPARENT, Header.TRACESTATE
)  # fmt: skip


class ContractError(OutboxError):
    """A contract document, a snapshot or the registry is not what it should be."""


@dataclass(frozen=True)
class Contract:
    """The published shape of one version of one event type."""

    event_type: str
    schema_version: int
    compatibility: Mode
    payload: Schema
    headers: Schema

    @property
    def key(self) -> str:
        """``<event_type>.v<N>``: the snapshot's file name and the registry's key."""
        return f"{self.event_type}.v{self.schema_version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "compatibility": self.compatibility.value,
            "payload": self.payload,
            "headers": self.headers,
        }

    def to_json(self) -> bytes:
        """Stable bytes (sorted keys, two-space indent): a diff shows only real changes."""
        return (json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str, where: str = "contract") -> Contract:
        try:
            raw = json.loads(data)
            return cls(
                event_type=str(raw["event_type"]),
                schema_version=int(raw["schema_version"]),
                compatibility=Mode(raw["compatibility"]),
                payload=dict(raw["payload"]),
                headers=dict(raw["headers"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(
                f"{where} is not a contract document ({type(exc).__name__}: {exc}): regenerate "
                "it with `vertector-relay schemas snapshot`"
            ) from exc

    def same_shape(self, other: Contract) -> bool:
        """Whether both accept exactly the same events (titles and descriptions aside)."""
        return bool(strip_annotations(self.as_dict()) == strip_annotations(other.as_dict()))


def contract_of(cls: type[BaseEvent]) -> Contract:
    """The contract of ``cls``: its JSON Schema plus the headers it travels with."""
    event_type, version = event_type_of(cls), schema_version_of(cls)
    try:
        mode = Mode(cls.compatibility)
    except ValueError as exc:
        raise ContractError(
            f"{cls.__name__}.compatibility is {cls.compatibility!r}: use one of "
            f"{', '.join(m.value for m in Mode)}"
        ) from exc
    payload = cls.model_json_schema(mode="validation")
    # A class of version N accepts only payloads of version N (decode_event picks the class).
    payload["properties"]["schema_version"] = {"const": version, "default": version,
                                               "type": "integer"}  # fmt: skip
    payload["title"] = f"{event_type} v{version}"
    payload = {"$schema": DIALECT, "$id": f"urn:vertector:{event_type}:v{version}", **payload}
    return Contract(event_type, version, mode, payload, _headers_schema(event_type, version))


def _headers_schema(event_type: str, version: int) -> Schema:
    text = {"type": "string", "minLength": 1, "maxLength": 1024}
    properties: Schema = {
        Header.EVENT_TYPE.value: {"type": "string", "const": event_type},
        Header.SCHEMA_VERSION.value: {"type": "string", "const": str(version)},
    }
    for name in (*REQUIRED_HEADERS[2:], *OPTIONAL_HEADERS):
        properties[name.value] = dict(text)
    return {
        "$schema": DIALECT,
        "title": f"{event_type} v{version} headers",
        "type": "object",
        "properties": properties,
        "required": [h.value for h in REQUIRED_HEADERS],
        # Nats-Msg-Id (set by the relay) and any header of the producer's own.
        "additionalProperties": {"type": "string"},
    }


def catalog() -> list[Contract]:
    """The contract of every registered class, every version, sorted by key."""
    contracts = [
        contract_of(cls) for versions in event_versions().values() for cls in versions.values()
    ]
    return sorted(contracts, key=lambda c: (c.event_type, c.schema_version))


def read_snapshot(directory: Path) -> dict[str, Contract]:
    """The committed contracts in ``directory``: key -> contract (empty when it is missing)."""
    found: dict[str, Contract] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        contract = Contract.from_json(path.read_bytes(), where=str(path))
        if path.name != f"{contract.key}.json":
            raise ContractError(
                f"{path} holds {contract.key}: the file must be named {contract.key}.json"
            )
        found[contract.key] = contract
    return found


def write_snapshot(directory: Path, contracts: list[Contract]) -> list[Path]:
    """Write each contract whose file is missing or differs; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for contract in contracts:
        path = directory / f"{contract.key}.json"
        data = contract.to_json()
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            written.append(path)
    return written

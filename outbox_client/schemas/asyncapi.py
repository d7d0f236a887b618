"""The catalog as an AsyncAPI 3 document: a channel per subject, a message per version
(payload and headers from the contracts), the JetStream stream that stores each channel.

>>> doc = asyncapi_document()
>>> doc["channels"]["academic.schedule.created"]["address"]
'academic.schedule.created'
>>> sorted(doc["channels"]["academic.schedule.created"]["messages"])
['v1', 'v2']
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from outbox_client.schemas.contracts import Contract, catalog
from outbox_client.streams import DEFAULT_STREAMS, StreamConfig


def asyncapi_document(
    contracts: list[Contract] | None = None,
    streams: tuple[StreamConfig, ...] = DEFAULT_STREAMS,
    server: str = "localhost:4222",
) -> dict[str, Any]:
    """AsyncAPI 3.0.0 for ``contracts`` (default: the whole catalog) on ``streams``."""
    contracts = catalog() if contracts is None else contracts
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for contract in contracts:
        subject = contract.event_type
        stream = next((s.name for s in streams if s.captures(subject)), None)
        channel = channels.setdefault(subject, {
            "address": subject,
            "title": subject,
            "description": f"Stored in the JetStream stream {stream}." if stream
            else "No stream captures this subject.",
            "messages": {},
            "tags": [{"name": f"stream:{stream}"}] if stream else [],
        })  # fmt: skip
        channel["messages"][f"v{contract.schema_version}"] = _message(contract)
        operations[f"send.{subject}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{subject}"},
            "summary": f"The outbox relay publishes {subject} (deduplicated by Nats-Msg-Id).",
            "messages": [
                {"$ref": f"#/channels/{subject}/messages/{name}"} for name in channel["messages"]
            ],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Vertector academic events",
            "version": _package_version(),
            "description": "Events published through the Vertector transactional outbox to "
            "NATS JetStream. Each message carries Nats-Msg-Id = event_id; older versions of "
            "an event type are upcast by outbox_client.decode_event.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {"host": server, "protocol": "nats", "description": "NATS with JetStream"}
        },
        "channels": channels,
        "operations": operations,
        "x-jetstream-streams": [
            {"name": s.name, "subjects": list(s.subjects), "retention": s.retention}
            for s in streams
        ],
    }


def _message(contract: Contract) -> dict[str, Any]:
    return {
        "name": contract.key,
        "title": f"{contract.event_type} version {contract.schema_version}",
        "contentType": "application/json",
        "headers": _inline(contract.headers),
        "payload": _inline(contract.payload),
        "x-compatibility": contract.compatibility.value,
    }


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A self-contained draft-07 style copy: ``$ref``s into ``$defs`` replaced by their target
    (pydantic's schemas here are not recursive), dialect and id markers dropped."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = walk(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
                return {**target, **{k: walk(v) for k, v in node.items() if k != "$ref"}}
            return {k: walk(v) for k, v in node.items() if k not in ("$defs", "$schema", "$id")}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def _package_version() -> str:
    try:
        return version("vertector-outbox")
    except PackageNotFoundError:
        return "0.0.0"

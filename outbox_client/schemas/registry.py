"""The schema registry at run time: a JetStream key-value bucket, no server of its own.

Each contract is stored under ``<event_type>.v<N>`` (``academic.schedule.created.v2``) as the
JSON of :class:`~outbox_client.schemas.contracts.Contract`; services in any language read it
with their NATS client's key-value API (``nats kv get VERTECTOR_SCHEMAS <key>``) or watch
``<event_type>.>`` for new versions. A published version is never overwritten: ``publish``
refuses a change to it, and a new version incompatible with the one before it.

>>> await publish(js, catalog())  # doctest: +SKIP
['academic.assignment.created.v1', ...]
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api as js_api

from outbox_client.schemas.contracts import Contract, ContractError
from outbox_client.schemas.gate import review

BUCKET = "VERTECTOR_SCHEMAS"


class RegistryRefusedError(ContractError):
    """``publish`` refused the contracts; ``breaks`` names each reason."""

    def __init__(self, breaks: list[str]) -> None:
        super().__init__("the registry refused the contracts:\n  " + "\n  ".join(breaks))
        self.breaks = breaks


async def bucket(js: Any, *, create: bool = False, replicas: int = 1) -> Any:
    """The registry's bucket; with ``create``, made when missing (history 1: versions are
    keys of their own, a key is written once)."""
    try:
        return await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        if not create:
            raise ContractError(
                f"no schema registry: the JetStream bucket {BUCKET} does not exist; create it "
                "with `vertector-relay schemas publish`"
            ) from None
    config = js_api.KeyValueConfig(bucket=BUCKET, history=1, replicas=replicas,
                                   description="Vertector event contracts")  # fmt: skip
    return await js.create_key_value(config=config)


async def keys(js: Any) -> list[str]:
    """The registry's keys (``<event_type>.v<N>``), sorted; a deleted key's marker included.

    Read from the bucket stream's own state (one JetStream API answer), not from nats-py's
    ``kv.keys()``: its watcher can report "no more keys" before the first one has arrived
    (seen against nats-server 2.9: 0 keys of 37 just after they were written), and a registry
    read short would let ``publish`` write a version twice or a relay skip a governed type.
    """
    prefix = f"$KV.{BUCKET}."
    info = await js.stream_info(f"KV_{BUCKET}", subjects_filter=f"{prefix}>")
    return sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))


async def published(js: Any) -> dict[str, Contract]:
    """Every contract in the registry: key -> contract (raises :class:`ContractError` when
    there is no registry)."""
    kv = await bucket(js)
    names = await keys(js)
    entries = await asyncio.gather(*(_entry(kv, key) for key in names))
    return {
        key: Contract.from_json(entry.value, where=f"registry key {key}")
        for key, entry in zip(names, entries, strict=True)
        if entry is not None
    }


async def _entry(kv: Any, key: str) -> Any:
    """The key's entry, or ``None`` when its last word is a delete or purge marker."""
    try:
        return await kv.get(key)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None


async def publish(js: Any, contracts: list[Contract], *, replicas: int = 1) -> list[str]:
    """Store every contract not yet in the registry; the keys written.

    Raises :class:`RegistryRefusedError` naming each break when a contract changes a published
    version or breaks compatibility with the version before it; nothing is written then.
    """
    kv = await bucket(js, create=True, replicas=replicas)
    result = review(contracts, await published(js))
    if not result.ok:
        raise RegistryRefusedError(result.breaks)
    written = []
    for contract in result.new:
        try:
            await kv.create(contract.key, contract.to_json())
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise ContractError(
                f"{contract.key} was published by someone else meanwhile: run publish again "
                "to check it against that one"
            ) from exc
        written.append(contract.key)
    return written


async def fetch(kv: Any, event_type: str, schema_version: int) -> Contract | None:
    """One contract, or ``None`` when the registry has none for that version."""
    try:
        entry = await kv.get(f"{event_type}.v{schema_version}")
    except (
        nats.js.errors.KeyNotFoundError,
        nats.js.errors.KeyDeletedError,
        nats.js.errors.InvalidKeyError,
    ):
        return None
    except nats.errors.Error as exc:
        raise ContractError(f"cannot read the schema registry: {exc}") from exc
    return Contract.from_json(entry.value, where=f"registry key {event_type}.v{schema_version}")

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


async def published(kv: Any) -> dict[str, Contract]:
    """Every contract in the bucket: key -> contract."""
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return {}
    entries = await asyncio.gather(*(kv.get(key) for key in keys))
    return {
        key: Contract.from_json(entry.value, where=f"registry key {key}")
        for key, entry in zip(keys, entries, strict=True)
    }


async def publish(js: Any, contracts: list[Contract], *, replicas: int = 1) -> list[str]:
    """Store every contract not yet in the registry; the keys written.

    Raises :class:`RegistryRefusedError` naming each break when a contract changes a published
    version or breaks compatibility with the version before it; nothing is written then.
    """
    kv = await bucket(js, create=True, replicas=replicas)
    result = review(contracts, await published(kv))
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

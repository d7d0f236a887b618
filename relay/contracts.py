"""Contract enforcement for raw rows: rows a producer wrote without ``outbox_client``.

``outbox_client`` validates every event with its pydantic class before the row exists, and
marks the row with ``Vertector-Producer: outbox_client``. Any other row (a service in another
language inserting into ``outbox_events``) is checked here against the contract registered for
its event type and version in the JetStream registry (``outbox_client.schemas.registry``); a
row that breaks it is poison, quarantined with the validation error as its reason.

The event type and version come from the payload (``event_type``, ``schema_version``), else
from the ``Vertector-Event-Type`` / ``Vertector-Schema-Version`` headers, else the subject and
1. An event type with no contract at all is let through (nothing to check it against); a
version the registry does not hold, for a type it does, is refused.

Compiled validators are cached: a published version never changes, so a contract once found is
kept; a miss is asked again after ``miss_ttl`` seconds (a ``schemas publish`` is noticed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jsonschema_rs
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from outbox_client.headers import PRODUCED_BY_OUTBOX_CLIENT, Header
from outbox_client.policy import headers_problem, subject_problem
from outbox_client.schemas.contracts import ContractError
from outbox_client.schemas.registry import BUCKET, fetch
from outbox_client.schemas.registry import keys as registry_keys
from relay.log import log_event
from relay.ports import Failure, OutboxRow, Verdict

logger = logging.getLogger("relay.contracts")

_PRODUCER = Header.PRODUCER.value
_EVENT_TYPE = Header.EVENT_TYPE.value
_SCHEMA_VERSION = Header.SCHEMA_VERSION.value
#: (event_type, version) pairs remembered; past this the cache starts over.
_CACHE_LIMIT = 10_000


class _Entry:
    __slots__ = ("expires", "validator")

    def __init__(self, validator: jsonschema_rs.Validator | None, expires: float) -> None:
        self.validator = validator
        self.expires = expires


class JetStreamSource(Protocol):
    """What holds the relay's NATS connection (:class:`relay.natspublisher.NatsPublisher`)."""

    @property
    def jetstream(self) -> JetStreamContext: ...


class ContractValidator:
    """The relay's :class:`~relay.ports.Validator`: checks raw rows against the registry.

    The registry is read through ``nats``, the publisher's connection: its JetStream context
    is taken at each registry look-up, so a replaced connection is used."""

    def __init__(
        self,
        nats: JetStreamSource,
        *,
        miss_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nats = nats
        self.miss_ttl = miss_ttl
        self.clock = clock
        self._cache: dict[tuple[str, int], _Entry] = {}
        self._types: set[str] = set()  # event types the registry holds, read at _types_until
        self._types_until = 0.0
        self._warned_no_registry = False

    async def refusals(self, rows: Sequence[OutboxRow]) -> list[Failure | None]:
        results: list[Failure | None] = []
        for row in rows:
            if subject_problem(row.subject) or headers_problem(row.headers):
                results.append(None)  # relay.checks quarantines it with the policy's reason
                continue
            if row.headers.get(_PRODUCER) == PRODUCED_BY_OUTBOX_CLIENT:
                results.append(None)  # validated by its class before the row was written
                continue
            results.append(await self._check(row))
        return results

    async def _check(self, row: OutboxRow) -> Failure | None:
        try:
            payload = json.loads(row.payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            named = row.headers.get(_EVENT_TYPE) or row.subject
            try:
                governed = await self._has_contracts(named)
            except ContractError as err:
                return Failure(Verdict.TRANSIENT, f"schema registry unavailable: {err}"[:300])
            if not governed:  # no contract speaks for this type: not the registry's to refuse
                return None
            return Failure(Verdict.POISON, f"contract: payload is not JSON: {exc}"[:500])
        fields = payload if isinstance(payload, dict) else {}
        event_type = fields.get("event_type") or row.headers.get(_EVENT_TYPE) or row.subject
        version = fields.get("schema_version") or row.headers.get(_SCHEMA_VERSION) or 1
        if not isinstance(event_type, str):
            return Failure(Verdict.POISON, "contract: event_type must be a string")
        try:
            version = int(version)
        except (TypeError, ValueError):
            return Failure(Verdict.POISON, f"contract: schema_version {version!r} is no integer")
        try:
            validator = await self._validator(event_type, version)
            unknown_version = validator is None and await self._has_contracts(event_type)
        except ContractError as exc:
            return Failure(Verdict.TRANSIENT, f"schema registry unavailable: {exc}"[:300])
        if unknown_version:
            return Failure(
                Verdict.POISON,
                f"contract: {event_type} version {version} is not in the schema registry",
            )
        if validator is None or validator.is_valid(payload):
            return None
        error = next(iter(validator.iter_errors(payload)))
        where = "/".join(str(part) for part in error.instance_path) or "(payload)"
        return Failure(
            Verdict.POISON,
            f"contract {event_type}.v{version}: at {where}: {_cause(error).message}"[:500],
        )

    async def _validator(self, event_type: str, version: int) -> jsonschema_rs.Validator | None:
        key = (event_type, version)
        entry = self._cache.get(key)
        now = self.clock()
        if entry is not None and (entry.validator is not None or entry.expires > now):
            return entry.validator
        kv = await self._bucket()
        contract = None if kv is None else await fetch(kv, event_type, version)
        validator = (
            None
            if contract is None
            else jsonschema_rs.validator_for(contract.payload, validate_formats=True)
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = _Entry(validator, now + self.miss_ttl)
        return validator

    async def _has_contracts(self, event_type: str) -> bool:
        """Whether the registry holds any version of ``event_type`` (its key list is read at
        most once per ``miss_ttl``)."""
        now = self.clock()
        if self._types_until <= now:
            kv = await self._bucket()
            keys: list[str] = []
            if kv is not None:
                try:
                    keys = await registry_keys(self.nats.jetstream)
                except (TimeoutError, nats.errors.Error) as exc:
                    raise ContractError(f"cannot list {BUCKET}: {type(exc).__name__}") from exc
            self._types = {key.rsplit(".v", 1)[0] for key in keys}
            self._types_until = now + self.miss_ttl
        return event_type in self._types

    async def _bucket(self) -> Any:
        try:
            return await self.nats.jetstream.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            if not self._warned_no_registry:
                self._warned_no_registry = True
                log_event(
                    logger, "relay.contracts.no_registry", level=logging.WARNING,
                    detail=f"bucket {BUCKET} missing: raw rows are not checked until "
                    "`vertector-relay schemas publish` creates it",
                )  # fmt: skip
            return None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ContractError(f"cannot open {BUCKET}: {type(exc).__name__}") from exc


def _cause(error: jsonschema_rs.ValidationError) -> jsonschema_rs.ValidationError:
    """For an optional field (``anyOf: [X, null]``) the branch that says what is wrong with
    the value, not that it is not null."""
    kinds = jsonschema_rs.ValidationErrorKind
    context = getattr(error.kind, "context", None)
    if not isinstance(error.kind, kinds.AnyOf | kinds.OneOfNotValid) or not context:
        return error
    branches = [branch for branch in context if branch]
    telling = [b for b in branches if not all(isinstance(e.kind, kinds.Type) for e in b)]
    return _cause((telling or branches)[0][0]) if branches else error

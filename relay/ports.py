"""What the relay loop talks to: a store, a publisher, the partitions it owns, and the count of
its rounds that the lease manager reads.

The loop (``relay/worker.py``) depends only on these protocols; ``relay/app.py`` wires the
PostgreSQL and NATS implementations in, tests wire in-memory ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol


@dataclass(slots=True)
class OutboxRow:
    """One claimed event, as stored: ``payload`` and ``headers`` are published unchanged.

    Treated as immutable (a changed copy is made with ``dataclasses.replace``), but not frozen:
    a frozen dataclass sets each field through ``object.__setattr__``, 4.3 µs a row against 1.6,
    and the relay builds one per event."""

    id: int
    event_id: uuid.UUID
    subject: str
    partition_key: str
    partition: int
    payload: bytes
    headers: Mapping[str, str]
    attempts: int
    created_at: datetime
    #: Set by ``vertector-relay replay --fresh-ids`` only (a column no producer may write).
    replay_label: str | None = None
    #: Set by a store that knows transactions (WAL capture) on every unsettled event of one
    #: transaction it hands out whole: rows sharing it may go as one atomic batch.
    txn: int | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A publish's PubAck: JetStream stored the message in ``stream`` at ``seq`` (or already
    had it: ``duplicate``). The producer library's direct publishes answer with
    :class:`outbox_client.PublishAck` instead."""

    stream: str
    seq: int
    duplicate: bool


class Verdict(Enum):
    """What a failed publish means for its event."""

    TRANSIENT = "transient"  # no answer (NATS down, slow, cut off): retry forever, same id
    REFUSED = "refused"  # JetStream answered "not now" (stream full, no leader): retry the key
    #: Nothing took the message: a stream without a leader (election, lost quorum), or one
    #: the publisher has not yet confirmed missing (it then answers POISON). Retried; the key
    #: is due again as soon as its stream acknowledges something.
    NO_RESPONDERS = "no_responders"
    POISON = "poison"  # can never succeed: quarantine now
    #: The transaction could not go as one atomic batch (nothing of it was stored): publish
    #: its events one by one, now, each with its own verdict.
    SPLIT = "split"


@dataclass(frozen=True, slots=True)
class Failure:
    verdict: Verdict
    reason: str


PublishResult = Stored | Failure


@dataclass(frozen=True, slots=True)
class Sent:
    row_id: int
    stored: Stored


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    oldest_age_seconds: float
    quarantined: int


class Store(Protocol):
    async def claim(
        self,
        partitions: Sequence[int],
        exclude: Sequence[int],
        held_keys: Sequence[str],
        limit: int,
    ) -> list[OutboxRow]:
        """Oldest unsent rows of ``partitions``, without the rows ``exclude`` (in flight) and
        without any row of ``held_keys`` (backing off: their later events must wait)."""
        ...

    async def claim_ids(self, ids: Sequence[int], partitions: Sequence[int]) -> list[OutboxRow]:
        """The rows ``ids`` that are still unsent and in ``partitions`` (retry heads)."""
        ...

    async def mark_sent(self, sent: Sequence[Sent]) -> int: ...
    async def record_failures(self, failures: Sequence[tuple[int, str]]) -> None: ...
    async def quarantine(self, rows: Sequence[tuple[int, str]]) -> None: ...
    async def purge(self, older_than_seconds: float, limit: int) -> int: ...
    async def backlog(self) -> Backlog: ...
    async def vacuum(self) -> None: ...
    async def can_vacuum(self) -> bool: ...


class Publisher(Protocol):
    async def publish(self, rows: Sequence[OutboxRow]) -> list[PublishResult]:
        """Publish ``rows`` pipelined; one result per row, in order. Never raises for one
        message's failure: it becomes a :class:`Failure` with a verdict, settled (a stream
        that does not exist is POISON, not NO_RESPONDERS, once the publisher knows).
        Consecutive rows sharing a ``txn`` are one transaction, sent as one atomic batch: all
        stored or none (then each row has the batch's verdict, or SPLIT)."""
        ...

    def batchable(self, rows: Sequence[OutboxRow]) -> bool:
        """Whether these rows of one transaction can go as one atomic batch (no I/O)."""
        ...


class Validator(Protocol):
    async def refusals(self, rows: Sequence[OutboxRow]) -> list[Failure | None]:
        """One entry per row, in order: why the row must not be sent (a verdict, e.g. poison
        for a raw row that breaks its contract), or ``None`` to send it."""
        ...


class Partitions(Protocol):
    def current(self) -> Sequence[int]:
        """The partitions this relay may publish right now (``relay.leases.LeaseManager``
        holds their leases)."""
        ...


class Rounds:
    """Rounds the relay loop has completed. The loop counts; the lease manager reads, and hands
    a partition it set aside over only after a round has ended since (the batch in hand may
    hold rows of it)."""

    __slots__ = ("completed",)

    def __init__(self) -> None:
        self.completed = 0

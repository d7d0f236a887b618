"""In-process counters of one relay, read by ``status``, the demo and the metrics endpoint."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from outbox_client.headers import Header
from relay.ports import Ack, OutboxRow

_TYPE = Header.EVENT_TYPE.value


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    batches: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    by_stream: Counter[str] = field(default_factory=Counter)
    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stream, event type)
    purged: int = 0
    keys_backing_off: int = 0  # keys whose next event waits for a retry (set every round)
    lag: Callable[[float], None] | None = None  # observes commit -> PubAck seconds
    on_batch: Callable[[int, float], None] | None = None  # observes (rows, seconds)
    last_progress: float = field(default_factory=time.monotonic)

    def record_ack(self, row: OutboxRow, ack: Ack) -> None:
        self.published += 1
        self.by_stream[ack.stream] += 1
        self.by_type[(ack.stream, row.headers.get(_TYPE, "unknown"))] += 1
        if ack.duplicate:
            self.duplicates += 1
        if self.lag is not None:
            self.lag(time.time() - row.created_at.timestamp())

    def record_batch(self, claimed: int, sent: int, seconds: float) -> None:
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(claimed, seconds)
        if sent:
            self.last_progress = time.monotonic()

    def record_retry(self, reason: str) -> None:
        self.retries[_reason_class(reason)] += 1

    def record_quarantine(self, reason: str) -> None:
        self.quarantined[_reason_class(reason)] += 1


def _reason_class(reason: str) -> str:
    """A low-cardinality label for a reason ("invalid subject: ..." -> "invalid subject")."""
    return reason.split(":", 1)[0].split(";", 1)[0][:60]

"""In-process counters of one relay, read by ``status``, the demo and the metrics endpoint."""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from outbox_client.events.registry import registered_events
from outbox_client.headers import Header
from relay.log import log_event
from relay.ports import Failure, OutboxRow, PublishResult, Stored, Verdict

logger = logging.getLogger("relay.stats")
_TYPE = Header.EVENT_TYPE.value

#: How a transaction of several events handed out whole (WAL capture) went, the labels of
#: ``vertector_relay_atomic_batches_total``: stored as one atomic batch; split (its batch was
#: refused for what it holds, its events went one by one); retried (its batch was not stored
#: now: it waits whole); fallback (sent event by event: the publisher cannot batch it).
ATOMIC_OUTCOMES = ("stored", "split", "retried", "fallback")

#: Producers choose the event type header, and each distinct value would be a metric series of
#: its own. The catalog's types always get their label; beyond them at most this many other
#: types do, and every further one is counted under ``other``.
MAX_OTHER_TYPE_LABELS = 50
#: A type label longer than this is counted under ``other`` too.
MAX_TYPE_LABEL_LENGTH = 100
OTHER_TYPES = "other"

#: The upper bounds (seconds) of ``vertector_relay_commit_to_publish_seconds``'s buckets.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    batches: int = 0
    #: WAL capture's transactions of several events, by how they went (see ATOMIC_OUTCOMES).
    atomic: Counter[str] = field(default_factory=Counter)
    split_events: int = 0  # events of transactions that went one by one after a batch failed
    retries: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    by_stream: Counter[str] = field(default_factory=Counter)
    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stream, event type)
    purged: int = 0
    keys_backing_off: int = 0  # keys whose next event waits for a retry (set every round)
    #: Commit -> PubAck seconds of each stored event: how many fell in each of LAG_BUCKETS
    #: (the last: above them all), and their sum; a histogram read at scrape time, since a
    #: prometheus_client Histogram takes a lock per observation, and this is one per event.
    lag_counts: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))
    lag_sum: float = 0.0
    on_batch: Callable[[int, float], None] | None = None  # observes (rows, seconds)
    last_progress: float = field(default_factory=time.monotonic)
    _catalog: frozenset[str] = field(default_factory=lambda: frozenset(registered_events()))
    _other_labels: set[str] = field(default_factory=set)

    def record_ack(self, row: OutboxRow, ack: Stored) -> None:
        """A PubAck. One saying "duplicate" is not a publish: JetStream kept the message it
        already had under this event id and dropped this one."""
        if ack.duplicate:
            self.duplicates += 1
            log_event(
                logger, "relay.event.duplicate", level=logging.WARNING,
                event_id=str(row.event_id), subject=row.subject[:200], stream=ack.stream,
                stored_seq=ack.seq,
                detail="JetStream already holds a message with this event id and dropped this"
                " one: a re-publish after a crash or handover (harmless), or a reused event id"
                " (then this row's event was never stored)",
            )  # fmt: skip
            return
        self.published += 1
        self.by_stream[ack.stream] += 1
        self.by_type[(ack.stream, self.type_label(row.headers.get(_TYPE)))] += 1
        seconds = time.time() - row.created_at.timestamp()
        self.lag_counts[bisect_left(LAG_BUCKETS, seconds)] += 1  # le: the first bound >= it
        self.lag_sum += seconds

    def type_label(self, event_type: object) -> str:
        """The metric label of an event type: bounded, whatever producers write."""
        if not isinstance(event_type, str) or not event_type:
            return "unknown"
        if event_type in self._catalog or event_type in self._other_labels:
            return event_type
        if (
            len(self._other_labels) >= MAX_OTHER_TYPE_LABELS
            or len(event_type) > MAX_TYPE_LABEL_LENGTH
        ):
            return OTHER_TYPES
        self._other_labels.add(event_type)
        return event_type

    def record_batch(self, claimed: int, sent: int, seconds: float) -> None:
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(claimed, seconds)
        if sent:
            self.last_progress = time.monotonic()

    def record_atomic(self, results: Sequence[PublishResult]) -> None:
        """The results of one transaction sent as an atomic batch (its rows refused before
        sending, by the checks or the publisher, are quarantined whatever the batch did)."""
        answers = [r for r in results if not _is(r, Verdict.POISON)]
        if not answers:
            return
        if all(isinstance(r, Stored) for r in answers):
            self.atomic["stored"] += 1
        elif any(_is(r, Verdict.SPLIT) for r in answers):
            self.atomic["split"] += 1
        else:
            self.atomic["retried"] += 1

    def record_retry(self, reason: str) -> None:
        self.retries[_reason_class(reason)] += 1

    def record_quarantine(self, reason: str) -> None:
        self.quarantined[_reason_class(reason)] += 1


def _is(result: PublishResult, verdict: Verdict) -> bool:
    return isinstance(result, Failure) and result.verdict is verdict


def _reason_class(reason: str) -> str:
    """A low-cardinality label for a reason ("invalid subject: ..." -> "invalid subject")."""
    return reason.split(":", 1)[0].split(";", 1)[0][:60]

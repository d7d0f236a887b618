"""Publishing one claimed batch in *waves*, and what each row's result does to its key.

Wave ``k`` holds the ``k``-th event of every partition key in the batch, so no two in-flight
messages share a key; the next wave starts when the previous one's acks are in. When an event
fails, the later events of its key wait for the next batch. Pipelining therefore never reorders
a key, even when a connection drops mid-wave. Leases are checked before every wave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from relay.log import log_event
from relay.outcomes import Outcome
from relay.ports import (
    Failure,
    OutboxRow,
    Partitions,
    Publisher,
    PublishResult,
    Sent,
    Stored,
    Validator,
    Verdict,
)
from relay.retry import Backoff
from relay.retrying import RetryingKeys
from relay.stats import RelayStats

logger = logging.getLogger("relay.worker")


def plan_waves(rows: Sequence[OutboxRow], blocked: set[str]) -> list[list[OutboxRow]]:
    """Split claimed rows into waves with at most one row per key each, keeping claim order.

    Rows whose key is ``blocked`` (an earlier event of the key is backing off) are left out.
    """
    waves: list[list[OutboxRow]] = []
    seen: dict[str, int] = {}
    for row in rows:
        key = row.partition_key
        if key in blocked:
            continue
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(row)
    return waves


class WavePublisher:
    """Publishes a batch wave by wave and records each row's result: a stored row frees its
    key, a failed one holds its key back (:class:`~relay.retrying.RetryingKeys`), a poison one
    is quarantined. Holds no state of its own between batches."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        partitions: Partitions,
        retrying: RetryingKeys,
        event_backoff: Backoff,
        stats: RelayStats,
        clock: Callable[[], float],
        validator: Validator | None = None,
    ) -> None:
        self.publisher = publisher
        self.partitions = partitions
        self.retrying = retrying
        self.event_backoff = event_backoff
        self.stats = stats
        self.clock = clock
        self.validator = validator

    async def publish(self, rows: list[OutboxRow]) -> Outcome:
        outcome = Outcome()
        retrying = self.retrying
        blocked: set[str] = set()
        if retrying:
            blocked = retrying.blocked({row.id for row in rows})
        failed_keys: set[str] = set()
        started = time.perf_counter()
        for wave in plan_waves(rows, blocked):
            # A relay that was paused past its lease, or handed a partition over, publishes
            # nothing more of it.
            owned = set(self.partitions.current())
            todo = [r for r in wave if r.partition_key not in failed_keys and r.partition in owned]
            if len(todo) < len(wave):
                lost = [r for r in wave if r.partition not in owned]
                failed_keys.update(r.partition_key for r in lost)
            if not todo:
                continue
            results = await self._send(todo)
            for row, result in zip(todo, results, strict=True):
                if isinstance(result, Stored):
                    retrying.acked(row, result)
                    outcome.sent.append(Sent(row.id, result))
                    self.stats.record_ack(row, result)
                elif self._fail(row, result, outcome):
                    # The key waits; a quarantined event is settled and does not hold it.
                    failed_keys.add(row.partition_key)
        outcome.unpublished_keys = failed_keys | (blocked & {r.partition_key for r in rows})
        # Loud at an event's first failure, one line per batch; quiet while it is retried.
        outcome.first_failures.log(logger, "relay.events.delivery_failed", logging.WARNING)
        outcome.failed_again.log(logger, "relay.events.retry_failed", logging.DEBUG)
        outcome.poison.log(logger, "relay.events.quarantined", logging.WARNING)
        if outcome.sent and retrying:
            retrying.wake({s.stored.stream for s in outcome.sent}, self.clock())
        self.stats.record_batch(len(rows), len(outcome.sent), time.perf_counter() - started)
        log_event(
            logger, "relay.batch.published", level=logging.DEBUG,
            claimed=len(rows), sent=len(outcome.sent), failed=len(outcome.failures),
            quarantined=len(outcome.quarantined),
        )  # fmt: skip
        return outcome

    async def _send(self, rows: list[OutboxRow]) -> list[PublishResult]:
        """Publish ``rows``, except those the validator refuses: their refusal is their result."""
        if self.validator is None:
            return await self.publisher.publish(rows)
        refused = await self.validator.refusals(rows)
        if not any(refused):
            return await self.publisher.publish(rows)
        allowed = [row for row, failure in zip(rows, refused, strict=True) if failure is None]
        sent = iter(await self.publisher.publish(allowed) if allowed else [])
        return [failure if failure is not None else next(sent) for failure in refused]

    def _fail(self, row: OutboxRow, failure: Failure, outcome: Outcome) -> bool:
        """Record a failed publish (its verdict is settled: :mod:`relay.classify`); True when
        its key must now wait (a retry), False when the event is quarantined."""
        verdict = failure.verdict
        if verdict is Verdict.POISON:
            self.retrying.release(row.partition_key)
            outcome.quarantined.append((row.id, failure.reason))
            self.stats.record_quarantine(failure.reason)
            outcome.poison.add(row, failure.reason)
            log_event(
                logger, "relay.event.quarantined", level=logging.DEBUG,
                event_id=str(row.event_id), subject=row.subject[:200], reason=failure.reason,
            )  # fmt: skip
            return False
        outcome.failures.append((row.id, failure.reason))
        report = outcome.first_failures if row.attempts == 0 else outcome.failed_again
        report.add(row, failure.reason)
        outcome.unanswered += verdict is Verdict.TRANSIENT
        self.stats.record_retry(failure.reason)
        retry_at = self.clock() + self.event_backoff.delay(row.attempts + 1)
        unreachable = verdict is Verdict.NO_RESPONDERS or verdict is Verdict.TRANSIENT
        self.retrying.hold(row, retry_at, unreachable=unreachable)
        return True

"""Publishing one claimed batch in *waves*, and what each row's result does to its key.

Wave ``k`` holds the ``k``-th event of every partition key in the batch, so no two in-flight
messages share a key; the next wave starts when the previous one's acks are in. When an event
fails, the later events of its key wait for the next batch. Pipelining therefore never reorders
a key, even when a connection drops mid-wave. Leases are checked before every wave.

Transactions: rows sharing a ``txn`` (WAL capture hands a transaction out whole) are one *unit*
when the publisher can send them as one atomic batch: the unit takes a wave of its own keys
(the first wave in which none of its keys has an earlier event pending), goes all at once and
fails all at once; a unit one of whose keys is held back waits whole, and so do the later
events of all of its keys. A unit the publisher cannot batch (or whose batch the server turned
down: Verdict.SPLIT) is published event by event, in the same per-key waves as any other row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

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


Unit = list[OutboxRow]


def plan_waves(rows: Sequence[OutboxRow], blocked: set[str]) -> list[list[OutboxRow]]:
    """Split claimed rows into waves with at most one row per key each, keeping claim order.

    Rows whose key is ``blocked`` (an earlier event of the key is backing off) are left out.
    """
    waves, _ = plan_units([[row] for row in rows], blocked)
    return [[row for unit in wave for row in unit] for wave in waves]


def plan_units(units: Sequence[Unit], blocked: set[str]) -> tuple[list[list[Unit]], set[str]]:
    """Waves of units, no key in two units of a wave, each key's units in claim order; and the
    keys left out: ``blocked`` ones and every key of a unit that has one (its later events
    must wait with it)."""
    waves: list[list[Unit]] = []
    seen: dict[str, int] = {}
    held = set(blocked)
    left_out: set[str] = set()
    for unit in units:
        if len(unit) == 1:  # most units: the same steps for one key, without the sets
            key = unit[0].partition_key
            if key in held:
                left_out.add(key)
                continue
            n = seen.get(key, 0)
            seen[key] = n + 1
        else:
            keys = {row.partition_key for row in unit}
            if keys & held:
                held |= keys
                left_out |= keys
                continue
            n = max(seen.get(key, 0) for key in keys)
            for key in keys:
                seen[key] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(unit)
    return waves, left_out


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
        units, unbatched = self._units(rows)
        waves, left_out = plan_units(units, blocked)
        # Transactions going event by event although handed out whole (the publisher cannot
        # batch them); one left out now is counted when it goes.
        fallback = sum(not keys & left_out for keys in unbatched)
        if fallback:
            self.stats.atomic["fallback"] += fallback
        next_wave = 0
        while next_wave < len(waves):
            wave = waves[next_wave]
            next_wave += 1
            # A relay that was paused past its lease, or handed a partition over, publishes
            # nothing more of it.
            owned = set(self.partitions.current())
            todo: list[OutboxRow] = []
            batches: list[tuple[int, int]] = []  # (start, end) in todo of each atomic unit
            for unit in wave:
                if len(unit) == 1:  # most units: the same steps for one row, without the sets
                    row = unit[0]
                    if row.partition_key in failed_keys or row.partition not in owned:
                        failed_keys.add(row.partition_key)
                    else:
                        todo.append(row)
                    continue
                keys = {row.partition_key for row in unit}
                if keys & failed_keys or any(row.partition not in owned for row in unit):
                    failed_keys |= keys
                else:
                    if len(unit) > 1:
                        batches.append((len(todo), len(todo) + len(unit)))
                    todo += unit
            if not todo:
                continue
            results = await self._send(todo)
            for start, end in batches:
                self.stats.record_atomic(results[start:end])
            split: list[Unit] = []
            split_reasons: set[str] = set()
            for row, result in zip(todo, results, strict=True):
                if isinstance(result, Stored):
                    retrying.acked(row, result)
                    outcome.sent.append(Sent(row.id, result))
                    self.stats.record_ack(row, result)
                elif result.verdict is Verdict.SPLIT:
                    split.append([replace(row, txn=None)])
                    split_reasons.add(result.reason)
                elif self._fail(row, result, outcome, first=row.partition_key not in failed_keys):
                    # The key waits; a quarantined event is settled and does not hold it.
                    failed_keys.add(row.partition_key)
            if split:
                # One by one, in claim order with what was still to come.
                self.stats.split_events += len(split)
                log_event(
                    logger, "relay.txn.split", level=logging.INFO, events=len(split),
                    reasons=sorted(split_reasons)[:5],
                )  # fmt: skip
                rest = sorted([*split, *(u for w in waves[next_wave:] for u in w)],
                              key=lambda unit: unit[0].id)  # fmt: skip
                waves, more = plan_units(rest, failed_keys)
                left_out |= more
                next_wave = 0
        outcome.unpublished_keys = (
            failed_keys | left_out | (blocked & {r.partition_key for r in rows})
        )
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

    def _units(self, rows: list[OutboxRow]) -> tuple[list[Unit], list[set[str]]]:
        """Consecutive rows of one transaction as one unit when the publisher can batch them;
        every other row alone. And the keys of each transaction that cannot be batched."""
        units: list[Unit] = []
        for row in rows:
            if row.txn is not None and units and units[-1][0].txn == row.txn:
                units[-1].append(row)
            else:
                units.append([row])
        out: list[Unit] = []
        unbatched: list[set[str]] = []
        for unit in units:
            if len(unit) == 1 and unit[0].txn is None:
                out.append(unit)
                continue
            if len(unit) > 1 and self.publisher.batchable(unit):
                out.append(unit)
                continue
            if len(unit) > 1:
                unbatched.append({row.partition_key for row in unit})
            out += [[replace(row, txn=None)] if row.txn is not None else [row] for row in unit]
        return out, unbatched

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

    def _fail(self, row: OutboxRow, failure: Failure, outcome: Outcome, *, first: bool) -> bool:
        """Record a failed publish (its verdict is settled: :mod:`relay.classify`); True when
        its key must now wait (a retry), False when the event is quarantined. ``first``: the
        key's first failed row here, its head (a failed batch fails later rows of it too)."""
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
        if first:
            self.retrying.hold(row, retry_at, unreachable=unreachable)
        return True

"""The relay loop: claim committed rows, publish them in per-key order, record the outcome.

It imports no driver: it talks to a :class:`~relay.ports.Store` and a
:class:`~relay.ports.Publisher`; ``relay/app.py`` wires the real ones.

Order: a batch is published in *waves*. Wave ``k`` holds the ``k``-th event of every partition
key in the batch, so no two in-flight messages share a key; the next wave starts when the
previous one's acks are in. When an event fails, the later events of its key wait for the next
batch. Pipelining therefore never reorders a key, even when a connection drops mid-wave.

Retries: a key whose event failed is *retrying*. Claims skip its rows altogether, and when its
backoff is due only its head (the failed row) is claimed again, by id; once that goes, the key
rejoins the ordinary claims. So a key stuck behind a full stream, however long its backlog,
never fills a batch and never starves the keys behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from relay.aio import first_of
from relay.batchlog import BatchReport
from relay.checkpoints import NO_CHECKPOINTS, Checkpoints
from relay.errors import PublishError, StoreError
from relay.log import log_event
from relay.ports import (
    Failure,
    OutboxRow,
    Publisher,
    PublishResult,
    Sent,
    Store,
    Stored,
    Validator,
    Verdict,
)
from relay.retry import RetryPolicies
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


@dataclass(slots=True)
class Retry:
    """A key backing off: its head row, when to try it again, and the stream it waits for
    when that stream was unreachable (not when it refused): the key is retried at once when
    the stream acknowledges something again, instead of sleeping out its backoff."""

    at: float
    head: int
    stream: str | None


#: How many subject -> stream answers the relay remembers (subjects are few in practice).
_KNOWN_SUBJECTS = 10_000
#: How many keys may be backing off before the relay stops taking on new rows (see _claim).
MAX_RETRYING = 10_000


@dataclass
class Outcome:
    """What a batch produced, written to the store in three statements."""

    sent: list[Sent] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    quarantined: list[tuple[int, str]] = field(default_factory=list)
    #: Keys with rows of the batch left unpublished (failed, blocked, or not owned): rows
    #: of these keys in a batch claimed meanwhile must wait.
    unpublished_keys: set[str] = field(default_factory=set)
    #: Failures for want of an answer from NATS (not a JetStream refusal of one event).
    unanswered: int = 0
    #: Events that failed for the first time (a warning), and retries that failed again.
    first_failures: BatchReport = field(default_factory=BatchReport)
    failed_again: BatchReport = field(default_factory=BatchReport)
    #: Events quarantined: one warning per batch (1,000 hostile rows are not 1,000 lines).
    poison: BatchReport = field(default_factory=BatchReport)

    def empty(self) -> bool:
        return not (self.sent or self.failures or self.quarantined)


@dataclass(frozen=True)
class LoopConfig:
    batch_size: int = 1000
    poll_interval: float = 0.5
    no_stream_max_attempts: int = 20


class Relay:
    """One relay loop. ``partitions()`` says which partitions this instance owns right now.

    Database work overlaps publishing: while a batch is published, the next one is already
    being claimed (when the last was full) and the previous one's marks are being written.
    Rows in any of those states are excluded from claims, so nothing is published twice.
    """

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        config: LoopConfig,
        policies: RetryPolicies,
        partitions: Callable[[], Sequence[int]],
        wakeup: asyncio.Event | None = None,
        stats: RelayStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
        validator: Validator | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.validator = validator
        self.config = config
        self.policies = policies
        self.partitions = partitions
        self.wakeup = wakeup or asyncio.Event()
        self.stats = stats or RelayStats()
        self.clock = clock
        self.checkpoints = checkpoints
        self._retrying: dict[str, Retry] = {}  # partition key -> its retry
        self._stream_of: dict[str, str] = {}  # subject -> stream, learned from PubAcks
        self._unwritten = Outcome()  # outcomes whose write failed: retried before claiming
        self._writing: tuple[set[int], asyncio.Task[Outcome]] | None = None
        self._prefetch: asyncio.Task[tuple[list[OutboxRow], bool]] | None = None
        self._store_failures = 0
        self._outage_batches = 0
        self.steps = 0  # completed rounds; the lease manager releases partitions between them

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set; the batch in hand is finished and recorded first."""
        log_event(logger, "relay.loop.started")
        try:
            while not stop.is_set():
                delay = await self.step()
                if delay is None:
                    continue  # a full batch: more is waiting
                await first_of(self.wakeup.wait(), stop.wait(), within=delay)
        finally:
            await self.finish()
        log_event(logger, "relay.loop.stopped")

    async def finish(self) -> None:
        """Drop the prefetched batch and wait for the last write (then retry it once)."""
        if self._prefetch is not None:
            self._prefetch.cancel()
            await asyncio.gather(self._prefetch, return_exceptions=True)
            self._prefetch = None
        await self._settle_write()
        if not self._unwritten.empty():
            self._unwritten = await self._write(self._unwritten)

    async def step(self) -> float | None:
        """One round. Returns ``None`` to go again at once, else how long to wait at most."""
        try:
            return await self._step()
        finally:
            self.steps += 1
            self.stats.keys_backing_off = len(self._retrying)

    async def _step(self) -> float | None:
        if not self._unwritten.empty():
            await self._settle_write()
            self._unwritten = await self._write(self._unwritten)
            if not self._unwritten.empty():
                self._store_failures += 1
                return self.policies.postgres_unavailable.delay(self._store_failures)
        now = self.clock()
        try:
            rows, full = await self._next_rows()
        except StoreError as exc:
            self._store_failures += 1
            log_event(logger, "relay.store.unavailable", level=logging.WARNING, error=str(exc))
            return self.policies.postgres_unavailable.delay(self._store_failures)
        self._store_failures = 0
        if not rows:
            await self._settle_write()
            return self._idle_delay(now)
        self.checkpoints.reached("after_claim")
        # Prefetch only when nothing is held back: a batch claimed while some rows are excluded
        # (backing off, or left unpublished by the batch in hand) could hold later events of
        # their keys, which would overtake them once the backoff expires.
        prefetch = full and not self._retrying
        if prefetch:
            self._prefetch = asyncio.create_task(self._claim({row.id for row in rows}))
        outcome = await self._publish(rows)
        if outcome.unpublished_keys:
            await self._drop_prefetch()
        # An outage is NATS not answering at all; a refusal of some events (a full stream, an
        # election) only holds their keys back, so other keys keep flowing.
        outage = bool(outcome.unanswered) and not outcome.sent and not outcome.quarantined
        if outcome.sent:
            self.checkpoints.reached("after_ack_before_mark")
        await self._settle_write()
        self._start_write(outcome)
        if outage:
            # Nothing got through: NATS is down or overloaded. Back off the whole loop and
            # retry these same rows first, rather than walking the backlog failing each one.
            failed = {row_id for row_id, _ in outcome.failures}
            self._retrying = {k: v for k, v in self._retrying.items() if v.head not in failed}
            await self._drop_prefetch()
            self._outage_batches += 1
            return self.policies.nats_unavailable.delay(self._outage_batches)
        self._outage_batches = 0
        return None if full else self._idle_delay(now)

    async def _next_rows(self) -> tuple[list[OutboxRow], bool]:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            return await prefetch
        self.wakeup.clear()  # before the claim: a notification during it is not lost
        return await self._claim(set())

    async def _claim(self, also_exclude: set[int]) -> tuple[list[OutboxRow], bool]:
        """The oldest rows of keys not retrying, plus the heads of retrying keys now due; and
        whether the first part was a full batch (more is waiting)."""
        exclude = set(also_exclude)
        if self._writing is not None:
            exclude |= self._writing[0]
        partitions = self.partitions()
        rows: list[OutboxRow] = []
        # Past MAX_RETRYING failing keys something systemic is wrong (a stream full for hours
        # with a key per event): retry those, but take on no new keys to fail, so memory and
        # the held-keys list stay bounded.
        if len(self._retrying) < MAX_RETRYING:
            rows = await self.store.claim(
                partitions, sorted(exclude), sorted(self._retrying), self.config.batch_size
            )
        full = len(rows) >= self.config.batch_size
        now = self.clock()
        due = sorted((r.at, r.head) for r in self._retrying.values() if r.at <= now)
        if due:
            asked = {head for _, head in due[: self.config.batch_size]}
            heads = await self.store.claim_ids(sorted(asked), partitions)
            # A head not found was sent by another relay or its partition moved: forget it.
            gone = asked - {row.id for row in heads}
            self._retrying = {k: v for k, v in self._retrying.items() if v.head not in gone}
            rows = sorted([*rows, *heads], key=lambda row: row.id)
        return rows, full

    async def _drop_prefetch(self) -> None:
        if self._prefetch is not None:
            self._prefetch.cancel()
            await asyncio.gather(self._prefetch, return_exceptions=True)
            self._prefetch = None

    def _idle_delay(self, now: float) -> float:
        soonest = min((r.at for r in self._retrying.values()), default=None)
        if soonest is None:
            return self.config.poll_interval
        return max(0.0, min(self.config.poll_interval, soonest - now))

    # --- publishing ----------------------------------------------------------------------------

    async def _publish(self, rows: list[OutboxRow]) -> Outcome:
        outcome = Outcome()
        blocked: set[str] = set()
        if self._retrying:
            in_batch = {row.id for row in rows}
            blocked = {key for key, r in self._retrying.items() if r.head not in in_batch}
        failed_keys: set[str] = set()
        streams: dict[str, Failure | None] = {}  # subject -> what JetStream's API said, once
        started = time.perf_counter()
        for wave in plan_waves(rows, blocked):
            # Leases are checked before every wave: a relay that was paused past its lease,
            # or handed a partition over, publishes nothing more of it.
            owned = set(self.partitions())
            todo = [r for r in wave if r.partition_key not in failed_keys and r.partition in owned]
            if len(todo) < len(wave):
                lost = [r for r in wave if r.partition not in owned]
                failed_keys.update(r.partition_key for r in lost)
            if not todo:
                continue
            results = await self._send(todo)
            for row, result in zip(todo, results, strict=True):
                if isinstance(result, Stored):
                    self._retrying.pop(row.partition_key, None)
                    outcome.sent.append(Sent(row.id, result))
                    self.stats.record_ack(row, result)
                    if row.subject not in self._stream_of:
                        if len(self._stream_of) >= _KNOWN_SUBJECTS:
                            self._stream_of.clear()
                        self._stream_of[row.subject] = result.stream
                elif await self._fail(row, result, outcome, streams):
                    # The key waits; a quarantined event is settled and does not hold it.
                    failed_keys.add(row.partition_key)
        outcome.unpublished_keys = failed_keys | (blocked & {r.partition_key for r in rows})
        # Loud at an event's first failure, one line per batch; quiet while it is retried.
        outcome.first_failures.log(logger, "relay.events.delivery_failed", logging.WARNING)
        outcome.failed_again.log(logger, "relay.events.retry_failed", logging.DEBUG)
        outcome.poison.log(logger, "relay.events.quarantined", logging.WARNING)
        self._wake(outcome.sent)
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

    async def _fail(
        self,
        row: OutboxRow,
        failure: Failure,
        outcome: Outcome,
        streams: dict[str, Failure | None],
    ) -> bool:
        """Record a failed publish; True when its key must now wait (a retry), False when the
        event is quarantined."""
        attempts = row.attempts + 1
        unreachable = failure.verdict in (Verdict.NO_STREAM, Verdict.TRANSIENT)
        if failure.verdict is Verdict.NO_STREAM and attempts >= self.config.no_stream_max_attempts:
            if row.subject not in streams:
                streams[row.subject] = await self._why_no_responders(row.subject)
            failure = streams[row.subject] or Failure(
                Verdict.POISON, f"{failure.reason}; gave up after {attempts} attempts"
            )
        verdict = failure.verdict
        if verdict is Verdict.POISON:
            self._retrying.pop(row.partition_key, None)
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
        retry_at = self.clock() + self.policies.event_publish.delay(attempts)
        stream = self._stream_of.get(row.subject) if unreachable else None
        self._retrying[row.partition_key] = Retry(retry_at, row.id, stream)
        return True

    def _wake(self, sent: list[Sent]) -> None:
        """Streams that acknowledged again are back: their waiting keys are due now."""
        if not sent or not self._retrying:
            return
        acked = {s.stored.stream for s in sent}
        now = self.clock()
        for retry in self._retrying.values():
            if retry.stream in acked and retry.at > now:
                retry.at = now

    async def _why_no_responders(self, subject: str) -> Failure | None:
        """'No responders' is both a missing stream and a stream without a leader (election,
        lost quorum): ask JetStream's API which. None: it confirms no stream captures the
        subject; otherwise the transient failure to retry (forever, like any outage)."""
        try:
            stream = await self.publisher.stream_of(subject)
        except PublishError as exc:
            return Failure(Verdict.TRANSIENT, f"no responders; {exc}")
        if stream is None:
            return None
        return Failure(Verdict.REFUSED, f"stream {stream} has no leader: election or lost quorum")

    # --- recording -------------------------------------------------------------------------------

    def _start_write(self, outcome: Outcome) -> None:
        if outcome.empty():
            return
        ids = {s.row_id for s in outcome.sent} | {q[0] for q in outcome.quarantined}
        self._writing = (ids, asyncio.create_task(self._write(outcome)))

    async def _settle_write(self) -> None:
        if self._writing is None:
            return
        _, task = self._writing
        leftover = await task
        self._writing = None
        self._unwritten.sent += leftover.sent
        self._unwritten.quarantined += leftover.quarantined
        self._unwritten.failures += leftover.failures

    async def _write(self, outcome: Outcome) -> Outcome:
        """Record a batch's outcome; returns what could not be written (empty on success)."""
        left = Outcome(list(outcome.sent), list(outcome.failures), list(outcome.quarantined))
        try:
            if left.sent:
                await self.store.mark_sent(left.sent)
                left.sent = []
            if left.quarantined:
                await self.store.quarantine(left.quarantined)
                left.quarantined = []
            if left.failures:
                await self.store.record_failures(left.failures)
                left.failures = []
        except StoreError as exc:
            log_event(
                logger, "relay.store.write_failed", level=logging.WARNING,
                error=str(exc), pending_marks=len(left.sent),
            )  # fmt: skip
        return left

    @property
    def has_unwritten(self) -> bool:
        return not self._unwritten.empty() or self._writing is not None

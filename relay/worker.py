"""The relay loop: claim committed rows, publish them in per-key order, record the outcome.

It imports no driver: it talks to a :class:`~relay.ports.Store` and a
:class:`~relay.ports.Publisher`; ``relay/app.py`` wires the real ones. Each part holds one kind
of state: :mod:`relay.claims` the prefetched batch, :mod:`relay.waves` publishes a batch,
:mod:`relay.retrying` the keys backing off, :mod:`relay.outcomes` the outcomes being written;
the loop here holds only its own counters.

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
from collections.abc import Callable
from dataclasses import dataclass

from relay.aio import first_of
from relay.checkpoints import NO_CHECKPOINTS, Checkpoints
from relay.claims import Claims
from relay.errors import StoreError
from relay.log import log_event
from relay.outcomes import OutcomeWriter
from relay.ports import Partitions, Publisher, Rounds, Store, Validator
from relay.retry import RetryPolicies
from relay.retrying import RetryingKeys
from relay.stats import RelayStats
from relay.waves import WavePublisher

logger = logging.getLogger("relay.worker")


@dataclass(frozen=True)
class LoopConfig:
    batch_size: int = 1000
    poll_interval: float = 0.5
    #: WAL capture (no wake-up from the database): while events arrived within the last
    #: ``busy_seconds``, poll this often instead of ``poll_interval``. None: never.
    busy_poll_interval: float | None = None
    busy_seconds: float = 1.0


class Relay:
    """One relay loop over the ``partitions`` this instance owns right now.

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
        partitions: Partitions,
        rounds: Rounds | None = None,
        wakeup: asyncio.Event | None = None,
        stats: RelayStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
        validator: Validator | None = None,
    ) -> None:
        self.config = config
        self.policies = policies
        self.wakeup = wakeup or asyncio.Event()
        self.stats = stats or RelayStats()
        self.clock = clock
        self.checkpoints = checkpoints
        self.rounds = rounds or Rounds()  # the lease manager releases partitions between them
        self.retrying = RetryingKeys()
        self.writer = OutcomeWriter(store)
        self.claims = Claims(
            store,
            partitions=partitions,
            retrying=self.retrying,
            writer=self.writer,
            batch_size=config.batch_size,
            wakeup=self.wakeup,
            clock=clock,
        )
        self.waves = WavePublisher(
            publisher,
            partitions=partitions,
            retrying=self.retrying,
            event_backoff=policies.event_publish,
            stats=self.stats,
            clock=clock,
            validator=validator,
        )
        self._store_failures = 0
        self._outage_batches = 0
        self._rows_at = -float("inf")  # when the last claim found rows

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
        await self.claims.drop_prefetch()
        await self.writer.settle()
        await self.writer.catch_up()

    async def step(self) -> float | None:
        """One round. Returns ``None`` to go again at once, else how long to wait at most."""
        try:
            return await self._step()
        finally:
            self.rounds.completed += 1
            self.stats.keys_backing_off = len(self.retrying)

    async def _step(self) -> float | None:
        if not await self.writer.catch_up():
            self._store_failures += 1
            return self.policies.postgres_unavailable.delay(self._store_failures)
        now = self.clock()
        try:
            rows, full = await self.claims.next()
        except StoreError as exc:
            self._store_failures += 1
            log_event(logger, "relay.store.unavailable", level=logging.WARNING, error=str(exc))
            return self.policies.postgres_unavailable.delay(self._store_failures)
        self._store_failures = 0
        if not rows:
            await self.writer.settle()
            return self._idle_delay(now)
        self._rows_at = now
        self.checkpoints.reached("after_claim")
        # Prefetch only when nothing is held back (see Claims.prefetch).
        if full and not self.retrying:
            self.claims.prefetch(rows)
        outcome = await self.waves.publish(rows)
        if outcome.unpublished_keys:
            await self.claims.drop_prefetch()
        # An outage is NATS not answering at all; a refusal of some events (a full stream, an
        # election) only holds their keys back, so other keys keep flowing.
        outage = bool(outcome.unanswered) and not outcome.sent and not outcome.quarantined
        if outcome.sent:
            self.checkpoints.reached("after_ack_before_mark")
        await self.writer.settle()
        self.writer.start(outcome)
        if outage:
            # Nothing got through: NATS is down or overloaded. Back off the whole loop and
            # retry these same rows first, rather than walking the backlog failing each one.
            self.retrying.forget_heads({row_id for row_id, _ in outcome.failures})
            await self.claims.drop_prefetch()
            self._outage_batches += 1
            return self.policies.nats_unavailable.delay(self._outage_batches)
        self._outage_batches = 0
        return None if full else self._idle_delay(now)

    def _idle_delay(self, now: float) -> float:
        poll = self.config.poll_interval
        busy = self.config.busy_poll_interval
        if busy is not None and now - self._rows_at < self.config.busy_seconds:
            poll = min(poll, busy)
        soonest = self.retrying.soonest()
        if soonest is None:
            return poll
        return max(0.0, min(poll, soonest - now))

    @property
    def has_unwritten(self) -> bool:
        return self.writer.pending

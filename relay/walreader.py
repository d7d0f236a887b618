"""WAL capture's ownership: one relay reads a slot at a time, through a lease.

A slot is one ordered stream; two readers would race for it (PostgreSQL lets one session use
a slot at a time) and each would publish the other's events. So with several relays, one
holds the reader lease of the slot and publishes everything, the others stand by and take
over when its lease expires (or at once when it leaves on shutdown). Throughput is therefore
one relay's; the standbys buy availability, not speed.

It answers the loop like :class:`relay.leases.LeaseManager`: ``current()`` is every partition
while the lease is held, none otherwise. Fencing is the same two halves: in the database the
slot only advances, and quarantine rows are only written, for the unexpired owner (the
statements join the lease); in the relay the lease counts as held until
``renewed_at + ttl - margin`` on the local monotonic clock. A change of hands (a new epoch)
resets the store's read-ahead buffer: the slot may have moved meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from outbox_client.table import PARTITIONS
from relay.aio import sleep_until_stopped
from relay.errors import StoreError
from relay.log import log_event
from relay.pgstore import PgStore

logger = logging.getLogger("relay.walreader")

ALL_PARTITIONS = list(range(PARTITIONS))


class WalReaderLease:
    def __init__(
        self,
        store: PgStore,
        slot: str,
        name: str,
        *,
        ttl: float,
        on_new_epoch: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.slot = slot
        self.name = name
        self.ttl = ttl
        self.on_new_epoch = on_new_epoch
        self.clock = clock
        self.margin = ttl / 5
        self.valid_until = 0.0
        self.epoch: int | None = None
        self.alive = 1
        self.acquired_at: float | None = None  # monotonic time of the last change of hands

    def current(self) -> list[int]:
        return ALL_PARTITIONS if self.clock() < self.valid_until else []

    @property
    def held(self) -> bool:
        return self.clock() < self.valid_until

    async def tick(self) -> None:
        started = self.clock()
        epoch = await self.store._call("fetchval", "wal_lease", self.slot, self.name, self.ttl)
        if epoch is None:
            if self.valid_until > started:
                log_event(logger, "relay.wal.reader_lost", level=logging.WARNING, slot=self.slot)
            self.valid_until = 0.0
            return
        if epoch != self.epoch:
            self.on_new_epoch()  # before the lease counts as held: nothing stale is claimed
            self.epoch = epoch
            self.acquired_at = started
            log_event(logger, "relay.wal.reader_acquired", slot=self.slot, epoch=epoch)
        self.valid_until = started + self.ttl - self.margin

    async def run(self, stop: asyncio.Event, on_change: Callable[[], None]) -> None:
        interval = self.ttl / 5
        while not stop.is_set():
            before = self.held
            try:
                await self.tick()
            except StoreError as exc:
                log_event(logger, "relay.wal.lease_failed", level=logging.WARNING, error=str(exc))
            if self.held != before:
                on_change()
            await sleep_until_stopped(stop, interval)

    async def leave(self) -> None:
        """Hand the slot over now (graceful shutdown), not after the lease expires."""
        self.valid_until = 0.0
        try:
            await self.store._call("execute", "wal_lease_leave", self.slot, self.name)
        except StoreError as exc:
            log_event(logger, "relay.wal.leave_failed", level=logging.WARNING, error=str(exc))

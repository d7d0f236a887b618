"""Partition ownership: each relay instance owns a fair share of the partitions through leases
in PostgreSQL, renewed every ``ttl / 5``; a silent instance's leases expire and move on.

Fencing has two halves. In the database, PubAcks are only recorded by a partition's current,
unexpired owner (``mark_sent`` joins the lease). In the relay, a lease counts as held only
until ``renewed_at + ttl - margin`` on the local monotonic clock, so an instance that was
paused (SIGSTOP, a GC pause, a frozen VM) sees on waking that its leases are gone and
publishes nothing more for those partitions.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from relay.aio import sleep_until_stopped
from relay.errors import StoreError
from relay.log import log_event
from relay.ports import Rounds

logger = logging.getLogger("relay.leases")


class LeaseStore(Protocol):
    async def heartbeat(self, name: str, ttl: float) -> int: ...
    async def renew(self, name: str, ttl: float) -> list[int]: ...
    async def acquire(self, name: str, ttl: float, count: int) -> list[int]: ...
    async def release(self, name: str, partitions: Sequence[int]) -> None: ...
    async def leave(self, name: str) -> None: ...


class LeaseManager:
    """The partitions this instance holds (:meth:`current`, the loop's
    :class:`~relay.ports.Partitions`). One it must hand over is set aside at once and released
    once the loop has completed a round since (``rounds``): the batch in hand may hold its rows.
    """

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        *,
        ttl: float,
        total: int,
        rounds: Rounds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.total = total
        self.rounds = rounds
        self.clock = clock
        self.margin = ttl / 5
        self._held: dict[int, float] = {}  # partition -> valid until (local monotonic)
        self._releasing: dict[int, int] = {}  # partition -> loop round when it was set aside
        self.alive = 1

    def current(self) -> list[int]:
        """Partitions this instance may publish right now."""
        now = self.clock()
        return sorted(
            p for p, until in self._held.items() if until > now and p not in self._releasing
        )

    async def tick(self) -> None:
        started = self.clock()
        self.alive = await self.store.heartbeat(self.name, self.ttl)
        renewed = await self.store.renew(self.name, self.ttl)
        valid_until = started + self.ttl - self.margin
        lost = set(self._held) - set(renewed)
        if lost:
            log_event(logger, "relay.leases.lost", level=logging.WARNING, partitions=sorted(lost))
        self._held = {p: valid_until for p in renewed}
        self._releasing = {p: s for p, s in self._releasing.items() if p in self._held}
        # Hand over what was set aside once the loop has finished a batch since then.
        done = [p for p, then in self._releasing.items() if self.rounds.completed > then]
        if done:
            await self.store.release(self.name, done)
            for p in done:
                self._held.pop(p, None)
                self._releasing.pop(p, None)
            log_event(logger, "relay.leases.released", partitions=done, alive=self.alive)
        fair = math.ceil(self.total / max(1, self.alive))
        keep = [p for p in sorted(self._held) if p not in self._releasing]
        for p in keep[fair:]:
            self._releasing[p] = self.rounds.completed  # no claims now; released after the round
        need = fair - len(self._held)
        if need > 0:
            acquired = await self.store.acquire(self.name, self.ttl, need)
            for p in acquired:
                self._held[p] = valid_until
            if acquired:
                log_event(logger, "relay.leases.acquired", partitions=acquired, alive=self.alive)

    async def run(self, stop: asyncio.Event, on_change: Callable[[], None]) -> None:
        interval = self.ttl / 5
        while not stop.is_set():
            before = self.current()
            try:
                await self.tick()
            except StoreError as exc:
                # Leases lapse on their own clock: nothing is published for them meanwhile.
                log_event(logger, "relay.leases.tick_failed", level=logging.WARNING, error=str(exc))
            if self.current() != before:
                on_change()
            await sleep_until_stopped(stop, interval)

    async def leave(self) -> None:
        """Give every partition back at once (graceful shutdown: no waiting for expiry)."""
        self._held.clear()
        try:
            await self.store.leave(self.name)
        except StoreError as exc:
            log_event(logger, "relay.leases.leave_failed", level=logging.WARNING, error=str(exc))

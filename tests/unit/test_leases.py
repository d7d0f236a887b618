"""Handing partitions over: the lease manager sets a partition aside at once and releases it
only after the loop has completed a round since (the batch in hand may hold its rows)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from relay.leases import LeaseManager
from relay.ports import Rounds

pytestmark = pytest.mark.unit


class Leases:
    """One relay's leases as PostgreSQL would keep them; ``alive`` relays share them."""

    def __init__(self, total: int) -> None:
        self.free = set(range(total))
        self.held: set[int] = set()
        self.alive = 1
        self.released: list[list[int]] = []

    async def heartbeat(self, name: str, ttl: float) -> int:
        return self.alive

    async def renew(self, name: str, ttl: float) -> list[int]:
        return sorted(self.held)

    async def acquire(self, name: str, ttl: float, count: int) -> list[int]:
        got = sorted(self.free)[:count]
        self.free -= set(got)
        self.held |= set(got)
        return got

    async def release(self, name: str, partitions: Sequence[int]) -> None:
        self.released.append(sorted(partitions))
        self.held -= set(partitions)
        self.free |= set(partitions)

    async def leave(self, name: str) -> None:
        self.free |= self.held
        self.held.clear()


async def test_a_partition_set_aside_is_released_only_after_a_round_of_the_loop() -> None:
    store, rounds = Leases(total=4), Rounds()
    leases = LeaseManager(store, "r1", ttl=10, total=4, rounds=rounds, clock=lambda: 0.0)
    await leases.tick()
    assert leases.current() == [0, 1, 2, 3]
    store.alive = 2  # a second relay joined: two partitions must go
    await leases.tick()
    assert leases.current() == [0, 1], "set-aside partitions are still claimed from"
    await leases.tick()
    assert store.released == [], "released while the loop's round was still under way"
    rounds.completed += 1
    await leases.tick()
    assert store.released == [[2, 3]]
    assert leases.current() == [0, 1]

"""WalStore's reads of the slot, in milliseconds (the in-memory slot of test_atomic_units):
after a full claim the next events are read in the background, while the batch in hand is
published; the rows a peek returns again (those already in the buffer) are not decoded again,
unless the slot is not where the relay left it; a read outlives a cancelled claim, and poison
it found is written to the quarantine even when the first write fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from relay import walstore
from relay.errors import StoreError
from relay.pgoutput import Transaction
from relay.ports import Sent
from relay.walstore import WalStore
from tests.unit.test_atomic_units import MemorySlot, frame, name

EVERY = [*range(256)]


class CountingSlot(MemorySlot):
    """Counts peeks; query ``held`` waits until ``gate`` is set; a query may fail once."""

    def __init__(self) -> None:
        super().__init__()
        self.peeks = 0
        self.gate: asyncio.Event | None = None
        self.held = "wal_peek"
        self.fail_once: set[str] = set()

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        if query in self.fail_once:
            self.fail_once.discard(query)
            raise StoreError(f"{query} failed: connection lost")
        self.peeks += query == "wal_peek"
        if query == self.held and self.gate is not None:
            await self.gate.wait()
        return await super()._call(method, query, *args)


def store_of(slot: MemorySlot) -> WalStore:
    return WalStore(slot, slot="s", publication="p", owner="me")  # type: ignore[arg-type]


def fill(slot: MemorySlot, transactions: int, events: int) -> None:
    for t in range(transactions):
        slot.commit(*(frame(f"k{t}-{e}", e) for e in range(events)))


def sent(rows: list[Any]) -> list[Sent]:
    return [Sent(r.id, 1) for r in rows]


async def settle_background() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_after_a_full_claim_the_next_events_are_read_while_the_batch_is_published() -> None:
    slot = CountingSlot()
    fill(slot, 10, 10)
    store = store_of(slot)
    first = await store.claim(EVERY, [], [], limit=10)  # one peek: 3 transactions (30 rows)
    assert (len(first), slot.peeks) == (10, 1)
    second = await store.claim(EVERY, [r.id for r in first], [], limit=10)
    await settle_background()
    # 10 events are left beyond the two claims, less than 2 more claims: read on already.
    assert (len(second), slot.peeks) == (10, 2)
    third = await store.claim(EVERY, [r.id for r in first + second], [], limit=10)
    assert len(third) == 10
    assert slot.peeks == 2  # found read ahead, not read by the claim
    await store.mark_sent(sent(first + second + third))
    names = [name(r) for r in first + second + third]
    assert names == [f"k{t}-{e}{e}" for t in range(3) for e in range(10)]


async def test_a_claim_that_is_not_full_reads_nothing_ahead() -> None:
    slot = CountingSlot()
    fill(slot, 1, 3)
    store = store_of(slot)
    assert len(await store.claim(EVERY, [], [], limit=10)) == 3
    await settle_background()
    assert slot.peeks == 1  # an idle relay polls once per claim, not twice


async def test_rows_already_in_the_buffer_are_not_decoded_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[int] = []
    real = walstore.transactions

    def counting(rows: Iterable[tuple[int, bytes]]) -> Iterator[Transaction]:
        def each() -> Iterator[tuple[int, bytes]]:
            for lsn, data in rows:
                decoded.append(lsn)
                yield lsn, data

        return real(each())

    monkeypatch.setattr(walstore, "transactions", counting)
    slot = CountingSlot()
    fill(slot, 6, 10)
    store = store_of(slot)
    claimed: list[Any] = []
    while len(claimed) < 60:
        claimed += await store.claim(EVERY, [r.id for r in claimed], [], limit=10)
    # Nothing was settled, so each peek returned everything before again: decoded once.
    assert slot.peeks >= 2
    assert sorted(decoded) == sorted(set(decoded)) == [lsn for lsn, _ in slot.changes]
    assert [name(r) for r in claimed] == [f"k{t}-{e}{e}" for t in range(6) for e in range(10)]


async def test_a_slot_behind_what_the_relay_confirmed_is_decoded_whole_and_nothing_is_repeated() -> (
    None
):
    slot = CountingSlot()
    fill(slot, 4, 5)
    store = store_of(slot)
    first = await store.claim(EVERY, [], [], limit=5)
    await store.mark_sent(sent(first))
    assert slot.confirmed == slot.changes[6][0]  # past the first transaction
    slot.confirmed = 0  # PostgreSQL restarted before persisting it
    rest: list[Any] = []
    while len(rest) < 15:
        got = await store.claim(EVERY, [r.id for r in rest], [], limit=5)
        assert got, "the store found nothing more to claim"
        rest += got
    assert [name(r) for r in rest] == [f"k{t}-{e}{e}" for t in range(1, 4) for e in range(5)]
    await store.mark_sent(sent(rest))
    assert slot.confirmed == slot.changes[-1][0]


async def test_a_read_outlives_a_cancelled_claim_and_its_poison_is_settled() -> None:
    slot = CountingSlot()
    slot.commit(frame("a", 1), b"\x09not a frame", frame("b", 1))
    slot.commit(frame("c", 1))
    store = store_of(slot)
    slot.gate, slot.held = asyncio.Event(), "wal_quarantine"
    claim = asyncio.ensure_future(store.claim(EVERY, [], [], limit=10))
    await settle_background()  # the read has decoded both transactions, writes the poison
    claim.cancel()  # e.g. the loop drops its prefetched claim
    await asyncio.gather(claim, return_exceptions=True)
    slot.gate.set()
    rows = await store.claim(EVERY, [], [], limit=10)
    assert [name(r) for r in rows] == ["a1", "b1", "c1"]
    assert len(slot.quarantined) == 1
    await store.mark_sent(sent(rows))
    assert slot.confirmed == slot.changes[-1][0]  # the poison does not hold the slot back


async def test_poison_whose_quarantine_write_fails_is_written_by_a_later_read() -> None:
    slot = CountingSlot()
    slot.commit(frame("a", 1), b"\x09not a frame", frame("a", 2))
    slot.fail_once = {"wal_quarantine"}
    store = store_of(slot)
    with pytest.raises(StoreError, match="wal_quarantine failed"):
        await store.claim(EVERY, [], [], limit=10)
    assert slot.quarantined == []
    rows = await store.claim(EVERY, [], [], limit=10)
    assert len(slot.quarantined) == 1 and "unreadable WAL frame" in slot.quarantined[0][1]
    assert [name(r) for r in rows] == ["a1", "a2"]
    await store.mark_sent(sent(rows))
    assert slot.confirmed == slot.changes[-1][0]  # the poison no longer holds the slot back

"""WAL capture's transactions in the relay loop, in milliseconds: the real WalStore (over an
in-memory slot answering its three queries), Claims, WavePublisher and RetryingKeys, with a
publisher that stores a transaction's rows all at once or none (scripted per batch).

What is held: a transaction is claimed whole and placed as one unit (one call, one batch, in
the first wave where none of its keys has an earlier event pending); a held-back key holds its
whole transaction and the later events of all of that transaction's keys; a batch refused for
what it holds (SPLIT) goes event by event at once, each event with its own verdict; a batch
not stored now waits whole; and the counters behind ``vertector_relay_atomic_batches_total``.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from outbox_client.walframe import WAL_PREFIX, encode
from relay.classify import judge_batch
from relay.metrics import RelayMetrics
from relay.ports import Failure, OutboxRow, PublishResult, Stored, Verdict
from relay.pubacks import ApiError
from relay.stats import RelayStats
from relay.walstore import WalStore
from relay.waves import plan_units
from relay.worker import LoopConfig, Relay
from tests.fakes import FakePublisher
from tests.unit.test_worker import FAST, every_partition


class MemorySlot:
    """The slot functions WalStore calls (``_call``), over pgoutput bytes built here: peek
    returns whole transactions from the confirmed position, advance moves it."""

    def __init__(self) -> None:
        self.changes: list[tuple[int, bytes]] = []  # (lsn, pgoutput message)
        self.confirmed = 0
        self.quarantined: list[tuple[uuid.UUID, str]] = []
        self._lsn = 100

    def commit(self, *frames: bytes) -> None:
        """One transaction of these frames (as enqueue writes them)."""
        micros = int((datetime.now(UTC) - datetime(2000, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
        start = self._lsn
        self.changes.append((start, b"B" + struct.pack(">qqI", start + 99, micros, 7)))
        for n, frame in enumerate(frames):
            prefix = WAL_PREFIX.encode() + b"\0"
            body = struct.pack(">bq", 1, start + n + 1) + prefix + struct.pack(">I", len(frame))
            self.changes.append((start + n + 1, b"M" + body + frame))
        end = start + 99
        self.changes.append((end, b"C" + struct.pack(">bqqq", 0, end, end, micros)))
        self._lsn += 100

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        await asyncio.sleep(0)
        if query == "wal_peek":
            rows, out = args[1], []
            for lsn, data in self.changes:
                if lsn <= self.confirmed:
                    continue
                out.append({"lsn": lsn, "data": data})
                if len(out) >= rows and data[:1] == b"C":
                    break
            return out
        if query == "wal_advance":
            self.confirmed = max(self.confirmed, args[1])
            return self.confirmed
        if query == "wal_quarantine":
            self.quarantined += list(zip(args[0], args[7], strict=True))
            return "INSERT"
        if query == "wal_quarantined_ids":
            return [{"event_id": i} for i, _ in self.quarantined if i in args[0]]
        if query in ("wal_heartbeat", "wal_quarantined_count"):
            return 0
        if query == "wal_snapshot":  # a running-transactions record: nothing to model here
            return True
        raise AssertionError(f"WalStore asked for {query}")


def frame(key: str, n: int, subject: str = "academic.course.updated") -> bytes:
    return encode(uuid.uuid4(), "t", subject, key, f"{key}{n}".encode(), {})


def name(row: OutboxRow) -> str:
    return row.payload.decode()


BatchVerdict = Callable[[list[OutboxRow]], Failure | None]


def refused_times(failures: dict[str, int]) -> Callable[[OutboxRow], Failure | None]:
    """A per-event verdict: each named event ("b1") is refused "stream full" that many times."""
    left = dict(failures)

    def verdict(r: OutboxRow) -> Failure | None:
        if left.get(name(r)):
            left[name(r)] -= 1
            return Failure(Verdict.REFUSED, "stream full")
        return None

    return verdict


class AtomicPublisher(FakePublisher):
    """A FakePublisher that takes atomic batches: consecutive rows sharing a ``txn`` are all
    stored or none (``batch_verdict`` may refuse a batch), as NatsPublisher sends them."""

    def __init__(self, batch_verdict: BatchVerdict | None = None, *, atomic: bool = True) -> None:
        super().__init__()
        self.atomic = atomic
        self.batch_verdict = batch_verdict or (lambda rows: None)
        self.batches: list[list[str]] = []  # every batch sent, by event name
        self.stored_batches: list[list[str]] = []
        self.waves: list[list[str]] = []  # every call, by event name

    def batchable(self, rows: Sequence[OutboxRow]) -> bool:
        return self.atomic

    async def publish(self, rows: Sequence[OutboxRow]) -> list[PublishResult]:
        self.waves.append([name(r) for r in rows])
        results: list[PublishResult] = []
        at = 0
        while at < len(rows):
            end = at + 1
            while end < len(rows) and rows[at].txn is not None and rows[end].txn == rows[at].txn:
                end += 1
            group = list(rows[at:end])
            at = end
            if len(group) == 1:
                results += await super().publish(group)
                continue
            assert self.atomic, "a transaction was sent as a batch the publisher cannot send"
            self.batches.append([name(r) for r in group])
            self.sent += [r.id for r in group]
            failure = self.batch_verdict(group)
            if failure is None and any(r.event_id in self._seen for r in group):
                failure = Failure(Verdict.SPLIT, "jetstream 10201: a message id it already has")
            if failure is not None:
                results += [failure] * len(group)
                continue
            self.stored_batches.append([name(r) for r in group])
            for row in group:
                self._seen.add(row.event_id)
                self.stream.append(row)
                results.append(Stored("ACADEMIC_EVENTS", len(self.stream), duplicate=False))
        return results

    def order(self) -> list[str]:
        return [name(r) for r in self.stream]


def wal_relay(slot: MemorySlot, pub: FakePublisher, batch: int = 50) -> Relay:
    store = WalStore(
        slot,  # type: ignore[arg-type]  # the seam WalStore uses of PgStore: _call
        slot="s", publication="p", owner="me", atomic_max_events=1000,
    )  # fmt: skip
    config = LoopConfig(batch_size=batch, poll_interval=0.01)
    return Relay(store, pub, config=config, policies=FAST, partitions=every_partition)


async def drain(r: Relay, rounds: int = 30) -> None:
    for _ in range(rounds):
        await r.step()
    await r.finish()


def keys_in_commit_order(pub: FakePublisher) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for row in pub.stream:
        order.setdefault(row.partition_key, []).append(name(row))
    return order


# --- placing ---------------------------------------------------------------------------------


def row(i: int, key: str, txn: int | None = None) -> OutboxRow:
    return OutboxRow(i, uuid.uuid4(), "s", key, 0, b"", {}, 0, datetime.now(UTC), txn=txn)


def test_a_transaction_takes_the_first_wave_free_of_its_keys_as_one_unit() -> None:
    a1, b1, a2, c1, c2, d1 = (
        row(1, "a"),
        row(2, "b"),
        row(3, "a", 9),
        row(4, "c", 9),
        row(5, "c"),
        row(6, "d"),
    )
    waves, left_out = plan_units([[a1], [b1], [a2, c1], [c2], [d1]], blocked=set())
    ids = [[[r.id for r in unit] for unit in wave] for wave in waves]
    # a2 follows a1: the transaction {a2, c1} waits for wave 1, whole; c2 follows it.
    assert ids == [[[1], [2], [6]], [[3, 4]], [[5]]]
    assert left_out == set()


def test_a_blocked_key_leaves_out_its_transaction_and_the_later_events_of_all_its_keys() -> None:
    units = [[row(1, "a", 9), row(2, "b", 9)], [row(3, "a")], [row(4, "b")], [row(5, "c")]]
    waves, left_out = plan_units(units, blocked={"b"})
    assert [[[r.id for r in u] for u in w] for w in waves] == [[[5]]]
    assert left_out == {"a", "b"}


async def test_a_transaction_is_claimed_whole_and_sent_as_one_batch() -> None:
    slot, pub = MemorySlot(), AtomicPublisher()
    slot.commit(frame("a", 1))
    slot.commit(frame("a", 2), frame("b", 1), frame("a", 3), frame("c", 1))
    slot.commit(frame("b", 2))
    r = wal_relay(slot, pub)
    await drain(r)
    assert pub.batches == [["a2", "b1", "a3", "c1"]]  # in commit order, one call of its own
    assert pub.order() == ["a1", "a2", "b1", "a3", "c1", "b2"]
    assert r.stats.atomic == {"stored": 1}
    assert slot.confirmed == slot.changes[-1][0]  # the slot advanced past everything


async def test_a_claim_never_splits_a_transaction_at_the_batch_limit() -> None:
    slot = MemorySlot()
    slot.commit(frame("a", 1), frame("b", 1))
    slot.commit(frame("c", 1), frame("d", 1), frame("e", 1))
    store = WalStore(slot, slot="s", publication="p", owner="me", atomic_max_events=1000)  # type: ignore[arg-type]
    claimed = await store.claim([*range(256)], [], [], limit=3)
    assert [name(r) for r in claimed] == ["a1", "b1"]  # not c1 without d1 and e1
    whole = await store.claim([*range(256)], [], [], limit=1)  # a transaction over the limit
    assert [name(r) for r in whole] == ["a1", "b1"]


# --- held back -------------------------------------------------------------------------------


async def test_a_held_back_key_holds_its_whole_transaction_and_what_follows_on_its_keys() -> None:
    slot = MemorySlot()
    slot.commit(frame("b", 0))
    slot.commit(frame("a", 1), frame("b", 1))
    slot.commit(frame("a", 2))
    slot.commit(frame("c", 1))
    store = WalStore(slot, slot="s", publication="p", owner="me", atomic_max_events=1000)  # type: ignore[arg-type]
    everything = [*range(256)]
    claimed = await store.claim(everything, [], ["b"], limit=10)
    assert [name(r) for r in claimed] == ["c1"]  # a1 waits with b1, a2 behind a1
    # When b's head comes back by id, it comes alone; a1's brings the rest of its transaction.
    b0, a1 = (await store.claim(everything, [], [], limit=10))[:2]
    assert [name(r) for r in await store.claim_ids([b0.id], everything)] == ["b0"]
    assert [name(r) for r in await store.claim_ids([a1.id], everything)] == ["a1", "b1"]


async def test_a_retried_key_holds_a_transaction_back_until_its_head_is_stored() -> None:
    slot = MemorySlot()
    pub = AtomicPublisher()
    pub.verdict = refused_times({"b0": 2})
    slot.commit(frame("b", 0))
    slot.commit(frame("a", 1), frame("b", 1))
    slot.commit(frame("a", 2))
    slot.commit(frame("c", 1))
    r = wal_relay(slot, pub)
    await r.step()
    await r.finish()
    assert pub.order() == ["c1"]  # b0 backs off: {a1, b1} and a2 wait, c is free
    await drain(r)
    assert pub.order() == ["c1", "b0", "a1", "b1", "a2"]
    assert pub.stored_batches == [["a1", "b1"]]
    assert slot.confirmed == slot.changes[-1][0]


async def test_a_batch_not_stored_now_waits_whole_and_is_retried_as_one_batch() -> None:
    slot = MemorySlot()
    refusals = [Failure(Verdict.TRANSIENT, "timeout waiting for PubAck")]

    def batch_verdict(rows: list[OutboxRow]) -> Failure | None:
        return refusals.pop() if refusals else None

    pub = AtomicPublisher(batch_verdict)
    slot.commit(frame("a", 1), frame("a", 2), frame("b", 1))
    slot.commit(frame("a", 3))
    slot.commit(frame("c", 1))
    r = wal_relay(slot, pub)
    await r.step()
    await r.finish()
    assert pub.order() == ["c1"]  # nothing of the transaction, nor a3 behind it
    # One retry head a key (the transaction's first row of each), not one a row.
    heads = {key: retry.head for key, retry in r.retrying._retries.items()}
    assert sorted(heads) == ["a", "b"] and sorted(heads.values()) == [1, 3]  # a1, b1
    await drain(r)
    assert pub.batches == [["a1", "a2", "b1"], ["a1", "a2", "b1"]]
    assert pub.order() == ["c1", "a1", "a2", "b1", "a3"]
    assert r.stats.atomic == {"retried": 1, "stored": 1}


# --- SPLIT -----------------------------------------------------------------------------------


async def test_a_split_batch_goes_event_by_event_each_with_its_own_verdict() -> None:
    """The server refuses the batch for what it holds: here one of its events is poison (the
    answer names no message), so the events go one by one at once; the poison one is
    quarantined, the rest are stored in per-key order, the later events of their keys after."""
    slot = MemorySlot()
    splits = [judge_batch(ApiError(400, 10201, "duplicate message id in batch"), "x", 3)]
    assert isinstance(splits[0], Failure) and splits[0].verdict is Verdict.SPLIT

    pub = AtomicPublisher(lambda rows: splits.pop() if splits else None)
    pub.verdict = lambda r: (
        Failure(Verdict.POISON, "jetstream 10054: message size exceeds maximum allowed")
        if name(r) == "b1" else None
    )  # fmt: skip
    slot.commit(frame("a", 1), frame("b", 1), frame("a", 2))
    slot.commit(frame("a", 3), frame("b", 2))
    r = wal_relay(slot, pub)
    await drain(r)
    assert pub.batches == [["a1", "b1", "a2"], ["a3", "b2"]]  # the second went whole
    assert pub.order() == ["a1", "a2", "a3", "b2"]
    assert keys_in_commit_order(pub) == {"a": ["a1", "a2", "a3"], "b": ["b2"]}
    assert [reason for _, reason in slot.quarantined] == [
        "jetstream 10054: message size exceeds maximum allowed"
    ]
    assert r.stats.split_events == 3
    assert r.stats.atomic == {"split": 1, "stored": 1}
    assert slot.confirmed == slot.changes[-1][0]


async def test_a_split_event_that_fails_holds_its_key_and_only_its_key() -> None:
    slot = MemorySlot()
    split = [Failure(Verdict.SPLIT, "jetstream 10199: atomic publish batch is too large")]
    pub = AtomicPublisher(lambda rows: split.pop() if split else None)
    pub.verdict = refused_times({"b1": 1})
    slot.commit(frame("a", 1), frame("b", 1))
    slot.commit(frame("b", 2), frame("c", 1))
    slot.commit(frame("a", 2))
    r = wal_relay(slot, pub)
    await r.step()
    await r.finish()
    # a1 went alone; b1 backs off, so {b2, c1} waits whole; a2 follows a1.
    assert pub.order() == ["a1", "a2"]
    await drain(r)
    assert pub.order() == ["a1", "a2", "b1", "b2", "c1"]
    assert pub.stored_batches == [["b2", "c1"]]


async def test_a_retry_head_brings_its_transaction_but_not_rows_whose_outcome_is_in_flight() -> (
    None
):
    """After a split, a1 was stored and b1 refused. b1 is due at the next claim, which starts
    before a1's outcome is written (a full claim of other keys does not wait on the slot): b1
    comes back with what is left of its transaction, and a1, whose mark is in flight, stays
    out of it: it is sent once."""
    slot = MemorySlot()
    split = [Failure(Verdict.SPLIT, "jetstream 10201: a re-publish")]
    pub = AtomicPublisher(lambda rows: split.pop() if split else None)
    pub.verdict = refused_times({"b1": 1})
    slot.commit(frame("a", 1), frame("b", 1))
    for n in range(1, 5):
        slot.commit(frame("c", n))
    r = wal_relay(slot, pub, batch=2)
    await drain(r)
    assert pub.order() == ["a1", "b1", "c1", "c2", "c3", "c4"]
    assert pub.waves[:3] == [["a1", "b1"], ["a1", "b1"], ["b1", "c1"]], "a1 was sent twice"
    assert slot.confirmed == slot.changes[-1][0]


# --- fallback and metrics --------------------------------------------------------------------


async def test_a_transaction_the_publisher_cannot_batch_goes_event_by_event() -> None:
    slot, pub = MemorySlot(), AtomicPublisher(atomic=False)
    slot.commit(frame("a", 1), frame("b", 1), frame("a", 2))
    slot.commit(frame("c", 1))
    r = wal_relay(slot, pub)
    await drain(r)
    assert pub.batches == []
    assert keys_in_commit_order(pub) == {"a": ["a1", "a2"], "b": ["b1"], "c": ["c1"]}
    assert pub.waves == [["a1", "b1", "c1"], ["a2"]]  # per-key waves, like any other row
    assert r.stats.atomic == {"fallback": 1}


def test_the_atomic_batches_metric_counts_each_outcome() -> None:
    stats = RelayStats()
    poison = Failure(Verdict.POISON, "invalid subject: whitespace")
    stored = Stored("ACADEMIC_EVENTS", 1, duplicate=False)
    stats.record_atomic([stored, stored])
    stats.record_atomic([poison, stored])  # a checked-out event; the rest went as the batch
    stats.record_atomic([Failure(Verdict.SPLIT, "jetstream 10201: ...")] * 2)
    stats.record_atomic([Failure(Verdict.TRANSIENT, "timeout waiting for PubAck")] * 2)
    stats.atomic["fallback"] += 1
    series = {
        sample.labels["outcome"]: sample.value
        for family in RelayMetrics(stats).registry.collect()
        if family.name == "vertector_relay_atomic_batches"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert series == {"stored": 2, "split": 1, "retried": 1, "fallback": 1}

"""One suite, two stores: the rules of ``relay/sql/queries.sql`` (claim order, retry heads,
fencing, marks, leases) hold alike for ``PgStore`` on a real PostgreSQL and for the in-memory
store the loop's unit tests use (``tests/memstore.py``). The memory runs are unit tests, the
PostgreSQL runs integration tests."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from outbox_client.table import PARTITIONS, partition_of
from relay.pgstore import PgLeaseStore, PgStore
from relay.ports import Backlog, Sent, Stored
from tests.contract.drivers import Driver, MemoryDriver, PgDriver, RowState

TTL = 30.0
P, Q = 3, 7  # two partitions the tests put rows in
UNTOUCHED = RowState(
    sent=False, stream=None, stream_seq=None, attempts=0, last_error=None, quarantined=False
)


def keys_in(partition: int, n: int) -> list[str]:
    """``n`` partition keys that hash to ``partition``."""
    found = (f"key-{i}" for i in itertools.count())
    return list(itertools.islice((k for k in found if partition_of(k) == partition), n))


def acked(*row_ids: int, stream: str = "ACADEMIC_EVENTS") -> list[Sent]:
    return [Sent(row_id, Stored(stream, 100 + row_id, False)) for row_id in row_ids]


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("postgres", marks=pytest.mark.integration),
    ]
)
def database(request: pytest.FixtureRequest) -> str | None:
    """The fresh database's URL for the PostgreSQL runs (None: the store is in memory)."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("database_url")
    return url


@pytest.fixture
async def driver(database: str | None) -> AsyncIterator[Driver]:
    d: Driver = MemoryDriver() if database is None else await PgDriver.connect(database)
    try:
        yield d
    finally:
        await d.close()


async def owning(driver: Driver, owner: str, *partitions: int) -> tuple[PgStore, PgLeaseStore]:
    """A store for relay ``owner`` and its lease store, holding the free ``partitions``
    (every free partition when none are named)."""
    store = await driver.store(owner)
    leases = PgLeaseStore(store)
    taken = await leases.acquire(owner, TTL, PARTITIONS)
    await leases.release(owner, [p for p in taken if partitions and p not in partitions])
    return store, leases


async def lease_of(store: PgStore, partition: int) -> Any:
    leases, _ = await store.ownership()
    return next(lease for lease in leases if lease["partition"] == partition)


async def instances(store: PgStore) -> list[str]:
    _, alive = await store.ownership()
    return [i["name"] for i in alive]


# --- claim order ----------------------------------------------------------------------------


async def test_claim_takes_the_oldest_rows_of_the_owned_partitions_by_id(driver: Driver) -> None:
    store = await driver.store("a")
    (p1, p2), (q1,) = keys_in(P, 2), keys_in(Q, 1)
    ids = [await driver.insert(k) for k in (p1, q1, p2, p1, q1)]

    claimed = await store.claim([P], [], [], 10)
    assert [r.id for r in claimed] == [ids[0], ids[2], ids[3]]
    assert [(r.partition, r.partition_key, r.attempts) for r in claimed[:2]] == [
        (P, p1, 0),
        (P, p2, 0),
    ]
    assert [r.id for r in await store.claim([P, Q], [], [], 3)] == ids[:3]
    assert await store.claim([], [], [], 10) == []


async def test_claim_leaves_out_rows_in_flight_and_every_row_of_a_held_key(
    driver: Driver,
) -> None:
    store = await driver.store("a")
    held, free = keys_in(P, 2)
    ids = [await driver.insert(k) for k in (held, free, held, free)]

    claimed = await store.claim([P], [ids[1]], [held], 10)
    assert [r.id for r in claimed] == [ids[3]]


async def test_claim_skips_sent_and_quarantined_rows(driver: Driver) -> None:
    store, _ = await owning(driver, "a")
    keys = keys_in(P, 3)
    sent, quarantined, pending = [await driver.insert(k) for k in keys]
    assert await store.mark_sent(acked(sent)) == 1
    await store.quarantine([(quarantined, "poison")])

    assert [r.id for r in await store.claim([P], [], [], 10)] == [pending]


async def test_a_row_that_commits_late_is_claimed_by_a_later_round(driver: Driver) -> None:
    """No cursor: a lower id whose transaction commits after a higher one is not skipped."""
    store, _ = await owning(driver, "a")
    slow_key, fast_key = keys_in(P, 2)
    slow = await driver.begin(slow_key)
    fast = await driver.insert(fast_key)
    assert slow.id < fast

    assert [r.id for r in await store.claim([P], [], [], 10)] == [fast]
    assert await store.mark_sent(acked(fast)) == 1
    await slow.commit()
    assert [r.id for r in await store.claim([P], [], [], 10)] == [slow.id]


# --- retry heads ----------------------------------------------------------------------------


async def test_claim_ids_returns_unsent_heads_of_owned_partitions_by_id(driver: Driver) -> None:
    store, _ = await owning(driver, "a")
    (p1, p2, p3), (q1,) = keys_in(P, 3), keys_in(Q, 1)
    head_p, head_q, sent, quarantined = [await driver.insert(k) for k in (p1, q1, p2, p3)]
    assert await store.mark_sent(acked(sent)) == 1
    await store.quarantine([(quarantined, "poison")])

    asked = [head_q, quarantined, head_p, sent, 10**9]
    assert [r.id for r in await store.claim_ids(asked, [P, Q])] == [head_p, head_q]
    assert [r.id for r in await store.claim_ids(asked, [P])] == [head_p]  # Q moved away
    assert await store.claim_ids(asked, []) == []
    assert await store.claim_ids([], [P, Q]) == []


async def test_a_head_sent_meanwhile_by_the_new_owner_is_not_returned(driver: Driver) -> None:
    a, _ = await owning(driver, "a", P)
    head = await driver.insert(keys_in(P, 1)[0])
    await driver.expire_lease(P)
    b, _ = await owning(driver, "b", P)
    assert await b.mark_sent(acked(head)) == 1

    assert await a.claim_ids([head], [P]) == []


# --- fencing --------------------------------------------------------------------------------


async def test_only_the_current_unexpired_owner_marks_a_row_sent(driver: Driver) -> None:
    a = await driver.store("a")
    row = await driver.insert(keys_in(P, 1)[0])
    assert await a.mark_sent(acked(row)) == 0, "marked without any lease"

    a_leases = PgLeaseStore(a)
    assert P in await a_leases.acquire("a", TTL, PARTITIONS)
    first_epoch = (await lease_of(a, P))["epoch"]
    await driver.expire_lease(P)
    assert await a.mark_sent(acked(row)) == 0, "marked with an expired lease"

    b, _ = await owning(driver, "b", P)
    lease = await lease_of(b, P)
    assert (lease["owner"], lease["epoch"]) == ("b", first_epoch + 1)
    assert await a.mark_sent(acked(row)) == 0, "the old owner marked after losing the lease"
    assert await driver.row(row) == UNTOUCHED

    assert await b.mark_sent(acked(row)) == 1
    assert await b.mark_sent(acked(row)) == 0, "a sent row was marked again"


async def test_quarantine_is_fenced_like_a_mark(driver: Driver) -> None:
    a = await driver.store("a")
    row = await driver.insert(keys_in(P, 1)[0])
    await a.quarantine([(row, "poison")])
    assert await driver.row(row) == UNTOUCHED, "quarantined without any lease"

    b, _ = await owning(driver, "b", P)
    await a.quarantine([(row, "poison")])
    assert await driver.row(row) == UNTOUCHED, "quarantined by a relay that is not the owner"
    await b.quarantine([(row, "poison")])
    assert await driver.row(row) == RowState(False, None, None, 1, "poison", True)


async def test_without_retention_a_puback_deletes_the_row_fenced_alike(driver: Driver) -> None:
    a = await driver.store("a", keep_sent=False)
    rows = [await driver.insert(k) for k in keys_in(P, 2)]
    assert await a.mark_sent(acked(*rows)) == 0
    assert await driver.row(rows[0]) is not None

    await PgLeaseStore(a).acquire("a", TTL, PARTITIONS)
    assert await a.mark_sent(acked(*rows)) == 2
    assert [await driver.row(r) for r in rows] == [None, None]


async def test_a_puback_delete_never_removes_a_quarantined_row(driver: Driver) -> None:
    a = await driver.store("a", keep_sent=False)
    await PgLeaseStore(a).acquire("a", TTL, PARTITIONS)
    row = await driver.insert(keys_in(P, 1)[0])
    await a.quarantine([(row, "invalid subject")])
    assert await a.mark_sent(acked(row)) == 0
    assert await driver.row(row) is not None


# --- marks ----------------------------------------------------------------------------------


async def test_mark_sent_records_the_puback_and_clears_the_last_error(driver: Driver) -> None:
    store, _ = await owning(driver, "a")
    row, other = [await driver.insert(k) for k in keys_in(P, 2)]
    await store.record_failures([(row, "timeout waiting for PubAck")])

    assert await store.mark_sent([Sent(row, Stored("ACADEMIC_EVENTS", 42, False))]) == 1
    assert await driver.row(row) == RowState(True, "ACADEMIC_EVENTS", 42, 2, None, False)
    assert await driver.row(other) == UNTOUCHED


async def test_record_failures_counts_attempts_of_unsent_rows_only(driver: Driver) -> None:
    """Not fenced: ``attempts`` counts every publish that was tried, whoever tried it."""
    store, _ = await owning(driver, "a", Q)  # P is nobody's
    row, sent = [await driver.insert(k) for k in (keys_in(P, 1)[0], keys_in(Q, 1)[0])]
    assert await store.mark_sent(acked(sent)) == 1

    await store.record_failures([(row, "first"), (sent, "late")])
    await store.record_failures([(row, "second")])
    assert await driver.row(row) == RowState(False, None, None, 2, "second", False)
    assert await driver.row(sent) == RowState(True, "ACADEMIC_EVENTS", 100 + sent, 1, None, False)


async def test_quarantine_takes_the_row_out_of_claims_and_into_the_backlog_count(
    driver: Driver,
) -> None:
    store, _ = await owning(driver, "a")
    row, sent = [await driver.insert(k) for k in keys_in(P, 2)]
    assert await store.mark_sent(acked(sent)) == 1

    await store.quarantine([(row, "invalid subject: whitespace"), (sent, "too late")])
    reason = "invalid subject: whitespace"
    assert await driver.row(row) == RowState(False, None, None, 1, reason, True)
    assert await driver.row(sent) == RowState(True, "ACADEMIC_EVENTS", 100 + sent, 1, None, False)
    assert await store.claim([P], [], [], 10) == []
    assert await store.claim_ids([row], [P]) == []
    backlog = await store.backlog()
    assert (backlog.pending, backlog.quarantined) == (0, 1)


async def test_backlog_counts_committed_unsent_rows_and_the_oldest_age(driver: Driver) -> None:
    store, _ = await owning(driver, "a")
    assert await store.backlog() == Backlog(0, 0.0, 0)
    old, _new, sent = [await driver.insert(k) for k in keys_in(P, 3)]
    await driver.begin(keys_in(Q, 1)[0])  # not committed: not counted
    assert await store.mark_sent(acked(sent)) == 1
    await driver.age_row(old, 600)
    await driver.age_row(sent, 6000)

    backlog = await store.backlog()
    assert (backlog.pending, backlog.quarantined) == (2, 0)
    assert 600 <= backlog.oldest_age_seconds < 3600


async def test_purge_deletes_sent_rows_past_retention_oldest_sent_first(driver: Driver) -> None:
    store, _ = await owning(driver, "a")
    oldest, older, recent, unsent = [await driver.insert(k) for k in keys_in(P, 4)]
    assert await store.mark_sent(acked(oldest, older, recent)) == 3
    await driver.age_row(oldest, 300)
    await driver.age_row(older, 200)
    await driver.age_row(unsent, 300)

    assert await store.purge(100, 1) == 1
    assert await driver.row(oldest) is None and await driver.row(older) is not None
    assert await store.purge(100, 10) == 1
    assert [await driver.row(r) is None for r in (older, recent, unsent)] == [True, False, False]


# --- leases ---------------------------------------------------------------------------------


async def test_acquire_takes_free_partitions_lowest_first_and_bumps_the_epoch(
    driver: Driver,
) -> None:
    a, b = await driver.store("a"), await driver.store("b")
    a_leases, b_leases = PgLeaseStore(a), PgLeaseStore(b)
    assert await a_leases.acquire("a", TTL, 3) == [0, 1, 2]
    assert await b_leases.acquire("b", TTL, 2) == [3, 4]
    assert [(await lease_of(a, p))["epoch"] for p in range(5)] == [1] * 5

    await b_leases.release("b", [0, 3])  # 0 is not b's: unchanged
    assert (await lease_of(a, 0))["owner"] == "a"
    assert await a_leases.acquire("a", TTL, 1) == [3]
    lease = await lease_of(a, 3)
    assert (lease["owner"], lease["epoch"]) == ("a", 2)
    assert await b_leases.acquire("b", TTL, PARTITIONS) == list(range(5, PARTITIONS))
    assert await a_leases.acquire("a", TTL, 1) == []


async def test_renew_extends_unexpired_leases_only_and_an_expired_one_moves_on(
    driver: Driver,
) -> None:
    a, b = await driver.store("a"), await driver.store("b")
    a_leases, b_leases = PgLeaseStore(a), PgLeaseStore(b)
    assert await a_leases.acquire("a", TTL, 2) == [0, 1]
    await driver.expire_lease(1)

    assert await a_leases.renew("a", TTL) == [0]
    assert await b_leases.renew("b", TTL) == []
    assert await b_leases.acquire("b", TTL, 1) == [1]
    assert await a_leases.renew("a", TTL) == [0]
    lease = await lease_of(a, 1)
    assert (lease["owner"], lease["epoch"]) == ("b", 2)
    assert lease["expires_in"] > TTL / 2


async def test_heartbeat_counts_live_instances_and_forgets_silent_ones(driver: Driver) -> None:
    store = await driver.store("a")
    leases = PgLeaseStore(store)
    assert await leases.heartbeat("a", TTL) == 1
    assert await leases.heartbeat("b", TTL) == 2
    assert await leases.heartbeat("a", TTL) == 2
    assert await instances(store) == ["a", "b"]

    await driver.age_instance("b", 2 * TTL)
    assert await leases.heartbeat("a", TTL) == 1
    assert await instances(store) == ["a"]


async def test_leave_gives_back_every_lease_and_forgets_the_instance(driver: Driver) -> None:
    a, a_leases = await owning(driver, "a", 0, 1)
    await a_leases.heartbeat("a", TTL)
    b = await driver.store("b")
    await PgLeaseStore(b).heartbeat("b", TTL)

    await a_leases.leave("a")
    assert await instances(a) == ["b"]
    assert [(await lease_of(a, p))["owner"] for p in (0, 1)] == [None, None]
    assert await PgLeaseStore(b).acquire("b", TTL, 2) == [0, 1]


async def test_waiting_subjects_names_each_subject_of_committed_unsent_rows_once(
    driver: Driver,
) -> None:
    store, _ = await owning(driver, "a")
    keys = keys_in(P, 6)
    long = "academic." + "x" * 2000
    for key, subject in zip(
        keys, ["a.one", "a.two", "a.one", long, "a.sent", "a.bad"], strict=True
    ):
        await driver.insert(key, subject)
    await driver.begin(keys_in(Q, 1)[0])  # not committed: its subject is not named
    sent, bad = (r.id for r in (await store.claim([P], [], [], 10))[4:6])
    assert await store.mark_sent(acked(sent)) == 1
    await store.quarantine([(bad, "poison")])

    waiting = await store.waiting_subjects(10)
    assert sorted(waiting) == sorted(["a.one", "a.two", long[:1025]])
    assert len(await store.waiting_subjects(2)) == 2

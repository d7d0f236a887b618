from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from outbox_client.table import PARTITIONS
from relay import retrying
from relay.classify import judge_no_responders
from relay.ports import Failure, OutboxRow, Verdict
from relay.pubacks import ApiSilent, StreamFound
from relay.retry import Backoff, RetryPolicies
from relay.waves import plan_waves
from relay.worker import LoopConfig, Relay
from tests.fakes import FakePublisher, MemoryStore


class EveryPartition:
    """The fake store's relay holds every partition's lease."""

    def current(self) -> list[int]:
        return list(range(PARTITIONS))


every_partition = EveryPartition()
FAST = RetryPolicies(
    event_publish=Backoff("event_publish", 0.0, 0.0, jitter=False),
    nats_unavailable=Backoff("nats_unavailable", 0.5, 2.0, jitter=False),
    postgres_unavailable=Backoff("postgres_unavailable", 0.25, 1.0, jitter=False),
)


def relay(store: MemoryStore, publisher: FakePublisher, batch: int = 10, **kw: object) -> Relay:
    config = LoopConfig(batch_size=batch, poll_interval=0.01, **kw)  # type: ignore[arg-type]
    return Relay(store, publisher, config=config, policies=FAST, partitions=every_partition)


async def drain(r: Relay, rounds: int = 100) -> None:
    for _ in range(rounds):
        await r.step()
    await r.finish()


def row(i: int, key: str) -> OutboxRow:
    import uuid

    return OutboxRow(i, uuid.uuid4(), "s", key, 0, b"", {}, 0, datetime.now(UTC))


def test_waves_hold_one_event_per_key_in_claim_order() -> None:
    rows = [row(1, "a"), row(2, "b"), row(3, "a"), row(4, "c"), row(5, "a"), row(6, "b")]
    waves = plan_waves(rows, blocked=set())
    assert [[r.id for r in w] for w in waves] == [[1, 2, 4], [3, 6], [5]]
    assert [[r.id for r in w] for w in plan_waves(rows, blocked={"a"})] == [[2, 4], [6]]


async def test_everything_is_published_once_in_per_key_order() -> None:
    store, pub = MemoryStore(), FakePublisher()
    for i in range(95):
        store.add(key=f"k{i % 7}")
    await drain(relay(store, pub))
    assert sorted(r.id for r in pub.stream) == list(range(1, 96))
    assert pub.sent == sorted(set(pub.sent), key=pub.sent.index), "a row was published twice"
    for ids in pub.keys_in_order().values():
        assert ids == sorted(ids)
    assert all(r.sent for r in store.rows.values())


async def test_a_failed_event_holds_back_its_key_only() -> None:
    store, pub = MemoryStore(), FakePublisher()
    first = store.add("a")
    second = store.add("a")
    other = store.add("b")
    failures = {first.id: 1}

    def verdict(r: OutboxRow) -> Failure | None:
        if failures.get(r.id):
            failures[r.id] -= 1
            return Failure(Verdict.TRANSIENT, "timeout waiting for PubAck")
        return None

    pub.verdict = verdict
    r = relay(store, pub)
    await r.step()
    await r.finish()  # the outcome is written in the background: wait for it
    assert [x.id for x in pub.stream] == [other.id]  # 'a' waits: second not sent before first
    assert second.id not in pub.sent
    assert store.rows[first.id].last_error == "timeout waiting for PubAck"
    await drain(r, rounds=5)
    assert [x.id for x in pub.stream] == [other.id, first.id, second.id]


async def test_poison_is_quarantined_and_the_rest_flows() -> None:
    store, pub = MemoryStore(), FakePublisher()
    bad = store.add("a", subject="bad subject")
    later = store.add("a")
    healthy = [store.add(f"h{i}") for i in range(5)]
    pub.verdict = lambda r: (
        Failure(Verdict.POISON, "invalid subject: whitespace") if " " in r.subject else None
    )
    r = relay(store, pub)
    await drain(r, rounds=5)
    assert store.rows[bad.id].quarantined == "invalid subject: whitespace"
    assert {x.id for x in pub.stream} == {later.id, *(h.id for h in healthy)}
    assert r.stats.quarantined["invalid subject"] == 1


async def test_a_held_back_key_with_a_long_backlog_does_not_starve_other_keys() -> None:
    """The claim skips keys that are backing off whole: a batch filled with their later rows
    (which cannot go) would hide every other key behind them."""
    store, pub = MemoryStore(), FakePublisher()
    stuck = [store.add("full") for _ in range(35)]  # more than three batches
    other = store.add("free")
    pub.verdict = lambda r: (
        Failure(Verdict.REFUSED, "stream full") if r.partition_key == "full" else None
    )
    r = relay(store, pub, batch=10)
    for _ in range(4):
        await r.step()
    assert [x.id for x in pub.stream] == [other.id]
    assert set(pub.sent) == {stuck[0].id, other.id}, "a later row of the held key was sent"
    assert r.stats.keys_backing_off == 1
    pub.verdict = lambda r: None
    await drain(r, rounds=40)
    assert [x.id for x in pub.stream] == [other.id, *(x.id for x in stuck)]


async def test_no_responders_during_an_election_is_never_quarantined() -> None:
    """A stream without a leader answers 'no responders' like a missing stream; once the
    publisher has it from the API that the stream exists, the event waits (in order) instead of
    being quarantined, however often it fails."""
    store, pub = MemoryStore(), FakePublisher()
    first, second = store.add("a"), store.add("a")
    electing = True
    leaderless = judge_no_responders(StreamFound("ACADEMIC_EVENTS"), 20)
    pub.verdict = lambda r: leaderless if electing else None
    r = relay(store, pub)
    await drain(r, rounds=12)
    assert pub.sent.count(first.id) >= 4 and second.id not in pub.sent
    assert not store.rows[first.id].quarantined
    reason = "stream ACADEMIC_EVENTS has no leader"
    assert r.stats.retries[reason] >= 4, r.stats.retries
    electing = False
    await drain(r, rounds=12)
    assert [x.id for x in pub.stream] == [first.id, second.id]


async def test_past_max_retrying_keys_no_new_rows_are_taken_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retrying, "MAX_RETRYING", 3)
    store, pub = MemoryStore(), FakePublisher()
    failing = [store.add(f"k{i}") for i in range(6)]
    broken = True
    pub.verdict = lambda r: Failure(Verdict.REFUSED, "stream full") if broken else None
    r = relay(store, pub)
    await r.step()
    newcomer = store.add("new")
    for _ in range(3):
        await r.step()
    assert newcomer.id not in pub.sent, "a new key was taken on past MAX_RETRYING"
    assert {row.id for row in failing} <= set(pub.sent)
    broken = False
    await drain(r)
    assert sorted(x.id for x in pub.stream) == [*(row.id for row in failing), newcomer.id]


SLOW_EVENT_RETRY = RetryPolicies(
    event_publish=Backoff("event_publish", 60.0, 60.0, jitter=False),
    nats_unavailable=FAST.nats_unavailable,
    postgres_unavailable=FAST.postgres_unavailable,
)


async def _after_an_ack_on_the_same_stream(failure: Failure) -> tuple[FakePublisher, int]:
    """Key "a" fails with ``failure`` (then backs off 60 s); key "b" is then acknowledged by
    the same stream. Returns the publisher and a's row id, after two more rounds."""
    store, pub = MemoryStore(), FakePublisher()
    config = LoopConfig(batch_size=10, poll_interval=0.01)
    r = Relay(store, pub, config=config, policies=SLOW_EVENT_RETRY, partitions=every_partition)
    store.add("c")
    await r.step()  # learns academic.course.updated -> ACADEMIC_EVENTS
    failing = True
    pub.verdict = lambda row: failure if failing and row.partition_key == "a" else None
    a = store.add("a")
    await r.step()
    failing = False
    store.add("b")
    await r.step()  # ACADEMIC_EVENTS acknowledges b
    await r.step()
    await r.finish()
    return pub, a.id


async def test_a_key_waiting_for_an_unreachable_stream_is_retried_when_it_acks_again() -> None:
    pub, a = await _after_an_ack_on_the_same_stream(Failure(Verdict.NO_RESPONDERS, "no responders"))
    assert a in [x.id for x in pub.stream], "it slept out its 60 s backoff"


async def test_a_key_refused_by_a_full_stream_keeps_its_backoff() -> None:
    pub, a = await _after_an_ack_on_the_same_stream(Failure(Verdict.REFUSED, "stream full"))
    assert a not in [x.id for x in pub.stream]
    assert pub.sent.count(a) == 1


async def test_no_responders_while_the_jetstream_api_is_silent_is_retried() -> None:
    store, pub = MemoryStore(), FakePublisher()
    row = store.add("a", subject="nowhere.x")
    pub.verdict = lambda r: judge_no_responders(ApiSilent("TimeoutError"), r.attempts + 1)
    r = relay(store, pub)
    await drain(r, rounds=8)
    assert pub.sent.count(row.id) >= 3 and not store.rows[row.id].quarantined


async def test_an_outage_backs_off_the_loop_and_retries_the_same_rows() -> None:
    store, pub = MemoryStore(), FakePublisher()
    for i in range(30):
        store.add(f"k{i}")
    down = True
    pub.verdict = lambda r: Failure(Verdict.TRANSIENT, "NATS unavailable") if down else None
    r = relay(store, pub)
    delays = [await r.step() for _ in range(3)]
    assert delays == [0.5, 1.0, 2.0]  # the nats_unavailable policy, capped
    assert set(pub.sent) == set(range(1, 11)), "it walked the backlog instead of retrying"
    down = False
    await drain(r)
    assert sorted(x.id for x in pub.stream) == list(range(1, 31))


async def test_quarantined_events_do_not_hold_their_key_for_the_rest_of_the_batch() -> None:
    store, pub = MemoryStore(), FakePublisher()
    bad = [store.add("a", subject="bad subject") for _ in range(20)]
    after = store.add("a")
    pub.verdict = lambda r: Failure(Verdict.POISON, "whitespace") if " " in r.subject else None
    r = relay(store, pub, batch=50)
    await r.step()
    await r.finish()
    assert all(store.rows[b.id].quarantined for b in bad), "one poison event per batch"
    assert [x.id for x in pub.stream] == [after.id]


async def test_a_batch_of_nothing_but_poison_is_not_an_outage() -> None:
    store, pub = MemoryStore(), FakePublisher()
    bad = [store.add(f"b{i}", subject="payroll.salaries") for i in range(10)]
    good = [store.add(f"g{i}") for i in range(10)]
    pub.verdict = lambda r: (
        Failure(Verdict.POISON, "permissions violation")
        if r.subject.startswith("payroll")
        else None
    )
    r = relay(store, pub)
    assert await r.step() is None  # a full batch, all quarantined: straight on, no backoff
    assert await r.step() is None
    await r.finish()
    assert pub.calls[0] == [b.id for b in bad] and pub.calls[1] == [g.id for g in good]
    assert all(store.rows[b.id].quarantined for b in bad)


async def test_marks_that_fail_are_retried_without_publishing_again() -> None:
    store, pub = MemoryStore(), FakePublisher()
    for i in range(25):
        store.add(f"k{i}")
    r = relay(store, pub)
    store.fail_writes = 3
    await drain(r)
    assert all(x.sent for x in store.rows.values())
    assert len(pub.sent) == 25, "a row whose mark failed was published again"


async def test_claim_failures_back_off_with_the_postgres_policy() -> None:
    store, pub = MemoryStore(), FakePublisher()
    store.add("a")
    store.fail_claims = 2
    r = relay(store, pub)
    assert [await r.step(), await r.step()] == [0.25, 0.5]
    await drain(r, rounds=2)
    assert len(pub.stream) == 1


async def test_invisible_rows_are_not_skipped_when_they_become_visible() -> None:
    store, pub = MemoryStore(), FakePublisher()
    held = store.add("a")
    held.visible = False  # its transaction is still open: the lower id is not visible yet
    store.add("b")
    r = relay(store, pub)
    await drain(r, rounds=3)
    assert [x.partition_key for x in pub.stream] == ["b"]
    held.visible = True
    await drain(r, rounds=3)
    assert [x.partition_key for x in pub.stream] == ["b", "a"]


async def test_run_stops_after_finishing_the_batch_in_hand() -> None:
    store, pub = MemoryStore(), FakePublisher()
    for i in range(50):
        store.add(f"k{i}")
    r = relay(store, pub)
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2)
    published = {x.id for x in pub.stream}
    marked = {x.id for x in store.rows.values() if x.sent}
    assert published == marked


async def test_a_prefetched_batch_never_overtakes_a_key_whose_retry_is_due() -> None:
    """A row fails while the next batch is being prefetched; its backoff expires before that
    batch is used. The prefetched later rows of the key must still wait for the retry."""
    store, pub = MemoryStore(), FakePublisher()
    rows = [store.add(key=("a" if i % 2 == 0 else f"o{i}")) for i in range(40)]
    fail_once = {rows[4].id}

    def verdict(r: OutboxRow) -> Failure | None:
        if r.id in fail_once:
            fail_once.discard(r.id)
            return Failure(Verdict.TRANSIENT, "timeout waiting for PubAck")
        return None

    pub.verdict = verdict
    await drain(relay(store, pub, batch=5), rounds=60)
    assert sorted(r.id for r in pub.stream) == [r.id for r in rows]
    a_order = pub.keys_in_order()["a"]
    assert a_order == sorted(a_order), f"key a published out of order: {a_order}"


def _logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, object]]:
    return [vars(r)["event_fields"] for r in caplog.records if r.getMessage() == event]


async def test_an_undeliverable_event_is_a_warning_at_its_first_failure_one_line_a_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 15 item 8: a row no stream takes was silent until it was quarantined, after
    no_stream_max_attempts retries (~87 s with the default backoff). Now its first failure is
    a warning with its reason; 30 such rows are one line, and their retries stay at debug."""
    caplog.set_level(logging.DEBUG, logger="relay.worker")
    store, pub = MemoryStore(), FakePublisher()
    lost = [store.add(f"k{i}", subject="gone.note") for i in range(30)]
    ok = store.add("ok")
    reason = "no stream captures the subject (or no responders)"
    pub.verdict = lambda r: (
        Failure(Verdict.NO_RESPONDERS, reason) if r.subject == "gone.note" else None
    )
    r = relay(store, pub, batch=50)
    await r.step()
    await r.finish()
    assert [x.id for x in pub.stream] == [ok.id]
    warned = [x for x in caplog.records if x.levelno >= logging.WARNING]
    assert [x.getMessage() for x in warned] == ["relay.events.delivery_failed"]
    fields = _logged(caplog, "relay.events.delivery_failed")[0]
    assert fields["count"] == 30
    assert reason in str(fields["reasons"]) and "(x30)" in str(fields["reasons"])
    named = str(fields["events"])
    assert str(lost[0].event_id) in named and "gone.note" in named
    assert sum(str(row.event_id) in named for row in lost) == 5  # a few, not thirty
    assert all(store.rows[x.id].last_error == reason for x in lost)  # each row has its reason
    # Retries: failing again is no news.
    caplog.clear()
    await drain(r, rounds=3)
    assert all(store.rows[x.id].attempts >= 2 for x in lost)
    assert not [x for x in caplog.records if x.levelno >= logging.WARNING]
    assert _logged(caplog, "relay.events.retry_failed")


async def test_a_thousand_quarantined_rows_are_one_warning_each_with_its_own_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 10: one warning per quarantined row flooded the log when 1,000 hostile rows came
    in one batch. Now: one line per batch (count, 5 event ids, reasons with counts); every row
    keeps its own reason in the table."""
    caplog.set_level(logging.INFO, logger="relay.worker")
    store, pub = MemoryStore(), FakePublisher()
    bad = [store.add(f"b{i}", subject=f"bad subject {i % 3}") for i in range(1000)]
    pub.verdict = lambda r: (
        Failure(Verdict.POISON, f"invalid subject: {r.subject[-1]}") if " " in r.subject else None
    )
    r = relay(store, pub, batch=1000)
    await r.step()
    await r.finish()
    assert [x.getMessage() for x in caplog.records if x.levelno >= logging.WARNING] == [
        "relay.events.quarantined"
    ]
    fields = _logged(caplog, "relay.events.quarantined")[0]
    assert fields["count"] == 1000
    reasons = str(fields["reasons"])
    assert all(f"invalid subject: {n} (x33" in reasons for n in range(3)), reasons
    assert sum(str(row.event_id) in str(fields["events"]) for row in bad) == 5
    assert {store.rows[b.id].quarantined for b in bad} == {
        f"invalid subject: {n}" for n in range(3)
    }
    assert all(
        store.rows[b.id].quarantined == f"invalid subject: {i % 3}" for i, b in enumerate(bad)
    )


async def test_wal_capture_polls_fast_while_events_keep_coming_then_slows_down() -> None:
    """No NOTIFY reaches a WAL reader: after a claim that found events it polls every
    busy_poll_interval (commit -> stored at 5,000 events/s), and once busy_seconds pass
    without one, every poll_interval again."""
    now = [100.0]
    store, pub = MemoryStore(), FakePublisher()
    config = LoopConfig(batch_size=10, poll_interval=0.05, busy_poll_interval=0.002)
    r = Relay(
        store, pub, config=config, policies=FAST, partitions=every_partition, clock=lambda: now[0]
    )
    assert await r.step() == 0.05  # idle from the start
    store.add("a")
    assert await r.step() == 0.002  # found one
    now[0] += 0.5
    assert await r.step() == 0.002  # nothing now, but events came within busy_seconds
    now[0] += 0.6
    assert await r.step() == 0.05
    await r.finish()
    table = relay(MemoryStore(), FakePublisher())  # table mode: the poll interval only
    table.claims.store.add("b")  # type: ignore[attr-defined]
    assert await table.step() == 0.01

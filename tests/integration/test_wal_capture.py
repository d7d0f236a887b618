"""WAL capture (OUTBOX_CAPTURE=wal) against real PostgreSQL (wal_level=logical) and NATS:
enqueue writes logical decoding messages, not rows; the relay reads the slot, publishes in
commit order, advances the slot only past acknowledged events, quarantines poison."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from outbox_client import CourseUpdatedEvent, enqueue, enqueue_many, with_events
from outbox_client.streams import DEFAULT_STREAMS, StreamConfig
from relay.pgstore import PgStore
from relay.ports import Sent, Stored
from relay.settings import RelaySettings
from relay.walstore import WalStore
from tests.acceptance.test_cli_config import clean_env, cli
from tests.integration.test_relay import pg_rows as fetch
from tests.integration.test_relay import update as update_event
from tests.relayrun import (
    apply_default_streams,
    engine,
    event_ids,
    running_relay,
    stream_messages,
    wait_for_messages,
)

#: A domain table for with_events (created by the test that uses it).
COURSES = Table("courses", MetaData(), Column("code", Text), Column("n", Integer))


async def read_slot(url: str, limit: int = 10_000) -> list[tuple[uuid.UUID, str, str]]:
    """What the slot holds for the relay, decoded by the WAL store (nothing consumed)."""
    settings = RelaySettings(database_url=url)
    base = PgStore(settings.dsn, pool_size=2)
    store = WalStore(
        base, slot=settings.slot_name, publication=settings.wal_publication, owner="reader"
    )
    await store.open()
    try:
        rows = await store.claim(list(range(64)), [], [], limit)
    finally:
        await store.close()
    return [(r.event_id, r.subject, r.partition_key) for r in rows]


async def test_enqueue_emits_one_message_per_event_in_the_callers_transaction(
    wal_database_url: str,
) -> None:
    url = wal_database_url
    a, b, c, d, e, rolled_back = (update_event(f"K{i}", i) for i in range(6))
    async with engine(url) as eng:
        async with eng.begin() as conn:
            await conn.execute(text("CREATE TABLE courses (code text PRIMARY KEY, n int)"))
            await conn.execute(text("INSERT INTO courses VALUES ('K0', 0)"))
        # AsyncSession: staged in the unit of work, written at commit though never awaited.
        async with AsyncSession(eng) as session, session.begin():
            enqueue(session, a)  # noqa: RUF100 - deliberately not awaited
        # AsyncConnection after a statement (asyncpg straight), several in one statement.
        async with eng.begin() as conn:
            await conn.execute(text("SELECT 1"))
            await enqueue_many(conn, [b, c])
        # with_events: the domain write and the message as one statement.
        async with eng.begin() as conn:
            statement = update(COURSES).where(text("code = 'K0'")).values(n=1)
            await conn.execute(with_events(statement, d))
            await enqueue(conn, e)
        # A rollback leaves nothing behind.
        async with eng.begin() as conn:
            await enqueue(conn, rolled_back)
            await conn.rollback()
        async with eng.connect() as conn:
            assert (await conn.execute(text("SELECT n FROM courses"))).scalar() == 1
    decoded = await read_slot(url)
    assert decoded == [(x.event_id, x.subject, x.partition_key) for x in (a, b, c, d, e)]
    assert (await fetch(url, "SELECT count(*) FROM outbox_events"))[0][0] == 0


async def test_relay_publishes_in_commit_order_and_advances_the_slot(
    wal_database_url: str, nats_url: str
) -> None:
    """Writers on 5 keys in parallel; each transaction takes the key's counter under a row
    lock, so per key the counter's order is the commit order the stream must show."""
    url = wal_database_url
    await apply_default_streams(nats_url)
    await fetch(url, "CREATE TABLE counters (k text PRIMARY KEY, n int NOT NULL)")
    await fetch(url, "INSERT INTO counters SELECT 'W' || g, 0 FROM generate_series(0, 4) g")
    committed: list[uuid.UUID] = []

    async def writer(eng: AsyncEngine, worker: int) -> None:
        for i in range(60):
            key = f"W{(worker + i) % 5}"
            async with eng.begin() as conn:
                n = (
                    await conn.execute(
                        text("UPDATE counters SET n = n + 1 WHERE k = :k RETURNING n"), {"k": key}
                    )
                ).scalar_one()
                event = update_event(key, n % 10)
                event = event.model_copy(update={"course_name": str(n)})
                await enqueue(conn, event)
                if i % 7 == 3:
                    await conn.rollback()  # never published
                    continue
            committed.append(event.event_id)

    async with (
        engine(url) as eng,
        running_relay(url, nats_url, capture="wal"),
    ):
        await asyncio.gather(*(writer(eng, w) for w in range(6)))
        assert await wait_for_messages(nats_url, len(committed)) == len(committed)
    # The relay stopped gracefully: its last PubAcks moved the slot.
    messages = await stream_messages(nats_url)
    ids = event_ids(messages)
    assert sorted(ids) == sorted(committed)  # none lost, no phantom (rolled back) event
    assert len(ids) == len(set(ids))
    per_key: dict[str, list[int]] = {}
    for m in messages:
        per_key.setdefault(m.headers["Vertector-Partition-Key"], []).append(
            int(json.loads(m.data)["course_name"])
        )
    for key, counters in per_key.items():
        assert counters == sorted(counters), key
    settings = RelaySettings(database_url=url)
    lag = await fetch(
        url,
        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots"
        " WHERE slot_name = $1",
        settings.slot_name,
    )
    assert lag[0][0] < 64 * 1024  # confirmed up to (about) the end of the WAL
    assert await read_slot(url) == []  # nothing left unconfirmed
    assert (await fetch(url, "SELECT count(*) FROM outbox_events"))[0][0] == 0


async def test_poison_event_is_quarantined_with_its_reason_and_its_key_goes_on(
    wal_database_url: str, nats_url: str
) -> None:
    url = wal_database_url
    await apply_default_streams(nats_url)
    before = update_event("P1", 1)
    poison = CourseUpdatedEvent(course_code="P1", credits=2).model_copy(
        update={"event_type": "academic.nowhere.updated"}
    )
    after = update_event("P1", 3)
    academic_only = [s for s in DEFAULT_STREAMS if s.name == "ACADEMIC_EVENTS"]
    async with engine(url) as eng:
        async with eng.begin() as conn:
            await enqueue_many(conn, [before, poison, after])
        async with running_relay(url, nats_url, capture="wal", streams=academic_only):
            assert await wait_for_messages(nats_url, 2) == 2
            for _ in range(200):
                rows = await fetch(url, "SELECT event_id, last_error, quarantined_at FROM"
                                   " outbox_events")  # fmt: skip
                if rows:
                    break
                await asyncio.sleep(0.05)
    assert event_ids(await stream_messages(nats_url)) == [before.event_id, after.event_id]
    [row] = rows
    assert row["event_id"] == poison.event_id
    assert row["quarantined_at"] is not None
    assert "academic.nowhere.updated" in row["last_error"]
    assert await read_slot(url) == []

    # The cause fixed (a stream now captures the subject), requeue puts the event back into
    # the WAL and the relay publishes it.
    nowhere = StreamConfig(name="T_NOWHERE", subjects=("academic.nowhere.*",))
    await apply_default_streams(nats_url, [nowhere])
    requeued = await asyncio.to_thread(
        cli, "dead-letters", "requeue", "--all",
        env=clean_env(OUTBOX_DATABASE_URL=url, OUTBOX_CAPTURE="wal"),
    )  # fmt: skip
    assert requeued.stdout.strip() == "1 events requeued", requeued.stderr
    assert (await fetch(url, "SELECT count(*) FROM outbox_events"))[0][0] == 0
    async with running_relay(url, nats_url, capture="wal", streams=[*academic_only, nowhere]):
        assert await wait_for_messages(nats_url, 1, stream="T_NOWHERE") == 1
    [again] = await stream_messages(nats_url, "T_NOWHERE")
    assert again.headers["Nats-Msg-Id"] == str(poison.event_id)
    assert again.data == poison.to_bytes()
    assert again.headers["Vertector-Partition-Key"] == "P1"


async def test_slot_lag_on_metrics_and_readyz_and_a_lost_slot_makes_the_relay_not_ready(
    wal_database_url: str, nats_url: str
) -> None:
    from prometheus_client import generate_latest

    url = wal_database_url
    await apply_default_streams(nats_url)
    slot = RelaySettings(database_url=url).slot_name
    async with engine(url) as eng, running_relay(url, nats_url, capture="wal") as app:
        async with eng.begin() as conn:
            await enqueue_many(conn, [update_event(f"M{i}") for i in range(50)])
        assert await wait_for_messages(nats_url, 50) == 50
        for _ in range(200):  # the monitor refreshes every 2 s
            ready, why = app.readiness()
            if "slot lag" in why:
                break
            await asyncio.sleep(0.05)
        assert ready and why.startswith("ready (slot lag "), why
        metrics = generate_latest(app.metrics.registry).decode()
        assert "vertector_relay_wal_slot_lag_bytes " in metrics
        assert "vertector_relay_wal_oldest_unconfirmed_age_seconds " in metrics
        assert "vertector_relay_wal_slot_invalidated 0.0" in metrics
        # The slot disappears under the relay (dropped between two of its reads; a stream,
        # RELAY_WAL_READ=stream, is ended first: an active slot cannot be dropped).
        for _ in range(200):
            await fetch(
                url, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = $1 AND active_pid IS NOT NULL", slot,
            )  # fmt: skip
            dropped = await fetch(
                url, "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots"
                " WHERE slot_name = $1 AND NOT active", slot,
            )  # fmt: skip
            if dropped[0][0]:
                break
        for _ in range(200):
            ready, why = app.readiness()
            if not ready:
                break
            await asyncio.sleep(0.05)
        assert (ready, why) == (
            False,
            f"replication slot {slot} does not exist: events may be lost",
        )
        metrics = generate_latest(app.metrics.registry).decode()
        assert "vertector_relay_wal_slot_invalidated 1.0" in metrics


async def test_an_idle_outbox_in_a_busy_database_still_releases_wal(wal_database_url: str) -> None:
    """Other transactions decode to nothing (pgoutput skips them), so without the relay's
    heartbeat message the slot would never move and would hold their WAL forever."""
    url = wal_database_url
    settings = RelaySettings(database_url=url)
    lag_sql = (
        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots"
        " WHERE slot_name = $1"
    )
    await fetch(url, "CREATE TABLE busy (x text)")
    await fetch(url, "INSERT INTO busy SELECT repeat('x', 100) FROM generate_series(1, 20000)")
    before = (await fetch(url, lag_sql, settings.slot_name))[0][0]
    assert before > 1_000_000
    await fetch(url, "UPDATE outbox_wal_readers SET owner = 'reader', epoch = 1, expires_at ="
                     " now() + interval '1 minute' WHERE slot = $1", settings.slot_name)  # fmt: skip
    store = WalStore(
        PgStore(settings.dsn, pool_size=2), slot=settings.slot_name,
        publication=settings.wal_publication, owner="reader", heartbeat_seconds=0,
    )  # fmt: skip
    await store.open()
    try:
        assert await store.claim(list(range(64)), [], [], 100) == []  # emits the heartbeat
        assert await store.claim(list(range(64)), [], [], 100) == []  # reads it, advances
    finally:
        await store.close()
    after = (await fetch(url, lag_sql, settings.slot_name))[0][0]
    assert after < 10_000, (before, after)


async def test_the_slots_restart_point_follows_what_the_relay_confirms(
    wal_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every peek and advance decodes from the slot's restart_lsn, which moves only past a
    running-transactions record (PostgreSQL writes one every 15 s): the store logs one after
    advancing (at most every SNAPSHOT_SECONDS), so the restart point follows within a few
    reads. Without it, the restart point stays where the slot was created; then, with the
    function gone (a schema before migration 0008), the store warns once and goes on."""
    url = wal_database_url
    settings = RelaySettings(database_url=url)
    slot_sql = (
        "SELECT (restart_lsn - '0/0'::pg_lsn)::bigint, (pg_current_wal_lsn() - '0/0'::pg_lsn)"
        "::bigint FROM pg_replication_slots WHERE slot_name = $1"
    )
    start = (await fetch(url, slot_sql, settings.slot_name))[0][0]
    await fetch(url, "UPDATE outbox_wal_readers SET owner = 'reader', epoch = 1, expires_at ="
                     " now() + interval '1 minute' WHERE slot = $1", settings.slot_name)  # fmt: skip
    now = [0.0]
    store = WalStore(
        PgStore(settings.dsn, pool_size=2), slot=settings.slot_name,
        publication=settings.wal_publication, owner="reader", clock=lambda: now[0],
    )  # fmt: skip

    async def relay_round(n: int) -> None:
        async with engine(url) as eng, eng.begin() as conn:
            await enqueue_many(conn, [update_event(f"R{i}", i % 10) for i in range(n)])
        rows = await store.claim(list(range(64)), [], [], 10_000)
        assert len(rows) == n
        now[0] += 1.0  # past SNAPSHOT_SECONDS
        await store.mark_sent([Sent(r.id, Stored("ACADEMIC_EVENTS", r.id, False)) for r in rows])

    await store.open()
    try:
        for _ in range(3):
            await relay_round(200)
        restart, end = (await fetch(url, slot_sql, settings.slot_name))[0]
        assert restart > start, "the restart point did not move"
        assert end - restart < 200_000, (start, restart, end)  # within the last rounds' WAL
        await fetch(url, "DROP FUNCTION outbox_wal_snapshot(text, text)")
        with caplog.at_level(logging.WARNING, logger="relay.walstore"):
            for _ in range(2):
                await relay_round(10)
    finally:
        await store.close()
    warnings = [r for r in caplog.records if "relay.wal.snapshot_unavailable" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    fields = warnings[0].event_fields  # type: ignore[attr-defined]
    assert fields["error"] == "undefined_function"
    assert "0008" in fields["fix"] and "pg_log_standby_snapshot" in fields["fix"]
    assert await read_slot(url) == []  # both rounds were confirmed all the same


async def test_a_relay_that_loses_the_reader_lease_lets_go_of_the_slot(
    wal_database_url: str, nats_url: str
) -> None:
    """The lease taken by another reader (as after a pause): the relay stops reading when its
    lease runs out on its own clock, and with RELAY_WAL_READ=stream closes its stream, so the
    slot is free for the new holder without anyone ending a session."""
    url = wal_database_url
    await apply_default_streams(nats_url)
    slot = RelaySettings(database_url=url).slot_name

    async def active() -> bool:
        rows = await fetch(
            url, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot
        )
        return bool(rows[0][0])

    async with (
        engine(url) as eng,
        running_relay(url, nats_url, capture="wal", lease_seconds=2) as app,
    ):
        async with eng.begin() as conn:
            await enqueue_many(conn, [update_event(f"L{i}") for i in range(5)])
        assert await wait_for_messages(nats_url, 5) == 5
        await fetch(
            url, "UPDATE outbox_wal_readers SET owner = 'another', expires_at = now()"
            " + interval '1 minute' WHERE slot = $1", slot,
        )  # fmt: skip
        for _ in range(200):  # its next renewal (every 0.4 s) finds the lease taken
            if not app.leases.held and not await active():
                break
            await asyncio.sleep(0.05)
        assert not app.leases.held
        assert not await active()
        async with eng.begin() as conn:
            await enqueue(conn, update_event("L-after"))
        await asyncio.sleep(1.0)
        assert await wait_for_messages(nats_url, 6, timeout=0.5) == 5  # not its slot any more

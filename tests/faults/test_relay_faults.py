"""Faults with real processes: the relay killed at named points and at random, several relays
with one killed every few seconds, a paused (zombie) relay, NATS and PostgreSQL killed under
load, the LISTEN connection cut. Each ends with the checker at 0 lost, 0 stream duplicates
(inside the duplicate window), 0 phantoms and 0 order violations."""

from __future__ import annotations

import asyncio
import os
import random
import shutil

import asyncpg
import pytest

from devtools.harness import (
    FaultRelay,
    Workload,
    assert_clean,
    check,
    create_test_stream,
    under_load,
    wait_drained,
)
from devtools.servers import EmbeddedNats, server_dir
from outbox_client.capture import capture_mode
from relay.checkpoints import POINTS
from tests.harness import PgTarget, asyncpg_url
from tests.relayrun import engine
from tests.walsupport import both_modes, wal_read  # noqa: F401 - every test in both capture modes


@pytest.mark.parametrize("point", POINTS)
async def test_relay_killed_at_a_named_crash_point_then_restarted(
    database_url: str, nats_url: str, point: str
) -> None:
    await create_test_stream(nats_url)
    async with engine(database_url) as eng:
        workload = Workload(eng, producers=4)
        await workload.run(per_producer=150)
        relay = FaultRelay(database_url, nats_url, "crashy")
        await relay.crash_at(point)
        relay.start()
        try:
            stream = await wait_drained(nats_url, workload)
        finally:
            relay.stop()
    assert_clean(check(workload, stream), [relay])


async def test_relay_killed_at_random_moments_under_load(database_url: str, nats_url: str) -> None:
    await create_test_stream(nats_url)
    rng = random.Random(11)
    relay = FaultRelay(database_url, nats_url, "victim")

    async def faults() -> None:
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            relay.kill()
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            relay.start()

    async with engine(database_url) as eng:
        workload = Workload(eng)
        report = await under_load(workload, nats_url, [relay], faults)
    assert len(workload.committed) > 500 and workload.rolled_back
    assert_clean(report, [relay])


async def test_three_relays_one_killed_every_few_seconds(database_url: str, nats_url: str) -> None:
    await create_test_stream(nats_url)
    relays = [FaultRelay(database_url, nats_url, f"r{i}") for i in range(3)]
    owners: list[asyncpg.Record] = []
    wal = capture_mode() == "wal"
    wanted = 1 if wal else 2  # WAL: a standby took the slot over; table: partitions shared

    async def reader() -> str | None:
        conn = await asyncpg.connect(asyncpg_url(database_url))
        try:
            return await conn.fetchval(  # type: ignore[no-any-return]
                "SELECT owner FROM outbox_wal_readers WHERE expires_at > now()"
            )
        finally:
            await conn.close()

    async def faults() -> None:
        for round_ in range(5):
            await asyncio.sleep(1.5)
            victim = relays[round_ % 3]
            if wal:  # one reader at a time: kill the one that holds the slot
                holder = await reader()
                victim = next((r for r in relays if r.name == holder), victim)
            victim.kill()
            if wal:  # a standby must take the slot over before the victim may come back
                deadline = asyncio.get_running_loop().time() + 60
                while await reader() in (None, victim.name):
                    assert asyncio.get_running_loop().time() < deadline, "no standby took over"
                    await asyncio.sleep(0.2)
            else:
                await asyncio.sleep(0.5)
            victim.start()
        # The restarted instances come back into the rotation: wait for it (a busy machine
        # takes longer than a lease to start a relay), while the load goes on.
        conn = await asyncpg.connect(asyncpg_url(database_url))
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while len(owners) < wanted and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
                owners[:] = await conn.fetch(
                    # WAL capture: one reader at a time; the slot changed hands (epoch >= 2).
                    "SELECT owner, epoch FROM outbox_wal_readers WHERE expires_at > now()"
                    " AND epoch >= 2"
                    if wal
                    else "SELECT owner, count(*) FROM outbox_relay_leases WHERE expires_at > now()"
                    " GROUP BY owner"
                )
        finally:
            await conn.close()

    async with engine(database_url) as eng:
        report = await under_load(Workload(eng, producers=8), nats_url, relays, faults)
    assert_clean(report, relays)
    assert len(owners) >= wanted, f"partitions were not shared / slot not taken over: {owners}"


async def test_paused_relay_wakes_without_publishing_out_of_order(
    database_url: str, nats_url: str
) -> None:
    await create_test_stream(nats_url)
    zombie = FaultRelay(database_url, nats_url, "zombie").start()
    # It takes every partition (the slot) before the other starts: waited for, not slept
    # for, since a busy machine can take longer than a second to start a relay.
    await zombie.wait_for_log("relay.loop.started")
    healthy = FaultRelay(database_url, nats_url, "healthy")
    streaming = wal_read() == "stream" and os.environ.get("OUTBOX_CAPTURE") == "wal"

    async def faults() -> None:
        await asyncio.sleep(1.0)
        if streaming:  # its walsender is open when it stops
            await zombie.wait_for_log("relay.wal.stream_started")
        zombie.pause()  # mid-batch, leases held
        await asyncio.sleep(5.0)  # > 2 lease periods: the healthy relay takes over
        zombie.resume()
        await asyncio.sleep(2.0)

    async with engine(database_url) as eng:
        report = await under_load(Workload(eng), nats_url, [zombie, healthy], faults)
    assert_clean(report, [zombie, healthy])
    if streaming:
        # The zombie's walsender outlived its lease: the new holder ended it to stream.
        assert "relay.wal.stream_taken_over" in healthy.log.read_text(), healthy.tail()


async def test_nats_killed_and_restarted_under_load(database_url: str) -> None:
    base = server_dir("vertector-fault-nats-")
    server = EmbeddedNats(base / "nats")
    server.start()
    try:
        await create_test_stream(server.url)
        relay = FaultRelay(database_url, server.url, "survivor")

        async def faults() -> None:
            for _ in range(2):
                await asyncio.sleep(1.0)
                server.kill()
                await asyncio.sleep(1.5)
                server.start()
            await asyncio.sleep(1.0)
            server.pause()  # longer than the publish timeout
            await asyncio.sleep(4.0)
            server.resume()

        async with engine(database_url) as eng:
            report = await under_load(Workload(eng), server.url, [relay], faults)
        assert_clean(report, [relay])
        assert relay.exits == [0]
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_postgres_killed_and_restarted_under_load(
    pg: PgTarget, database_url: str, nats_url: str
) -> None:
    server = pg.require_control()
    await create_test_stream(nats_url)
    relay = FaultRelay(database_url, nats_url, "pg-survivor")

    async def faults() -> None:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)
        await asyncio.sleep(2.0)

    async with engine(database_url) as eng:
        report = await under_load(Workload(eng), nats_url, [relay], faults)
    assert_clean(report, [relay])
    assert relay.exits == [0]


async def test_listen_connection_terminated_repeatedly(database_url: str, nats_url: str) -> None:
    await create_test_stream(nats_url)
    # A long poll interval: only NOTIFY (and the rescan after each reconnect) delivers fast.
    relay = FaultRelay(database_url, nats_url, "listener", RELAY_POLL_INTERVAL_SECONDS="30")
    terminated = 0

    async def faults() -> None:
        nonlocal terminated
        admin = await asyncpg.connect(asyncpg_url(database_url))
        try:
            for _ in range(8):
                for _ in range(100):  # until the relay has (re)connected its LISTEN connection
                    if await admin.fetchval(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid)"
                        " FROM pg_stat_activity WHERE datname = current_database()"
                        " AND query LIKE 'LISTEN%') t"
                    ):
                        terminated += 1
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.3)
        finally:
            await admin.close()

    async with engine(database_url) as eng:
        workload = Workload(eng, producers=3, rollback_share=0.0)
        report = await under_load(workload, nats_url, [relay], faults)
    assert_clean(report, [relay])
    assert terminated == 8, "the relay did not reconnect its LISTEN connection every time"


async def test_relay_down_past_the_duplicate_window_duplicates_reach_the_stream_not_effects(
    database_url: str, nats_url: str
) -> None:
    """The documented limit: published, not marked, re-published after the window -> the
    stream holds the event twice; the consumer's inbox applies it once."""
    from nats.aio.msg import Msg
    from sqlalchemy import Column, MetaData, String, Table
    from sqlalchemy.dialects.postgresql import insert
    from sqlalchemy.ext.asyncio import AsyncConnection

    from outbox_client import (
        BaseEvent,
        ConsumerConfig,
        EventConsumer,
        Inbox,
        NATSClient,
        NATSConfig,
    )

    await create_test_stream(nats_url, duplicate_window=1)
    md = MetaData()
    effects = Table("fault_effects", md, Column("event_id", String, primary_key=True))
    async with engine(database_url) as eng:
        async with eng.begin() as conn:
            await conn.run_sync(md.create_all)
        workload = Workload(eng, producers=2, rollback_share=0.0)
        await workload.run(per_producer=100)
        relay = FaultRelay(database_url, nats_url, "slow-to-return")
        await relay.crash_at("after_ack_before_mark")
        # Down longer than the duplicate window. nats-server forgets ids on a timer that runs
        # about once per window, so an id can outlive the window by up to one more.
        await asyncio.sleep(3.0)
        relay.start()
        try:
            stream = await wait_drained(nats_url, workload)
        finally:
            relay.stop()
        report = check(workload, stream)
        assert report.lost == 0 and report.order_violations == 0 and report.phantoms == 0
        assert report.stream_duplicates > 0, "the scenario did not produce a late re-publish"

        inbox = Inbox(eng, consumer="fault-notes")
        applied = 0

        async def effect(conn: AsyncConnection, event: BaseEvent) -> None:
            nonlocal applied
            applied += 1
            await conn.execute(insert(effects).values(event_id=str(event.event_id)))

        async def handler(event: BaseEvent, msg: Msg) -> None:
            await inbox.apply(event, effect)

        async with NATSClient(NATSConfig(servers=[nats_url])) as client:
            consumer = EventConsumer(
                client,
                "ACADEMIC_EVENTS",
                ConsumerConfig(durable_name="fault-notes"),
                batch_size=100,
                fetch_timeout=0.2,
            )
            task = asyncio.create_task(consumer.subscribe(handler))
            for _ in range(300):
                if consumer.processed >= len(stream):
                    break
                await asyncio.sleep(0.05)
            consumer.stop()
            await task
    assert consumer.processed == len(stream)
    assert applied == len(workload.committed), "a duplicate in the stream became a duplicate effect"

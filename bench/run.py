"""`make bench`: what the relay costs and delivers, measured against baselines of the same run.

On throw-away servers from the wheels (PostgreSQL with fsync on, nats-server with JetStream):
  (a) ceiling   raw `publish_async` of the same payloads and headers, no database;
  (b) drain     `vertector-relay run` (a subprocess) draining a backlog of BENCH_BACKLOG events;
                then 1, 2 and 3 relays together on half that backlog (scale-out vs one relay);
  (c) latency   steady load at 1,000 and 5,000 events/s: commit -> stored in the stream, p50/p99;
  (d) producer  transactions/s of a domain insert, with and without `enqueue`;
  (e) many      events/s of 500 `enqueue` calls per transaction on an AsyncSession (staged,
                one INSERT at commit) against `enqueue_many` of the same 500 events;
  (f) consumer  the notes service as a process: its drain of a backlog beside the relay's, and
                commit -> consumed end to end at 1,000 and 5,000 events/s (bench/consumer.py).
BENCH_SECTIONS=consumer,latency (any of ceiling,drain,latency,producer,consumer; producer
includes (e)) runs only those and keeps the other results of the previous latest.json.
Prints a table with the ratios and writes bench/results/latest.json. A report, not a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.js import api as js_api
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from bench.consumer import consumer_section
from devtools.processes import RelayProcess
from devtools.servers import EmbeddedNats, EmbeddedPostgres, server_dir
from outbox_client import (
    CourseUpdatedEvent,
    EventMetadata,
    enqueue,
    enqueue_many,
    with_events,
)
from outbox_client.dburl import asyncpg_sqlalchemy_url
from relay import schema

ROOT = Path(__file__).resolve().parents[1]

BACKLOG = int(os.environ.get("BENCH_BACKLOG", "200000"))
STEADY_SECONDS = float(os.environ.get("BENCH_STEADY_SECONDS", "10"))
PRODUCER_SECONDS = float(os.environ.get("BENCH_PRODUCER_SECONDS", "8"))
KEYS = 5000  # distinct aggregates in the generated load
RESULTS = ROOT / "bench" / "results"
ALL_SECTIONS = ("ceiling", "drain", "latency", "producer", "consumer")
SECTIONS = os.environ.get("BENCH_SECTIONS", ",".join(ALL_SECTIONS)).split(",")

domain = MetaData()
courses = Table(
    "bench_courses",
    domain,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String, nullable=False),
    Column("credits", Integer, nullable=False),
)


def event(i: int) -> CourseUpdatedEvent:
    return CourseUpdatedEvent(
        course_code=f"CS{i % KEYS}",
        credits=i % 7,
        description="Updated syllabus: " + "lorem ipsum dolor sit amet " * 30,  # ~1 KB events
        metadata=EventMetadata(source_service="bench", correlation_id=f"req-{i}"),
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return (
        round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else float("nan")
    )


async def reset_stream(js: Any, replicas: int = 1) -> None:
    for name in [s.config.name for s in await js.streams_info()]:
        await js.delete_stream(name)
    # LIMITS retention so that the benchmark can read every message back afterwards.
    await js.add_stream(
        js_api.StreamConfig(
            name="ACADEMIC_EVENTS", subjects=["academic.>"], duplicate_window=600,
            storage=js_api.StorageType.FILE, num_replicas=replicas,
        )
    )  # fmt: skip
    await js.add_stream(
        js_api.StreamConfig(name="NOTES_EVENTS", subjects=["notes.>"], num_replicas=replicas)
    )


async def ceiling(nats_url: str, n: int) -> float:
    """(a) raw publish_async of the same bytes and headers, 4096 in flight."""
    events = [event(i) for i in range(n)]
    payloads = [
        (
            e.subject,
            e.to_bytes(),
            e.nats_headers()
            | {"Nats-Msg-Id": str(e.event_id), "Vertector-Partition-Key": e.partition_key},
        )
        for e in events
    ]
    nc = await nats.connect(nats_url)
    js = nc.jetstream(publish_async_max_pending=4096)
    await reset_stream(js)
    started = time.perf_counter()
    for start in range(0, n, 4096):
        futures = [
            await js.publish_async(s, p, headers=dict(h))
            for s, p, h in payloads[start : start + 4096]
        ]
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await nc.close()
    return n / elapsed


async def fill_backlog(engine: AsyncEngine, n: int) -> None:
    for start in range(0, n, 5000):
        async with engine.begin() as conn:
            await enqueue_many(conn, [event(i) for i in range(start, min(n, start + 5000))])


async def unsent(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM outbox_events WHERE sent_at IS NULL"))
    finally:
        await conn.close()


async def stream_span(js: Any, n: int) -> tuple[int, float]:
    """ACADEMIC_EVENTS's message count (asserted to be ``n``) and the seconds between its first
    and last message: the stream's own clock."""
    state = (await js.stream_info("ACADEMIC_EVENTS")).state
    first = await js.get_msg("ACADEMIC_EVENTS", state.first_seq)
    last = await js.get_msg("ACADEMIC_EVENTS", state.last_seq)
    assert state.messages == n, f"stream holds {state.messages} of {n}"
    assert first.time is not None and last.time is not None
    return state.messages, (last.time - first.time).total_seconds()


async def drain(
    database_url: str, nats_url: str, engine: AsyncEngine, n: int, relays: int = 1
) -> dict[str, float]:
    """(b) `relays` relay processes draining a backlog of n events together."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await reset_stream(js)
    await fill_backlog(engine, n)
    started = time.perf_counter()
    procs = [
        RelayProcess(database_url, nats_url, f"bench-{i}", RELAY_METRICS_PORT="0").start()
        for i in range(relays)
    ]
    try:
        while await unsent(database_url) > 0:
            await asyncio.sleep(0.2)
        wall = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.stop()
    messages, stream_seconds = await stream_span(js, n)
    await nc.close()
    return {
        "events_per_s": n / stream_seconds,
        "wall_events_per_s": n / wall,
        "messages": messages,
    }


async def steady(
    database_url: str, nats_url: str, engine: AsyncEngine, rate: int
) -> dict[str, float]:
    """(c) steady load: commits paced at `rate` events/s; commit -> stored latency."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await reset_stream(js)
    proc = RelayProcess(database_url, nats_url, "bench", RELAY_METRICS_PORT="0").start()
    await asyncio.sleep(1.5)  # let it connect and settle
    committed: dict[str, float] = {}
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    total = int(rate * STEADY_SECONDS)
    i = 0
    started = time.perf_counter()
    try:
        while i < total:
            batch = [event(j) for j in range(i, min(total, i + per_tick))]
            async with engine.begin() as conn:
                await enqueue_many(conn, batch)
            now = time.time()
            for e in batch:
                committed[str(e.event_id)] = now
            i += len(batch)
            behind = started + (i / rate) - time.perf_counter()
            if behind > 0:
                await asyncio.sleep(behind)
        achieved = total / (time.perf_counter() - started)
        while await unsent(database_url) > 0:
            await asyncio.sleep(0.1)
    finally:
        proc.stop()
    latencies = []
    sub = await js.subscribe(
        "academic.>", stream="ACADEMIC_EVENTS", ordered_consumer=True, pending_msgs_limit=total + 10
    )
    for _ in range(total):
        msg = await sub.next_msg(timeout=10)
        assert msg.headers is not None
        latencies.append(
            (msg.metadata.timestamp.timestamp() - committed[msg.headers["Nats-Msg-Id"]]) * 1000
        )
    await nc.close()
    return {
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "achieved_events_per_s": round(achieved),
    }


async def producer_tps(engine: AsyncEngine, mode: str) -> float:
    """(d) single-event business transactions/s from 4 concurrent clients.

    mode: "none" (domain insert only), "enqueue" (plus enqueue), "with_events" (both in one
    statement), "session" (domain insert and enqueue on an AsyncSession: staged, written at
    commit)."""
    count = 0
    deadline = time.perf_counter() + PRODUCER_SECONDS

    async def client(c: int) -> None:
        nonlocal count
        n = 0
        while time.perf_counter() < deadline:
            write = insert(courses).values(code=f"CS{c}-{n}", credits=3)
            if mode == "session":
                async with AsyncSession(engine) as session, session.begin():
                    await session.execute(write)
                    await enqueue(session, event(n))
                n += 1
                count += 1
                continue
            async with engine.begin() as conn:
                if mode == "with_events":
                    await conn.execute(with_events(write, event(n)))
                else:
                    await conn.execute(write)
                    if mode == "enqueue":
                        await enqueue(conn, event(n))
            n += 1
            count += 1

    await asyncio.gather(*(client(c) for c in range(4)))
    return count / PRODUCER_SECONDS


async def many_per_transaction(engine: AsyncEngine, per_tx: int = 500) -> dict[str, int]:
    """(e) events/s, one client, ``per_tx`` freshly built events per transaction (building
    them is part of the cost, as it is for a producer), for each way of adding them."""

    async def calls(session: AsyncSession, events: list[CourseUpdatedEvent]) -> None:
        for e in events:
            await enqueue(session, e)

    async def many(session: AsyncSession, events: list[CourseUpdatedEvent]) -> None:
        await enqueue_many(session, events)

    async def many_conn(conn: AsyncConnection, events: list[CourseUpdatedEvent]) -> None:
        await enqueue_many(conn, events)

    async def rate(add: Any, on_session: bool) -> int:
        count = 0
        deadline = time.perf_counter() + PRODUCER_SECONDS
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            events = [event(count + i) for i in range(per_tx)]
            if on_session:
                async with AsyncSession(engine) as session, session.begin():
                    await add(session, events)
            else:
                async with engine.begin() as conn:
                    await add(conn, events)
            count += per_tx
        return round(count / (time.perf_counter() - started))

    return {
        f"enqueue_{per_tx}_calls_per_tx_session": await rate(calls, True),
        f"enqueue_many_{per_tx}_per_tx_session": await rate(many, True),
        f"enqueue_many_{per_tx}_per_tx_connection": await rate(many_conn, False),
    }


async def main() -> int:
    base = server_dir("vertector-bench-")
    pg = EmbeddedPostgres(base / "pg", fsync=True)
    ns = EmbeddedNats(base / "nats")
    pg.start()
    ns.start()
    results: dict[str, Any] = {}
    if set(SECTIONS) != set(ALL_SECTIONS):
        results = json.loads((RESULTS / "latest.json").read_text())
    try:
        url = pg.url()
        await asyncio.to_thread(schema.upgrade, url)
        engine = create_async_engine(asyncpg_sqlalchemy_url(url), pool_size=8)
        async with engine.begin() as conn:
            await conn.run_sync(domain.create_all)
        print(
            f"bench: backlog {BACKLOG}, steady {STEADY_SECONDS:.0f} s per rate, producer {PRODUCER_SECONDS:.0f} s",
            flush=True,
        )
        if "ceiling" in SECTIONS:
            results["ceiling_events_per_s"] = round(await ceiling(ns.url, min(BACKLOG, 100_000)))
            print(f"  (a) ceiling: {results['ceiling_events_per_s']} events/s", flush=True)
        if "consumer" in SECTIONS:
            results["consumer"] = await consumer_section(pg.url(), url, ns.url, engine, event, KEYS)
        d = await drain(url, ns.url, engine, BACKLOG) if "drain" in SECTIONS else None
        if d is not None:
            results["drain_events_per_s"] = round(d["events_per_s"])
            results["drain_wall_events_per_s"] = round(d["wall_events_per_s"])
            print(f"  (b) drain: {results['drain_events_per_s']} events/s", flush=True)
        # Same backlog for 1, 2 and 3 relays: a smaller backlog drains faster by itself.
        by_relays = results.setdefault("drain_events_per_s_by_relays", {})
        for relays in (1, 2, 3) if d is not None else ():
            multi = await drain(url, ns.url, engine, BACKLOG // 2, relays=relays)
            by_relays[str(relays)] = round(multi["events_per_s"])
            print(f"  (b) drain, {relays} relays: {by_relays[str(relays)]} events/s", flush=True)
        results.setdefault("latency_ms", {})
        for rate in (1000, 5000) if "latency" in SECTIONS else ():
            results["latency_ms"][str(rate)] = await steady(url, ns.url, engine, rate)
            print(f"  (c) {rate}/s: {results['latency_ms'][str(rate)]}", flush=True)
        if "producer" in SECTIONS:
            results["producer_tps_without_outbox"] = round(await producer_tps(engine, "none"))
            results["producer_tps_with_outbox"] = round(await producer_tps(engine, "enqueue"))
            results["producer_tps_with_events_one_statement"] = round(
                await producer_tps(engine, "with_events")
            )
            results["producer_tps_with_outbox_session"] = round(
                await producer_tps(engine, "session")
            )
            print(
                f"  (d) producer: {results['producer_tps_without_outbox']} -> {results['producer_tps_with_outbox']} (enqueue), {results['producer_tps_with_events_one_statement']} (with_events), {results['producer_tps_with_outbox_session']} (enqueue on an AsyncSession) tx/s",
                flush=True,
            )
            results["many_per_tx_events_per_s"] = await many_per_transaction(engine)
            print(f"  (e) many per transaction: {results['many_per_tx_events_per_s']}", flush=True)
        await engine.dispose()
    finally:
        ns.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    drain_ratio = results["drain_events_per_s"] / results["ceiling_events_per_s"]
    cost = 1 - results["producer_tps_with_outbox"] / results["producer_tps_without_outbox"]
    cost_one = (
        1
        - results["producer_tps_with_events_one_statement"] / results["producer_tps_without_outbox"]
    )
    results["ratios"] = {
        "drain_over_ceiling": round(drain_ratio, 3),
        "enqueue_cost": round(cost, 3),
        "with_events_cost": round(cost_one, 3),
        "three_relays_over_one": round(
            results["drain_events_per_s_by_relays"]["3"]
            / results["drain_events_per_s_by_relays"]["1"],
            3,
        ),
    }
    results["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    lat = results["latency_ms"]
    by_relays = results["drain_events_per_s_by_relays"]
    rows = [
        ("ceiling (raw publish_async)", f"{results['ceiling_events_per_s']:>8} ev/s", ""),
        (
            "relay drain",
            f"{results['drain_events_per_s']:>8} ev/s",
            f"{drain_ratio:.2f} x ceiling (target >= 0.60)",
        ),
        (
            "drain, 2 relays",
            f"{by_relays['2']:>8} ev/s",
            f"{by_relays['2'] / by_relays['1']:.2f} x one relay (target >= 1)",
        ),
        (
            "drain, 3 relays",
            f"{by_relays['3']:>8} ev/s",
            f"{by_relays['3'] / by_relays['1']:.2f} x one relay (target >= 1)",
        ),
        (
            "latency @1000/s p50 / p99",
            f"{lat['1000']['p50']:>6} / {lat['1000']['p99']} ms",
            "target p99 <= 50 ms",
        ),
        ("latency @5000/s p50 / p99", f"{lat['5000']['p50']:>6} / {lat['5000']['p99']} ms", ""),
        ("producer tx/s without outbox", f"{results['producer_tps_without_outbox']:>8}", ""),
        (
            "producer tx/s with enqueue",
            f"{results['producer_tps_with_outbox']:>8}",
            f"cost {cost:.1%} (target <= 15 %)",
        ),
        (
            "producer tx/s, enqueue on session",
            f"{results['producer_tps_with_outbox_session']:>8}",
            "AsyncSession, staged, written at commit",
        ),
        *(
            (name.replace("_", " "), f"{value:>8} ev/s", "")
            for name, value in results["many_per_tx_events_per_s"].items()
        ),
        (
            "producer tx/s with with_events",
            f"{results['producer_tps_with_events_one_statement']:>8}",
            f"cost {cost_one:.1%} (one statement)",
        ),
    ]
    print()
    for name, value, note in rows:
        print(f"{name:32} {value:24} {note}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

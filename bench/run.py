"""`make bench`: what the relay costs and delivers in both capture modes, measured against
baselines of the same run.

On throw-away servers from the wheels (PostgreSQL with fsync on, nats-server with JetStream),
each figure per capture mode (BENCH_MODES, default table,wal: ``OUTBOX_CAPTURE`` of the
producers and of the relay; WAL measurements each on a fresh slot; WAL capture's relay figures
once per RELAY_WAL_READ of BENCH_WAL_READS, default functions,stream: "wal" and "wal_stream")
unless said otherwise:
  (a) ceiling   raw `publish_async` of the same payloads and headers, no database;
  (b) drain     `vertector-relay run` (a subprocess) draining a backlog enqueued 5,000 events
                per transaction, at each of BENCH_BACKLOGS (default 100000,1000000; the first
                is the headline): events/s on the stream's clock, the relay's CPU per event
                (/proc, first message stored to last); table mode also 2 and 3 relays on the
                first backlog (WAL capture has one reader);
  (c) latency   steady load at 1,000 and 5,000 events/s: commit -> stored in the stream, p50/p99
                after a first second of the same load (its p99 apart: warmup_p99);
  (d) producer  transactions/s of a domain insert: alone, plus ``SELECT 1`` (the floor of any
                extra statement), plus ``enqueue`` (and ``with_events``, ``enqueue`` on an
                AsyncSession, and the statement ``enqueue`` sends built ahead: statement_cost)
                in each mode, in BENCH_PRODUCER_ROUNDS (32) turns: enqueue_cost beside
                extra_statement_cost;
  (e) many      (table mode) events/s of 500 `enqueue` calls per transaction on an AsyncSession
                (staged, one INSERT at commit) against `enqueue_many` of the same 500 events;
  (f) consumer  the notes service as a process: its drain of a backlog beside the relay's, and
                commit -> consumed end to end at 1,000 and 5,000 events/s (bench/consumer.py).
BENCH_SECTIONS=consumer,latency (any of ceiling,drain,latency,producer,consumer; producer
includes (e)) or BENCH_MODES=wal runs only those and keeps the other results of the previous
latest.json; BENCH_BACKLOGS=10000,100000 is a quick check. Prints both modes side by side and
issue 13's targets, and writes bench/results/latest.json ("modes": {"table": ..., "wal": ...}).
A report, not a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import asyncpg
import nats
from nats.js import api as js_api
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from bench.consumer import consumer_section
from bench.load import count, produce_paced
from devtools.processes import RelayProcess
from devtools.servers import EmbeddedNats, EmbeddedPostgres, server_dir
from outbox_client import (
    CourseUpdatedEvent,
    EventMetadata,
    enqueue,
    enqueue_many,
    with_events,
)
from outbox_client.capture import set_capture
from outbox_client.dburl import asyncpg_sqlalchemy_url
from outbox_client.enqueue import _row
from outbox_client.staging import _asyncpg_statement
from relay import schema, walslot

ROOT = Path(__file__).resolve().parents[1]

Mode = Literal["table", "wal"]
BACKLOGS = [int(n) for n in os.environ.get("BENCH_BACKLOGS", "100000,1000000").split(",")]
FILL_PER_TX = 5000  # a backlog is enqueued this many events to a transaction
STEADY_SECONDS = float(os.environ.get("BENCH_STEADY_SECONDS", "10"))
#: Load before the measured STEADY_SECONDS of each rate, reported apart (steady's warmup_p99).
WARMUP_SECONDS = 1.0
PRODUCER_SECONDS = float(os.environ.get("BENCH_PRODUCER_SECONDS", "8"))
PRODUCER_ROUNDS = int(os.environ.get("BENCH_PRODUCER_ROUNDS", "32"))
KEYS = 5000  # distinct aggregates in the generated load
RESULTS = ROOT / "bench" / "results"
ALL_SECTIONS = ("ceiling", "drain", "latency", "producer", "consumer")
SECTIONS = os.environ.get("BENCH_SECTIONS", ",".join(ALL_SECTIONS)).split(",")
ALL_MODES: tuple[Mode, ...] = ("table", "wal")
MODES: list[Mode] = [m for m in ALL_MODES if m in os.environ.get("BENCH_MODES", "table,wal")]
#: WAL capture's relay figures once per way of reading the slot (RELAY_WAL_READ): "wal" holds
#: the default's (functions), "wal_stream" the streaming protocol's (same producers, so the
#: producer figures are "wal"'s).
WAL_READS = os.environ.get("BENCH_WAL_READS", "functions,stream").split(",")
#: (key in "modes", capture mode, RELAY_WAL_READ) of each relay measured.
RELAY_RUNS: list[tuple[str, Mode, str]] = [
    (key, mode, read)
    for mode in MODES
    for key, read in (
        [("table", "functions")]
        if mode == "table"
        else [(k, r) for k, r in (("wal", "functions"), ("wal_stream", "stream")) if r in WAL_READS]
    )
]
#: Keys of a latest.json from before both modes were measured: now under modes.* and targets.
LEGACY_KEYS = ("drain_events_per_s", "drain_wall_events_per_s", "latency_ms", "ratios",
               "producer_tps_with_outbox", "producer_tps_with_events_one_statement",
               "producer_tps_with_outbox_session")  # fmt: skip
WAL_DB = "bench_wal"  # WAL mode's producers and relay; table mode's are in the default one

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


async def fill_backlog(engine: AsyncEngine, n: int) -> float:
    """Enqueue ``n`` events, FILL_PER_TX to a transaction; the events/s it took."""
    started = time.perf_counter()
    for start in range(0, n, FILL_PER_TX):
        async with engine.begin() as conn:
            await enqueue_many(conn, [event(i) for i in range(start, min(n, start + FILL_PER_TX))])
    return n / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def capture(mode: Mode, database_url: str) -> AsyncIterator[None]:
    """Producers of this process write in ``mode``; in WAL mode around a slot of its own,
    created here and dropped after (the relays inside must have stopped by then), so that no
    measurement starts behind the WAL of those before it."""
    if mode == "wal":
        await walslot.setup_database(database_url)
    set_capture(mode)
    try:
        yield
    finally:
        set_capture(None)
        if mode == "wal":
            await walslot.teardown_database(database_url)


def relay(
    database_url: str, nats_url: str, name: str, mode: Mode, read: str = "functions"
) -> RelayProcess:
    return RelayProcess(
        database_url, nats_url, name, RELAY_METRICS_PORT="0", OUTBOX_CAPTURE=mode,
        RELAY_WAL_READ=read,
    ).start()  # fmt: skip


async def stored(js: Any) -> int:
    return int((await js.stream_info("ACADEMIC_EVENTS")).state.messages)


async def until_relayed(js: Any, database_url: str, mode: Mode, n: int) -> None:
    """Until the stream holds ``n`` messages and, in table mode, every row is marked (so that
    the relays stop with nothing left to publish again)."""
    while await stored(js) < n:
        await asyncio.sleep(0.2)
    while mode == "table" and await unsent(database_url) > 0:
        await asyncio.sleep(0.2)


async def unsent(database_url: str) -> int:
    return await count(database_url, "SELECT count(*) FROM outbox_events WHERE sent_at IS NULL")


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
    database_url: str,
    nats_url: str,
    engine: AsyncEngine,
    n: int,
    mode: Mode,
    relays: int = 1,
    read: str = "functions",
) -> dict[str, float]:
    """(b) `relays` relay processes draining a backlog of n events together; their CPU from
    the first message stored to the last."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await reset_stream(js)
    async with capture(mode, database_url):
        fill = await fill_backlog(engine, n)
        started = time.perf_counter()
        procs = [
            relay(database_url, nats_url, f"bench-{mode}-{i}", mode, read) for i in range(relays)
        ]
        try:
            while (first := await stored(js)) == 0:
                await asyncio.sleep(0.05)
            cpu = -sum(p.cpu_seconds() for p in procs)
            while await stored(js) < n:
                await asyncio.sleep(0.2)
            cpu += sum(p.cpu_seconds() for p in procs)
            await until_relayed(js, database_url, mode, n)
            wall = time.perf_counter() - started
        finally:
            for proc in procs:
                proc.stop()
    messages, stream_seconds = await stream_span(js, n)
    await nc.close()
    return {
        "events_per_s": n / stream_seconds,
        "wall_events_per_s": n / wall,
        "cpu_ms_per_event": cpu * 1000 / (n - first),
        "fill_events_per_s": fill,
        "messages": messages,
    }


async def steady(
    database_url: str, nats_url: str, engine: AsyncEngine, rate: int, mode: Mode, read: str
) -> dict[str, float]:
    """(c) steady load: commits paced at `rate` events/s, one every 10 ms; commit -> stored.

    The first WARMUP_SECONDS of load are not counted in p50/p99: the relay has just started,
    the producer's pool opens its connections, the new stream writes its first block. Their
    own p99 is reported beside (``warmup_p99``), so the start is measured, apart."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await reset_stream(js)
    committed: dict[str, float] = {}
    warmup = int(rate * WARMUP_SECONDS)
    total = warmup + int(rate * STEADY_SECONDS)
    async with capture(mode, database_url):
        proc = relay(database_url, nats_url, f"bench-{mode}", mode, read)
        try:
            await proc.wait_for_log("relay.loop.started")
            await asyncio.sleep(1.0)  # let it settle
            achieved = await produce_paced(
                engine, event, rate, total, committed, per_commit=max(1, rate // 100)
            )
            await until_relayed(js, database_url, mode, total)
        finally:
            proc.stop()
    warming = set(list(committed)[:warmup])  # committed in commit order
    latencies: list[float] = []
    warmup_latencies: list[float] = []
    sub = await js.subscribe(
        "academic.>", stream="ACADEMIC_EVENTS", ordered_consumer=True, pending_msgs_limit=total + 10
    )
    for _ in range(total):
        msg = await sub.next_msg(timeout=10)
        assert msg.headers is not None
        msg_id = msg.headers["Nats-Msg-Id"]
        latency = (msg.metadata.timestamp.timestamp() - committed[msg_id]) * 1000
        (warmup_latencies if msg_id in warming else latencies).append(latency)
    await nc.close()
    return {
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "achieved_events_per_s": round(achieved),
        "warmup_p99": pct(warmup_latencies, 0.99),
        "warmup_seconds": WARMUP_SECONDS,
    }


#: (d) the producer's variants: (capture mode, what the transaction does besides its insert).
VARIANTS: dict[str, tuple[Mode, str]] = {
    "none": ("table", "none"),
    "extra_statement": ("table", "select_1"),
    **{f"{mode}:{how}": (mode, how) for mode in MODES for how in ("enqueue", "with_events",
                                                                   "session", "statement")},
}  # fmt: skip


async def transaction(engine: AsyncEngine, how: str, write: Any, e: Any) -> None:
    """One business transaction of the producer variant ``how`` (see producer_tps); ``e`` is
    the event, or for "statement" the statement and arguments ``enqueue`` would send."""
    if how == "session":
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(write)
            await enqueue(session, e)
        return
    async with engine.begin() as conn:
        if how == "with_events":
            await conn.execute(with_events(write, e))
            return
        await conn.execute(write)
        if how == "enqueue":
            await enqueue(conn, e)
        elif how in ("select_1", "statement"):
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            # asyncpg, as enqueue sends its statement
            await driver.execute(*(("SELECT 1",) if how == "select_1" else e))


def prebuilt_statement(e: CourseUpdatedEvent) -> tuple[Any, ...]:
    """The statement and arguments ``enqueue`` sends for ``e`` on asyncpg, in the capture mode
    set now (its checks and encoding done here, ahead of the measurement)."""
    return _asyncpg_statement([_row(e, None)])


async def producer_tps(engines: dict[Mode, AsyncEngine]) -> dict[str, float]:
    """(d) single-event business transactions/s from 4 concurrent clients, for each variant:
    "none" (the domain insert only), "extra_statement" (plus ``SELECT 1``, sent the way
    ``enqueue`` sends its statement: the floor any outbox write pays), then per capture mode
    "enqueue" (plus ``enqueue``), "with_events" (both in one statement), "session" (insert
    and ``enqueue`` on an AsyncSession: staged, written at commit), "statement" (the statement
    ``enqueue`` sends, built before the round: the write without enqueue's checks and
    encoding). The variants take turns,
    PRODUCER_ROUNDS rounds of PRODUCER_SECONDS / PRODUCER_ROUNDS each, so that the machine's
    drift falls on all of them alike. The events are built before each round (the
    application has its event; ``enqueue`` serializes it)."""
    done = dict.fromkeys(VARIANTS, 0)
    seconds = PRODUCER_SECONDS / PRODUCER_ROUNDS

    async def client(engine: AsyncEngine, how: str, c: int, events: list[Any]) -> int:
        n = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            write = insert(courses).values(code=f"CS{c}-{n}", credits=3)
            if n < len(events):
                e = events[n]
            else:  # ran out of prebuilt ones: build it here
                e = prebuilt_statement(event(n)) if how == "statement" else event(n)
            await transaction(engine, how, write, e)
            n += 1
        return n

    for _ in range(PRODUCER_ROUNDS):
        for name, (mode, how) in VARIANTS.items():
            per_client = 0 if how in ("none", "select_1") else int(seconds * 1500)
            events: list[list[Any]] = [[event(i) for i in range(per_client)] for _ in range(4)]
            set_capture(mode)
            try:
                if how == "statement":
                    events = [[prebuilt_statement(e) for e in some] for some in events]
                counts = await asyncio.gather(
                    *(client(engines[mode], how, c, events[c]) for c in range(4))
                )
            finally:
                set_capture(None)
            done[name] += sum(counts)
    return {name: n / PRODUCER_SECONDS for name, n in done.items()}


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


def _target(value: float | None, limit: float, at_least: bool) -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {"value": value, "target": f"{'>=' if at_least else '<='} {limit}", "met": met}


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's targets for WAL capture, from this run's figures (None where not measured):
    ``wal_*`` for the default read (functions), ``wal_stream_*`` for the streaming protocol
    (whose producers are the same: the enqueue target is ``wal_``'s only)."""
    modes = results.get("modes", {})
    extra = results.get("extra_statement_cost")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    found: dict[str, Any] = {}
    for key in ("wal", "wal_stream"):
        wal = modes.get(key, {})
        by_backlog = wal.get("drain_events_per_s_by_backlog", {})
        small, large = (by_backlog.get(str(n)) for n in (BACKLOGS[0], BACKLOGS[-1]))
        drain = ratio(wal.get("drain_events_per_s"), results.get("ceiling_events_per_s"))
        found |= {
            f"{key}_drain_over_ceiling": _target(drain, 0.8, True),
            f"{key}_relay_cpu_ms_per_event": _target(
                wal.get("relay_cpu_ms_per_event"), 0.05, False
            ),
            f"{key}_drain_{BACKLOGS[-1]}_over_{BACKLOGS[0]}": _target(
                ratio(large, small), 0.9, True
            ),
            f"{key}_p99_ms_at_5000": _target(
                wal.get("latency_ms", {}).get("5000", {}).get("p99"), 15.0, False
            ),
        }
    found["wal_enqueue_cost_over_extra_statement_cost"] = _target(
        ratio(modes.get("wal", {}).get("enqueue_cost"), extra), 1.25, False
    )
    return found


def report(results: dict[str, Any]) -> None:
    """The run's figures, both modes side by side, and the targets."""
    modes = results.get("modes", {})

    def row(name: str, figure: Any) -> None:
        cells = []
        for mode in ("table", "wal", "wal_stream"):
            try:
                cells.append(str(figure(modes[mode])))
            except (KeyError, TypeError):
                cells.append("n/a")
        print(f"{name:38} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18}")

    print(f"\nceiling (raw publish_async)            {results.get('ceiling_events_per_s')} ev/s")
    print(f"producer tx/s: insert only / + SELECT 1  {results.get('producer_tps_without_outbox')}"
          f" / {results.get('producer_tps_with_extra_statement')}"
          f" (extra_statement_cost {results.get('extra_statement_cost')})")  # fmt: skip
    print(f"drain by relays (table, 1/2/3)         {results.get('drain_events_per_s_by_relays')}")
    print(f"\n{'':38} {'table':>18} {'wal':>18} {'wal (stream)':>18}")
    row("drain ev/s", lambda m: m["drain_events_per_s"])
    for n in BACKLOGS:
        row(f"drain ev/s, backlog {n}", lambda m, n=n: m["drain_events_per_s_by_backlog"][str(n)])
    row("relay CPU ms/event", lambda m: m["relay_cpu_ms_per_event"])
    for rate in ("1000", "5000"):
        row(f"commit -> stored @{rate}/s p50/p99 ms",
            lambda m, r=rate: "{p50} / {p99}".format(**m["latency_ms"][r]))  # fmt: skip
    row("producer tx/s with enqueue", lambda m: m["producer_tps_with_outbox"])
    row("enqueue_cost", lambda m: m["enqueue_cost"])
    row("with_events_cost (one statement)", lambda m: m["with_events_cost"])
    row("statement_cost (enqueue's, prebuilt)", lambda m: m["statement_cost"])
    row("producer tx/s, enqueue on a session", lambda m: m["producer_tps_with_outbox_session"])
    print()
    for name, target in results["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        print(f"target {name:44} {target['value']!s:>10} {target['target']:>8}  {verdict}")


async def main() -> int:
    base = server_dir("vertector-bench-")
    pg = EmbeddedPostgres(base / "pg", fsync=True)
    ns = EmbeddedNats(base / "nats")
    pg.start()
    ns.start()
    results: dict[str, Any] = {}
    if set(SECTIONS) != set(ALL_SECTIONS) or set(MODES) != set(ALL_MODES):
        results = json.loads((RESULTS / "latest.json").read_text())
    modes = results.setdefault("modes", {})
    for key, _, _ in RELAY_RUNS:
        modes.setdefault(key, {})
    try:
        url = pg.url()
        urls: dict[Mode, str] = {"table": url, "wal": pg.url(WAL_DB)}
        admin = await asyncpg.connect(url)
        await admin.execute(f"CREATE DATABASE {WAL_DB}")
        await admin.close()
        engines: dict[Mode, AsyncEngine] = {}
        for mode in ALL_MODES:
            await asyncio.to_thread(schema.upgrade, urls[mode])
            engines[mode] = create_async_engine(asyncpg_sqlalchemy_url(urls[mode]), pool_size=8)
            async with engines[mode].begin() as conn:
                await conn.run_sync(domain.create_all)
        engine = engines["table"]
        print(
            f"bench: modes {','.join(MODES)}, backlogs {BACKLOGS}, steady {STEADY_SECONDS:.0f} s per rate, producer {PRODUCER_SECONDS:.0f} s",
            flush=True,
        )
        if "ceiling" in SECTIONS:
            results["ceiling_events_per_s"] = round(
                await ceiling(ns.url, min(BACKLOGS[0], 100_000))
            )
            print(f"  (a) ceiling: {results['ceiling_events_per_s']} events/s", flush=True)
        if "consumer" in SECTIONS:
            results["consumer"] = await consumer_section(pg.url(), url, ns.url, engine, event, KEYS)
        for n in BACKLOGS if "drain" in SECTIONS else ():
            for run, mode, read in RELAY_RUNS:
                d = await drain(urls[mode], ns.url, engines[mode], n, mode, read=read)
                figures = modes[run]
                for key, value in (
                    ("drain_events_per_s_by_backlog", d["events_per_s"]),
                    ("relay_cpu_ms_per_event_by_backlog", d["cpu_ms_per_event"]),
                    ("fill_events_per_s_by_backlog", d["fill_events_per_s"]),
                ):
                    figures.setdefault(key, {})[str(n)] = (
                        round(value, 4) if "cpu" in key else round(value)
                    )
                if n == BACKLOGS[0]:
                    figures["drain_events_per_s"] = round(d["events_per_s"])
                    figures["drain_wall_events_per_s"] = round(d["wall_events_per_s"])
                    figures["relay_cpu_ms_per_event"] = round(d["cpu_ms_per_event"], 4)
                print(f"  (b) drain {run}, backlog {n}: {round(d['events_per_s'])} events/s, "
                      f"{d['cpu_ms_per_event']:.4f} ms CPU/event, filled at "
                      f"{round(d['fill_events_per_s'])} events/s", flush=True)  # fmt: skip
        # The first backlog for 1, 2 and 3 relays (table mode: WAL capture has one reader).
        if "drain" in SECTIONS and "table" in MODES:
            by_relays = results.setdefault("drain_events_per_s_by_relays", {})
            by_relays["1"] = modes["table"]["drain_events_per_s"]
            for relays in (2, 3):
                multi = await drain(url, ns.url, engine, BACKLOGS[0], "table", relays=relays)
                by_relays[str(relays)] = round(multi["events_per_s"])
                print(
                    f"  (b) drain, {relays} relays: {by_relays[str(relays)]} events/s", flush=True
                )
        for rate in (1000, 5000) if "latency" in SECTIONS else ():
            for key, mode, read in RELAY_RUNS:
                lat = await steady(urls[mode], ns.url, engines[mode], rate, mode, read)
                modes[key].setdefault("latency_ms", {})[str(rate)] = lat
                print(f"  (c) {key} {rate}/s: {lat}", flush=True)
        if "producer" in SECTIONS:
            tps = await producer_tps(engines)
            none = results["producer_tps_without_outbox"] = round(tps["none"])
            results["producer_tps_with_extra_statement"] = round(tps["extra_statement"])
            results["extra_statement_cost"] = round(1 - tps["extra_statement"] / tps["none"], 3)
            for mode in MODES:
                figures = modes[mode]
                figures["producer_tps_with_outbox"] = round(tps[f"{mode}:enqueue"])
                figures["producer_tps_with_events_one_statement"] = round(
                    tps[f"{mode}:with_events"]
                )
                figures["producer_tps_with_outbox_session"] = round(tps[f"{mode}:session"])
                figures["enqueue_cost"] = round(1 - tps[f"{mode}:enqueue"] / tps["none"], 3)
                figures["with_events_cost"] = round(1 - tps[f"{mode}:with_events"] / tps["none"], 3)
                figures["statement_cost"] = round(1 - tps[f"{mode}:statement"] / tps["none"], 3)
            print(f"  (d) producer tx/s: {({k: round(v) for k, v in tps.items()})} (none {none})",
                  flush=True)  # fmt: skip
            if "table" in MODES:
                results["many_per_tx_events_per_s"] = await many_per_transaction(engine)
                print(
                    f"  (e) many per transaction: {results['many_per_tx_events_per_s']}", flush=True
                )
        for engine in engines.values():
            await engine.dispose()
    finally:
        ns.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    for figures in modes.values():
        if "drain_events_per_s" in figures and "ceiling_events_per_s" in results:
            figures["drain_over_ceiling"] = round(
                figures["drain_events_per_s"] / results["ceiling_events_per_s"], 3
            )
    for key in LEGACY_KEYS:
        results.pop(key, None)
    results["targets"] = targets(results)
    results["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

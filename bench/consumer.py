"""`make bench`, consumer section: the notes service (``EventConsumer`` + ``Inbox``, a one-row
domain effect per event) as its own process, measured end to end.

  throughput  the relay drains a backlog into the stream (its drain rate is reported beside),
              then one consumer process applies it: events/s and CPU seconds per event;
  e2e         producer, relay and consumer together at 1,000 and 5,000 events/s: commit of the
              producing transaction -> the consumer's transaction with the effect committed.

``python -m bench.consumer OUT`` is the consumer process itself: it runs until SIGTERM, then
writes ``{event_id: [stored_at, committed_at]}`` to OUT.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.js.errors
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.load import count, produce_paced
from devtools.processes import ModuleProcess, RelayProcess
from examples import notes_consumer
from examples.notes_service import NotesService, create_schema, notebooks
from outbox_client import NATSConfig, enqueue_many
from outbox_client.streams import DEFAULT_STREAMS
from relay import schema
from relay.natsstreams import apply_streams

NOTES_DB = "bench_notes"


class ConsumerProcess(ModuleProcess):
    """``python -m bench.consumer OUT`` against the notes database."""

    def __init__(self, notes_url: str, nats_url: str, out: Path) -> None:
        env = {"OUTBOX_DATABASE_URL": notes_url, "NATS_SERVERS": nats_url}
        super().__init__("bench.consumer", str(out), env=env)
        self.out = out
        self.start()

    def timings(self) -> dict[str, list[float]]:
        self.terminate()
        if not self.out.exists():
            raise RuntimeError(f"the consumer wrote no timings:\n{self.output()[-3000:]}")
        data: dict[str, list[float]] = json.loads(self.out.read_text())
        return data


async def _applied(notes_url: str) -> int:
    return await count(notes_url, "SELECT count(*) FROM outbox_inbox")


async def _notes_database(admin_url: str, notes_url: str, keys: int) -> None:
    """A fresh notes database with a notebook per course, so every event updates one row."""
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"DROP DATABASE IF EXISTS {NOTES_DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {NOTES_DB}")
    await admin.close()
    await asyncio.to_thread(schema.upgrade, notes_url)
    engine = notes_consumer.notes_engine(notes_url)
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(
            notebooks.insert(), [{"course_code": f"CS{k}", "title": f"CS{k}"} for k in range(keys)]
        )
    await engine.dispose()


async def _reset_streams(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(str(info.config.name))
    await apply_streams(js, DEFAULT_STREAMS)  # the product's streams, work queue included
    await nc.close()


async def _until(predicate: Any, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: {what} not reached within {timeout} s")
        await asyncio.sleep(0.05)


async def _stream_rate(nats_url: str, n: int) -> float:
    """Events/s between the first and last message the relay stored."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    state = (await js.stream_info("ACADEMIC_EVENTS")).state
    first = await js.get_msg("ACADEMIC_EVENTS", state.first_seq)
    last = await js.get_msg("ACADEMIC_EVENTS", state.last_seq)
    await nc.close()
    assert state.messages == n, f"stream holds {state.messages} of {n}"
    assert first.time is not None and last.time is not None
    return n / (last.time - first.time).total_seconds()


async def throughput(
    admin_url: str, db_url: str, nats_url: str, engine: AsyncEngine, events: Any, n: int, keys: int
) -> dict[str, float]:
    """One consumer process drains a backlog of ``n`` events already in the stream."""
    notes_url = _database(admin_url, NOTES_DB)
    await _notes_database(admin_url, notes_url, keys)
    await _reset_streams(nats_url)
    for start in range(0, n, 5000):
        async with engine.begin() as conn:
            await enqueue_many(conn, [events(i) for i in range(start, min(n, start + 5000))])
    relay = RelayProcess(db_url, nats_url, "bench-consumer-drain").start()
    try:
        await _until(lambda: _stream_count(nats_url, n), "the relay's drain")
    finally:
        relay.stop()
    drain = await _stream_rate(nats_url, n)
    out = Path(f"/tmp/bench-consumer-{os.getpid()}.json")
    proc = ConsumerProcess(notes_url, nats_url, out)
    try:
        await _until(lambda: _some_applied(notes_url), "the consumer's first commit", 60)
        cpu0, applied0, t0 = proc.cpu_seconds(), await _applied(notes_url), time.monotonic()
        await _until(lambda: _all_applied(notes_url, n), "the consumer's drain")
        cpu1, wall = proc.cpu_seconds(), time.monotonic() - t0
    finally:
        proc.terminate()
    return {
        "consumer_events_per_s": round((n - applied0) / wall),
        "relay_drain_events_per_s": round(drain),
        "consumer_cpu_seconds_per_event": round((cpu1 - cpu0) / (n - applied0), 6),
        "events": n,
    }


async def _stream_count(nats_url: str, n: int) -> bool:
    nc = await nats.connect(nats_url)
    try:
        return bool((await nc.jetstream().stream_info("ACADEMIC_EVENTS")).state.messages >= n)
    finally:
        await nc.close()


async def _pulling(nats_url: str) -> bool:
    """Whether the notes service has a pull request waiting (started, nothing in hand)."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info("ACADEMIC_EVENTS", "notes-service-consumer")
        return bool(info.num_waiting)
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await nc.close()


async def _some_applied(notes_url: str) -> bool:
    return await _applied(notes_url) > 0


async def _all_applied(notes_url: str, n: int) -> bool:
    return await _applied(notes_url) >= n


def _database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def end_to_end(
    admin_url: str,
    db_url: str,
    nats_url: str,
    engine: AsyncEngine,
    events: Any,
    rate: int,
    seconds: float,
    keys: int,
) -> dict[str, float]:
    """Producer at ``rate`` events/s, relay and consumer running: commit -> effect committed."""
    notes_url = _database(admin_url, NOTES_DB)
    await _notes_database(admin_url, notes_url, keys)
    await _reset_streams(nats_url)
    out = Path(f"/tmp/bench-e2e-{os.getpid()}-{rate}.json")
    relay = RelayProcess(db_url, nats_url, "bench-e2e").start()
    proc = ConsumerProcess(notes_url, nats_url, out)
    committed: dict[str, float] = {}
    total = int(rate * seconds)
    try:
        await asyncio.sleep(2.0)  # both connected and idle
        await _until(lambda: _pulling(nats_url), "the consumer's first pull request", 60)
        achieved = await produce_paced(
            engine, events, rate, total, committed, per_commit=max(1, rate // 100)
        )
        await _until(lambda: _all_applied(notes_url, total), "the consumer catching up", 120)
    finally:
        relay.stop()
        timings = proc.timings()
    latencies = [(timings[i][1] - t) * 1000 for i, t in committed.items()]
    published = [(timings[i][0] - t) * 1000 for i, t in committed.items()]
    return {
        "p50": _pct(latencies, 0.5),
        "p99": _pct(latencies, 0.99),
        "published_p50": _pct(published, 0.5),
        "published_p99": _pct(published, 0.99),
        "achieved_events_per_s": round(achieved),
    }


async def consumer_section(
    admin_url: str, db_url: str, nats_url: str, engine: AsyncEngine, events: Any, keys: int
) -> dict[str, Any]:
    """Everything the consumer section writes to latest.json."""
    backlog = int(os.environ.get("BENCH_CONSUMER_BACKLOG", "50000"))
    seconds = float(os.environ.get("BENCH_STEADY_SECONDS", "10"))
    results: dict[str, Any] = await throughput(
        admin_url, db_url, nats_url, engine, events, backlog, keys
    )
    print(
        f"  (e) consumer: {results['consumer_events_per_s']} events/s "
        f"(relay drain {results['relay_drain_events_per_s']}), "
        f"{results['consumer_cpu_seconds_per_event'] * 1e6:.0f} us CPU/event",
        flush=True,
    )
    results["e2e_latency_ms"] = {}
    for rate in (1000, 5000):
        e2e = await end_to_end(admin_url, db_url, nats_url, engine, events, rate, seconds, keys)
        results["e2e_latency_ms"][str(rate)] = e2e
        print(f"  (e) commit -> consumed @{rate}/s: {e2e}", flush=True)
    return results


async def _serve(out: Path) -> int:
    engine = notes_consumer.notes_engine(os.environ["OUTBOX_DATABASE_URL"])
    notes = NotesService(engine, record=True)
    await notes_consumer.run(notes, NATSConfig())
    await engine.dispose()
    timings = json.dumps({str(k): v for k, v in notes.applied.items()})
    await asyncio.to_thread(out.write_text, timings)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_serve(Path(sys.argv[1]))))

"""`make bench-contracts`: what checking raw rows against the schema registry costs the relay.

Same run, same servers (from the wheels), alternating A/B: a backlog of BENCH_CONTRACT_EVENTS
raw rows (written as a producer in another language would: no ``Vertector-Producer`` header,
valid payloads) drained by `vertector-relay run` with RELAY_VALIDATE_RAW_ROWS off, then on,
BENCH_CONTRACT_ROUNDS times. Throughput is the stream's own clock: first to last message.
Prints the medians and the drop; a report, not a test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time

import asyncpg
import nats
from sqlalchemy.ext.asyncio import create_async_engine

from bench.run import event, reset_stream, stream_span, unsent
from devtools.processes import RelayProcess
from devtools.servers import EmbeddedNats, EmbeddedPostgres, server_dir
from outbox_client import enqueue_many
from outbox_client.dburl import asyncpg_sqlalchemy_url
from outbox_client.schemas import catalog
from outbox_client.schemas.registry import publish
from relay import schema

EVENTS = int(os.environ.get("BENCH_CONTRACT_EVENTS", "50000"))
ROUNDS = int(os.environ.get("BENCH_CONTRACT_ROUNDS", "3"))


async def raw_backlog(url: str, n: int) -> None:
    engine = create_async_engine(asyncpg_sqlalchemy_url(url), pool_size=2)
    for start in range(0, n, 5000):
        async with engine.begin() as conn:
            await enqueue_many(conn, [event(i) for i in range(start, min(n, start + 5000))])
    await engine.dispose()
    conn = await asyncpg.connect(url)
    try:  # as another language writes them: the same bytes, no outbox_client mark
        await conn.execute("UPDATE outbox_events SET headers = headers - 'Vertector-Producer'")
    finally:
        await conn.close()


async def drain(url: str, nats_url: str, validate: bool) -> float:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await reset_stream(js)
    await raw_backlog(url, EVENTS)
    env = {"RELAY_METRICS_PORT": "0", "RELAY_VALIDATE_RAW_ROWS": str(validate).lower()}
    proc = RelayProcess(url, nats_url, "bench-contracts", **env).start()
    try:
        while await unsent(url) > 0:
            await asyncio.sleep(0.2)
    finally:
        proc.stop()
    _, seconds = await stream_span(js, EVENTS)
    await nc.close()
    conn = await asyncpg.connect(url)
    try:
        quarantined = await conn.fetchval(
            "SELECT count(*) FROM outbox_events WHERE quarantined_at IS NOT NULL"
        )
        await conn.execute("DELETE FROM outbox_events")
    finally:
        await conn.close()
    assert quarantined == 0, f"{quarantined} valid raw rows quarantined"
    return EVENTS / seconds


async def main() -> int:
    base = server_dir("vertector-bench-contracts-")
    pg = EmbeddedPostgres(base / "pg", fsync=True)
    ns = EmbeddedNats(base / "nats")
    pg.start()
    ns.start()
    try:
        url = pg.url()
        await asyncio.to_thread(schema.upgrade, url)
        nc = await nats.connect(ns.url)
        await publish(nc.jetstream(), catalog())
        await nc.close()
        runs: dict[bool, list[float]] = {False: [], True: []}
        print(f"bench-contracts: {EVENTS} raw rows, {ROUNDS} rounds of off/on", flush=True)
        for round_ in range(ROUNDS):
            for validate in (False, True):
                rate = await drain(url, ns.url, validate)
                runs[validate].append(rate)
                print(
                    f"  round {round_ + 1}: validation {'on ' if validate else 'off'} "
                    f"{rate:>8.0f} events/s",
                    flush=True,
                )
    finally:
        ns.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    off, on = statistics.median(runs[False]), statistics.median(runs[True])
    print(
        f"median off {off:.0f} events/s, on {on:.0f} events/s: "
        f"{(1 - on / off) * 100:+.1f} % drop (budget 5 %) at {time.strftime('%H:%M:%S')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

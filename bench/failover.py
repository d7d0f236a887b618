"""`make failover`: how long an event waits when something fails, measured end to end.

A steady 500 events/s flows (commit -> relay -> stream); at second 4 one fault strikes; the
report gives, for events committed from the fault on, the worst and p99 commit -> stored delay
(stream timestamps), next to the p50 before the fault. Scenarios:
  relay_killed      two relays, one SIGKILLed: its partitions wait for their lease to lapse
                    (RELAY_LEASE_SECONDS 10, the default, and 3);
  leader_killed     a 3-node JetStream cluster, R3 stream: the stream leader is SIGKILLed;
  leader_paused     same, the leader SIGSTOPped for 10 s (a GC pause, a frozen VM).
Writes bench/results/failover.json. A report, not a test (tests/faults checks correctness).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Coroutine
from typing import Any

import nats
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.load import produce_paced
from bench.run import RESULTS, event, pct, reset_stream, unsent
from devtools.processes import RelayProcess
from devtools.servers import EmbeddedNatsCluster, EmbeddedPostgres, server_dir
from outbox_client.dburl import asyncpg_sqlalchemy_url
from relay import schema

RATE = 500
SECONDS = 20.0
FAULT_AT = 4.0

#: A fault gets the relay processes of the scenario.
Fault = Callable[[list[RelayProcess]], Coroutine[Any, Any, None]]


async def leader(nats_url: str) -> str:
    while True:
        try:
            nc = await nats.connect(servers=nats_url.split(","), connect_timeout=2)
            try:
                info = await nc.jetstream().stream_info("ACADEMIC_EVENTS")
                if info.cluster and info.cluster.leader:
                    return info.cluster.leader
            finally:
                await nc.close()
        except (TimeoutError, OSError, nats.errors.Error):
            pass
        await asyncio.sleep(0.2)


async def scenario(
    database_url: str, cluster: EmbeddedNatsCluster, engine: AsyncEngine,
    relays: list[dict[str, str]], fault: Fault,
) -> dict[str, Any]:  # fmt: skip
    nc = await nats.connect(servers=cluster.url.split(","))
    js = nc.jetstream()
    await reset_stream(js, replicas=3)
    procs = [
        RelayProcess(database_url, cluster.url, env.get("RELAY_INSTANCE_NAME", "fo"), **env).start()
        for env in relays
    ]
    await asyncio.sleep(2.0)  # connected, partitions shared
    committed: dict[str, float] = {}
    total = int(RATE * SECONDS)
    fault_at: float | None = None

    async def fault_later() -> None:
        nonlocal fault_at
        await asyncio.sleep(FAULT_AT)
        fault_at = time.time()
        await fault(procs)

    faulting = asyncio.create_task(fault_later())
    try:
        await produce_paced(engine, event, RATE, total, committed)
        await faulting
        while await unsent(database_url) > 0:
            await asyncio.sleep(0.2)
    finally:
        for proc in procs:
            proc.stop()
    assert fault_at is not None
    sub = await js.subscribe(
        "academic.>", stream="ACADEMIC_EVENTS", ordered_consumer=True,
        pending_msgs_limit=total + 10,
    )  # fmt: skip
    before: list[float] = []
    after: list[float] = []
    seen: set[str] = set()
    while len(seen) < total:
        msg = await sub.next_msg(timeout=30)
        event_id = msg.headers["Nats-Msg-Id"] if msg.headers else ""
        if event_id in seen:
            continue
        seen.add(event_id)
        at = committed[event_id]
        delay = msg.metadata.timestamp.timestamp() - at
        (after if at >= fault_at else before).append(delay * 1000)
    await nc.close()
    return {
        "p50_before_ms": pct(before, 0.5),
        "p99_after_ms": pct(after, 0.99),
        "worst_after_ms": round(max(after), 1),
    }


async def main() -> int:
    base = server_dir("vertector-failover-")
    pg = EmbeddedPostgres(base / "pg")
    cluster = EmbeddedNatsCluster(base / "cluster")
    pg.start()
    cluster.start()
    results: dict[str, Any] = {"rate_events_per_s": RATE}
    try:
        url = pg.url()
        await asyncio.to_thread(schema.upgrade, url)
        engine = create_async_engine(asyncpg_sqlalchemy_url(url), pool_size=4)

        async def kill_one(procs: list[RelayProcess]) -> None:
            procs[0].kill()

        for lease in ("10", "3"):
            envs = [
                {"RELAY_INSTANCE_NAME": f"fo-{n}", "RELAY_LEASE_SECONDS": lease} for n in range(2)
            ]
            r = await scenario(url, cluster, engine, envs, kill_one)
            results[f"relay_killed_lease_{lease}s"] = r
            print(f"  relay SIGKILLed, lease {lease} s: {r}", flush=True)

        async def kill_leader(_: list[RelayProcess]) -> None:
            name = await leader(cluster.url)
            await asyncio.to_thread(cluster.node(name).kill)
            await asyncio.sleep(6)
            await asyncio.to_thread(cluster.node(name).start)

        r = await scenario(url, cluster, engine, [{}], kill_leader)
        results["stream_leader_killed"] = r
        print(f"  stream leader SIGKILLed: {r}", flush=True)

        async def pause_leader(_: list[RelayProcess]) -> None:
            node = cluster.node(await leader(cluster.url))
            node.pause()
            await asyncio.sleep(10)
            node.resume()

        r = await scenario(url, cluster, engine, [{}], pause_leader)
        results["stream_leader_paused_10s"] = r
        print(f"  stream leader SIGSTOPped 10 s: {r}", flush=True)
        await engine.dispose()
    finally:
        cluster.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "failover.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'failover.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

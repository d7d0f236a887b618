"""`make soak`: the fault scenarios longer and bigger, with resources watched over time.

Producers commit SOAK_EVENTS events (default 1,000,000) out of order with 20 % rollbacks while
two relays run and one of them is SIGKILLed and restarted every SOAK_KILL_EVERY seconds. Every
10 s it samples relay memory (RSS), the outbox table and index sizes and dead tuples. At the
end the checker counts lost / duplicated / phantom / out-of-order events, and the report shows
whether memory and table size stayed bounded. Writes bench/results/soak.json.

SOAK_NATS=cluster runs it on a 3-node JetStream cluster with R3 streams and, every other kill
round, also SIGKILLs the stream leader (restarted 5 s later); writes soak-cluster.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

import asyncpg

from devtools.harness import (
    FaultRelay,
    Workload,
    check,
    create_test_stream,
    stream_leader,
    wait_drained,
)
from devtools.servers import (
    EmbeddedNats,
    EmbeddedNatsCluster,
    EmbeddedPostgres,
    server_dir,
)
from relay import schema
from tests.relayrun import engine

ROOT = Path(__file__).resolve().parents[1]

EVENTS = int(os.environ.get("SOAK_EVENTS", "1000000"))
KILL_EVERY = float(os.environ.get("SOAK_KILL_EVERY", "20"))
CLUSTER = os.environ.get("SOAK_NATS", "single") == "cluster"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def sample(
    url: str, relays: list[FaultRelay], started: float, committed: int
) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT pg_total_relation_size('outbox_events') AS total,"
            " pg_indexes_size('outbox_events') AS indexes,"
            " (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'outbox_events') AS dead,"
            " (SELECT count(*) FROM outbox_events) AS rows"
        )
    finally:
        await conn.close()
    return {
        "t": round(time.monotonic() - started, 1),
        "committed": committed,
        "relay_rss_mib": round(
            max((rss_kib(r.pid) for r in relays if r.alive), default=0) / 1024, 1
        ),
        "table_mib": round(row["total"] / 2**20, 1),
        "indexes_mib": round(row["indexes"] / 2**20, 1),
        "dead_tuples": row["dead"] or 0,
        "rows": row["rows"],
    }


async def main() -> int:
    base = server_dir("vertector-soak-")
    pg = EmbeddedPostgres(base / "pg")
    ns = EmbeddedNatsCluster(base / "cluster") if CLUSTER else EmbeddedNats(base / "nats")
    pg.start()
    ns.start()
    samples: list[dict[str, float]] = []
    leader_kills = 0

    async def kill_stream_leader() -> None:
        assert isinstance(ns, EmbeddedNatsCluster)
        node = ns.node(await stream_leader(ns.url))
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(5)
        await asyncio.to_thread(node.start)

    try:
        url = pg.url()
        await asyncio.to_thread(schema.upgrade, url)
        await create_test_stream(ns.url, duplicate_window=600, replicas=3 if CLUSTER else 1)
        background: set[asyncio.Task[None]] = set()
        async with engine(url) as eng:
            workload = Workload(eng, producers=8, keys_per_producer=50, jitter=0.005)
            relays = [FaultRelay(url, ns.url, f"soak-{i}").start() for i in range(2)]
            per_producer = EVENTS // workload.producers
            producing = asyncio.create_task(workload.run(per_producer=per_producer))
            started = time.monotonic()
            last_kill = started
            victim = 0
            while not producing.done():
                await asyncio.wait([producing], timeout=10)
                samples.append(await sample(url, relays, started, len(workload.committed)))
                print(json.dumps(samples[-1]), flush=True)
                if time.monotonic() - last_kill > KILL_EVERY:
                    relays[victim].kill()
                    relays[victim].start()
                    if CLUSTER and victim == 0:
                        leader_kills += 1
                        background.add(asyncio.create_task(kill_stream_leader()))
                    victim, last_kill = 1 - victim, time.monotonic()
            producing.result()
            await asyncio.gather(*background)
            stream = await wait_drained(ns.url, workload, timeout=600)
            samples.append(await sample(url, relays, started, len(workload.committed)))
            for relay in relays:
                relay.stop()
        delivery = check(workload, stream)
    finally:
        ns.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    half = samples[len(samples) // 2 :]
    report = {
        "events_committed": len(workload.committed),
        "nats": "3-node cluster, R3 streams" if CLUSTER else "single server",
        "stream_leader_kills": leader_kills,
        "verdict": {
            "lost": delivery.lost, "stream_duplicates": delivery.stream_duplicates,
            "phantoms": delivery.phantoms, "order_violations": delivery.order_violations,
        },
        "relay_rss_mib_max": max(s["relay_rss_mib"] for s in samples),
        "relay_rss_mib_second_half_max": max(s["relay_rss_mib"] for s in half),
        "table_mib_max": max(s["table_mib"] for s in samples),
        "dead_tuples_max": max(s["dead_tuples"] for s in samples),
        "samples": samples,
    }  # fmt: skip
    out = ROOT / "bench" / "results" / ("soak-cluster.json" if CLUSTER else "soak.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    print(f"wrote {out}")
    counts = (
        delivery.lost,
        delivery.stream_duplicates,
        delivery.phantoms,
        delivery.order_violations,
    )
    clean = not any(counts)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

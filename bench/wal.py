"""`python -m bench.wal`: how fast a logical slot itself can be read, without NATS (the relay's
drain in both capture modes is `make bench`'s section (b)).

  read    BENCH_BACKLOG events (default 100,000, emitted 5,000 per transaction) read through
          the SQL slot functions (RELAY_WAL_READ=functions: peek 3,000 rows, parse, advance)
          against the streaming replication protocol (RELAY_WAL_READ=stream: the relay's
          relay/walstream.py, take 3,000 rows, parse, confirm).

Prints one line per figure and writes them to bench/results/wal.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.run import event
from devtools.servers import EmbeddedPostgres, server_dir
from outbox_client.walframe import WAL_PREFIX, encode
from relay.pgoutput import transactions
from relay.walstream import open_stream

BACKLOG = int(os.environ.get("BENCH_BACKLOG", "100000"))
PER_TX = 5000


async def read_sql(url: str, slot: str, n: int) -> float:
    conn = await asyncpg.connect(url)
    got = 0
    started = time.perf_counter()
    while got < n:
        rows = await conn.fetch(
            "SELECT (lsn - '0/0'::pg_lsn)::bigint AS lsn, data FROM "
            "pg_logical_slot_peek_binary_changes($1, NULL, 3000, 'proto_version', '1', "
            "'publication_names', 'vertector_outbox', 'messages', 'true')",
            slot,
        )
        end = 0
        for txn in transactions((r["lsn"], r["data"]) for r in rows):
            got += len(txn.messages)
            end = txn.end_lsn
        await conn.execute(
            "SELECT pg_replication_slot_advance($1, '0/0'::pg_lsn + $2::numeric)", slot, end
        )
    elapsed = time.perf_counter() - started
    await conn.close()
    return n / elapsed


async def read_streaming(url: str, slot: str, n: int) -> float:
    """The relay's own stream (RELAY_WAL_READ=stream): take, parse, confirm each batch."""
    arrived = asyncio.Event()
    stream = await open_stream(
        url, slot, "vertector_outbox", on_rows=arrived.set, timeout=30,
        application_name="bench-wal",
    )  # fmt: skip
    got = 0
    started = time.perf_counter()
    while got < n:
        arrived.clear()
        rows = stream.take(3000)
        if not rows:
            await arrived.wait()
            continue
        end = 0
        for txn in transactions(rows):
            got += len(txn.messages)
            end = txn.end_lsn
        stream.confirm(end)
    elapsed = time.perf_counter() - started
    stream.close()
    return n / elapsed


async def reads(url: str, n: int) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE PUBLICATION vertector_outbox")
    for slot in ("bench_sql", "bench_stream"):
        await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
    frames = [encode(e.event_id, e.event_type, e.subject, e.partition_key, e.to_bytes(),
                     e.nats_headers()) for e in (event(i) for i in range(PER_TX))]  # fmt: skip
    for _ in range(0, n, PER_TX):
        await conn.execute(
            "SELECT count(pg_logical_emit_message(true, $1, f)) FROM unnest($2::bytea[]) f",
            WAL_PREFIX, frames,
        )  # fmt: skip
    await conn.close()
    sql = await read_sql(url, "bench_sql", n)
    streaming = await read_streaming(url, "bench_stream", n)
    return {"sql_functions": sql, "streaming_protocol": streaming}


async def main() -> int:
    base = server_dir("vertector-bench-wal-")
    pg = EmbeddedPostgres(base / "pg")
    pg.start()
    results: dict[str, Any] = {"backlog": BACKLOG}
    try:
        admin = await asyncpg.connect(pg.url())
        await admin.execute("CREATE DATABASE bench_read")
        await admin.close()
        read = await reads(pg.url("bench_read"), BACKLOG)
        for how, per_s in read.items():
            results[f"read_events_per_s_{how}"] = round(per_s)
            print(f"read slot, {how:18} {per_s:9.0f} events/s", flush=True)
    finally:
        pg.stop()
    out = Path(__file__).parent / "results" / "wal.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

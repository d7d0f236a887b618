"""`python -m bench.wal`: how fast a logical slot itself can be read, without NATS (the relay's
drain in both capture modes is `make bench`'s section (b)).

  read    BENCH_BACKLOG events (default 100,000, emitted 5,000 per transaction) read through
          the SQL slot functions the relay uses (peek 3,000 rows, parse, advance) against the
          streaming replication protocol (psycopg2's LogicalReplicationConnection, when
          psycopg2 is importable).

Prints one line per figure and writes them to bench/results/wal.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
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


class _Done(Exception):
    pass


def read_streaming(dsn: str, slot: str, n: int) -> float | None:
    try:  # not a dependency: install psycopg2-binary to measure the streaming protocol
        psycopg2 = importlib.import_module("psycopg2")
        extras = importlib.import_module("psycopg2.extras")
    except ImportError:
        return None
    conn = psycopg2.connect(dsn, connection_factory=extras.LogicalReplicationConnection)
    cur = conn.cursor()
    cur.start_replication(
        slot_name=slot, decode=False,
        options={"proto_version": "1", "publication_names": "vertector_outbox", "messages": "true"},
    )  # fmt: skip
    got = 0
    started = time.perf_counter()

    def consume(msg: Any) -> None:
        nonlocal got
        if msg.payload[:1] == b"M":
            got += 1
        if msg.payload[:1] == b"C":
            msg.cursor.send_feedback(flush_lsn=msg.data_start)
        if got >= n:
            raise _Done

    with contextlib.suppress(_Done):
        cur.consume_stream(consume)
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


async def reads(url: str, n: int) -> dict[str, float | None]:
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
    streaming = await asyncio.to_thread(read_streaming, url, "bench_stream", n)
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
            results[f"read_events_per_s_{how}"] = None if per_s is None else round(per_s)
            shown = "n/a (psycopg2 not importable)" if per_s is None else f"{per_s:9.0f} events/s"
            print(f"read slot, {how:18} {shown}", flush=True)
    finally:
        pg.stop()
    out = Path(__file__).parent / "results" / "wal.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

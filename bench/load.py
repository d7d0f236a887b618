"""Pieces the benchmarks share: a paced producer and a one-number query."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox_client import BaseEvent, enqueue_many


async def count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def produce_paced(
    engine: AsyncEngine,
    event: Callable[[int], BaseEvent],
    rate: float,
    total: int,
    committed: dict[str, float],
    *,
    per_commit: int = 5,
    start: int = 0,
) -> float:
    """Commit events ``start .. total`` at ``rate`` events/s, ``per_commit`` per transaction;
    record each one's commit time in ``committed``; return the rate achieved."""
    i, started = start, time.perf_counter()
    while i < total:
        batch = [event(j) for j in range(i, min(total, i + per_commit))]
        async with engine.begin() as conn:
            await enqueue_many(conn, batch)
        now = time.time()
        committed.update((str(e.event_id), now) for e in batch)
        i += len(batch)
        ahead = started + (i - start) / rate - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
    return (total - start) / (time.perf_counter() - started)

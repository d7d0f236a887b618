"""Rows as a raw producer writes them (any subject, any JSON for headers, any bytes), and what
the suite reads back: quarantine reasons, stream contents."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from outbox_client import CourseUpdatedEvent
from tests.harness import asyncpg_url


@dataclass(frozen=True)
class RawRow:
    """One INSERT an insert-only producer role may make; ``headers`` is JSON text."""

    subject: str
    headers: str = "{}"
    payload: bytes = b"{}"
    key: str = "hostile"
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


def good(code: str) -> CourseUpdatedEvent:
    return CourseUpdatedEvent(course_code=code, credits=1)


async def insert_raw(database_url: str, rows: Sequence[RawRow]) -> list[int]:
    """Insert ``rows`` in one transaction, bypassing ``enqueue``; their ids, in order."""
    sql = (
        "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload, headers)"
        " VALUES ($1, 'hostile', $2, $3, $4, $5::jsonb) RETURNING id"
    )
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        async with conn.transaction():
            return [
                await conn.fetchval(sql, r.event_id, r.subject, r.key, r.payload, r.headers)
                for r in rows
            ]
    finally:
        await conn.close()


async def quarantined(database_url: str) -> dict[int, str]:
    """Row id -> quarantine reason."""
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        records = await conn.fetch(
            "SELECT id, last_error FROM outbox_events WHERE quarantined_at IS NOT NULL"
        )
    finally:
        await conn.close()
    return {r["id"]: r["last_error"] for r in records}


async def wait_quarantined(
    database_url: str, ids: Sequence[int], timeout: float = 30
) -> dict[int, str]:
    """Wait until every row of ``ids`` is quarantined (or the deadline); their reasons."""
    deadline = time.monotonic() + timeout
    while True:
        found = await quarantined(database_url)
        if set(ids) <= set(found) or time.monotonic() > deadline:
            return {i: found[i] for i in ids if i in found}
        await asyncio.sleep(0.1)


def headers_json(headers: object) -> str:
    return json.dumps(headers)

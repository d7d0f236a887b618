"""Operator commands over the outbox table: quarantined events and replays. Each is one
statement, safe to run while relays are running."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from relay.errors import StoreError
from relay.pgstore import DRIVER_ERRORS
from relay.queries import query


async def _run(dsn: str, method: str, name: str, *args: Any) -> Any:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except DRIVER_ERRORS as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        return await getattr(conn, method)(query(name), *args)
    except DRIVER_ERRORS as exc:
        raise StoreError(f"{name} failed: {exc}") from exc
    finally:
        await conn.close()


def _count(status: str) -> int:
    return int(status.split()[-1])


async def list_quarantined(
    dsn: str, *, event_type: str | None = None, reason: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    rows = await _run(dsn, "fetch", "quarantined_list", event_type, reason, limit)
    return [dict(r) for r in rows]


async def show_quarantined(dsn: str, event_id: uuid.UUID) -> dict[str, Any] | None:
    row = await _run(dsn, "fetchrow", "quarantined_show", event_id)
    return dict(row) if row is not None else None


async def requeue(
    dsn: str, *, event_ids: Sequence[uuid.UUID] | None = None, event_type: str | None = None
) -> int:
    if not event_ids and not event_type:
        raise StoreError(
            "name the events to requeue: --event-id ... or --event-type ... (or --all)"
        )
    return _count(
        await _run(dsn, "execute", "requeue", list(event_ids) if event_ids else None, event_type)
    )


async def requeue_all(dsn: str) -> int:
    return _count(await _run(dsn, "execute", "requeue", None, None))


async def purge_quarantined(
    dsn: str, *, event_ids: Sequence[uuid.UUID] | None = None, event_type: str | None = None
) -> int:
    if not event_ids and not event_type:
        raise StoreError("name the events to delete: --event-id ... or --event-type ...")
    ids = list(event_ids) if event_ids else None
    return _count(await _run(dsn, "execute", "purge_quarantined", ids, event_type))


async def replay(
    dsn: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    from_id: int | None = None,
    to_id: int | None = None,
    event_type: str | None = None,
) -> int:
    """Mark retained, sent events unsent so that the relay publishes them again."""
    if since is None and until is None and from_id is None and to_id is None:
        raise StoreError("give a range: --since/--until (times) or --from-id/--to-id")
    status = await _run(dsn, "execute", "replay_sent", since, until, from_id, to_id, event_type)
    return _count(status)

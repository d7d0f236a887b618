"""Operator commands over the outbox table: quarantined events and replays. Each is one
statement, safe to run while relays are running."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from outbox_client.walframe import WAL_PREFIX
from relay.errors import StoreError, cause
from relay.pgstore import DRIVER_ERRORS
from relay.queries import query

#: Seconds to connect, and an operator statement may take, before the command gives up.
ADMIN_CONNECT_TIMEOUT = 10.0
ADMIN_STATEMENT_TIMEOUT = 120.0


async def _run(dsn: str, method: str, name: str, *args: Any) -> Any:
    try:
        # Bounded both ways: a server that does not answer ends the command with the cause.
        conn = await asyncpg.connect(
            dsn, timeout=ADMIN_CONNECT_TIMEOUT, command_timeout=ADMIN_STATEMENT_TIMEOUT
        )
    except DRIVER_ERRORS as exc:
        waited = ADMIN_CONNECT_TIMEOUT
        raise StoreError(f"cannot connect to PostgreSQL: {cause(exc, waited)}") from exc
    try:
        return await getattr(conn, method)(query(name), *args)
    except DRIVER_ERRORS as exc:
        raise StoreError(f"{name} failed: {cause(exc, ADMIN_STATEMENT_TIMEOUT)}") from exc
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
    dsn: str,
    *,
    event_ids: Sequence[uuid.UUID] | None = None,
    event_type: str | None = None,
    wal: bool = False,
) -> int:
    """Give quarantined events back: unsent rows again, or with ``wal`` (WAL capture) event
    messages in the WAL, which the relay reads like new events."""
    if not event_ids and not event_type:
        raise StoreError(
            "name the events to requeue: --event-id ... or --event-type ... (or --all)"
        )
    return await _requeue(dsn, list(event_ids) if event_ids else None, event_type, wal)


async def requeue_all(dsn: str, *, wal: bool = False) -> int:
    return await _requeue(dsn, None, None, wal)


async def _requeue(dsn: str, ids: list[uuid.UUID] | None, event_type: str | None, wal: bool) -> int:
    if wal:
        return int(await _run(dsn, "fetchval", "requeue_wal", ids, event_type, WAL_PREFIX))
    return _count(await _run(dsn, "execute", "requeue", ids, event_type))


async def purge_quarantined(
    dsn: str, *, event_ids: Sequence[uuid.UUID] | None = None, event_type: str | None = None
) -> int:
    if not event_ids and not event_type:
        raise StoreError("name the events to delete: --event-id ... or --event-type ...")
    ids = list(event_ids) if event_ids else None
    return _count(await _run(dsn, "execute", "purge_quarantined", ids, event_type))


@dataclass(frozen=True)
class ReplaySelection:
    """Which retained, sent events to replay: a time range, an id range, an event type."""

    since: datetime | None = None
    until: datetime | None = None
    from_id: int | None = None
    to_id: int | None = None
    event_type: str | None = None

    def __post_init__(self) -> None:
        if (
            self.since is None
            and self.until is None
            and self.from_id is None
            and self.to_id is None
        ):
            raise StoreError("give a range: --since/--until (times) or --from-id/--to-id")

    def args(self) -> tuple[Any, ...]:
        return (self.since, self.until, self.from_id, self.to_id, self.event_type)


@dataclass(frozen=True)
class ReplayPlan:
    """Per stream: events a replay would take, and how many of those were published inside the
    stream's duplicate window (JetStream drops a re-publish with the same Nats-Msg-Id there)."""

    events: dict[str, int]
    inside_window: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.events.values())

    @property
    def duplicates(self) -> int:
        return sum(self.inside_window.values())


async def plan_replay(
    dsn: str, selection: ReplaySelection, windows: dict[str, float], default_window: float
) -> ReplayPlan:
    """What :func:`replay` would do, changing nothing. ``windows``: each stream's
    ``duplicate_window`` in seconds (``default_window`` for a stream not in it)."""
    rows = await _run(
        dsn, "fetch", "replay_preview", *selection.args(),
        list(windows), list(windows.values()), default_window,
    )  # fmt: skip
    return ReplayPlan(
        events={r["stream"] or "?": r["events"] for r in rows},
        inside_window={r["stream"] or "?": r["recent"] for r in rows if r["recent"]},
    )


async def replay(
    dsn: str,
    selection: ReplaySelection,
    *,
    fresh_ids: str | None = None,
    batch_size: int = 10_000,
    progress: Callable[[int], None] = lambda done: None,
) -> int:
    """Mark retained, sent events unsent, ``batch_size`` at a time in id order, so that the
    relay publishes them again; ``progress(done)`` after each batch. With ``fresh_ids`` (a
    label unique to this replay) they are sent with ``Nats-Msg-Id = <event_id>:<fresh_ids>``,
    which JetStream stores even inside its duplicate window."""
    done, after = 0, 0
    while True:
        ids = await _run(
            dsn, "fetch", "replay_batch", *selection.args(), after, batch_size, fresh_ids
        )
        if not ids:
            return done
        done += len(ids)
        after = max(r["id"] for r in ids)
        progress(done)

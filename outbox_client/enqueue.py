"""``enqueue``: add events to the outbox inside the caller's transaction.

The rows are inserted on the caller's connection and commit or roll back with the caller's
transaction. Nothing here commits, flushes ORM state or opens a transaction of its own.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, overload

from sqlalchemy import Connection, Delete, Insert, Update, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox_client.errors import EnqueueError
from outbox_client.events.base import BaseEvent
from outbox_client.headers import Header, check_header_value
from outbox_client.table import outbox
from outbox_client.tracing import current_trace_context

_INSERT = insert(outbox)
_COLUMNS = ("event_id", "event_type", "subject", "partition_key", "payload", "headers")
_ASYNCPG_INSERT = (
    f"INSERT INTO {outbox.name} ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS)))}, ${len(_COLUMNS)}::jsonb)"
)

SyncTarget = Session | Connection
AsyncTarget = AsyncSession | AsyncConnection


def _row(event: object, partition_key: str | None) -> dict[str, Any]:
    if not isinstance(event, BaseEvent):
        raise EnqueueError(
            f"enqueue() takes a BaseEvent subclass instance, got {type(event).__name__}: "
            "build one of the outbox_client event classes, e.g. CourseCreatedEvent(...)"
        )
    trace = current_trace_context()
    if trace and event.metadata.traceparent is None:
        event = event.model_copy(update={"metadata": event.metadata.model_copy(update=trace)})
    key = partition_key if partition_key is not None else event.partition_key
    headers = event.nats_headers()
    headers[Header.PARTITION_KEY.value] = check_header_value("partition_key", key)
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "subject": event.subject,
        "partition_key": key,
        "payload": event.to_bytes(),
        "headers": headers,
    }


def _rows(events: Iterable[object], partition_key: str | None) -> list[dict[str, Any]]:
    if isinstance(events, BaseEvent | str | bytes) or not isinstance(events, Iterable):
        raise EnqueueError("enqueue_many() takes an iterable of events; use enqueue() for one")
    return [_row(event, partition_key) for event in events]


def _bad_target(target: object) -> EnqueueError:
    return EnqueueError(
        "enqueue() needs the Session, AsyncSession, Connection or AsyncConnection whose "
        f"transaction the event must join, got {type(target).__name__}"
    )


def with_events(
    statement: Insert | Update | Delete, *events: BaseEvent, partition_key: str | None = None
) -> Insert:
    """``statement`` and the outbox insert of ``events`` as ONE SQL statement.

    The domain write becomes a data-modifying CTE of the outbox INSERT, so the pair costs one
    round trip instead of two: worth it when the database is across a network. On loopback
    it saves no CPU (building the combined statement costs about what the round trip did;
    ``make bench`` (d) measures both). Both writes commit or roll back with the caller's
    transaction, exactly as with ``enqueue``. The domain statement's RETURNING rows are not
    returned; use ``enqueue`` when you need them.

    >>> await session.execute(with_events(  # doctest: +SKIP
    ...     insert(courses).values(code="CS101", name="Intro"),
    ...     CourseCreatedEvent(course_code="CS101", ...)))
    """
    if not isinstance(statement, Insert | Update | Delete):
        raise EnqueueError(
            "with_events() takes a Core insert(), update() or delete() statement, got "
            f"{type(statement).__name__}: use enqueue() next to other statements"
        )
    if not events:
        raise EnqueueError("with_events() needs at least one event")
    rows = _rows(events, partition_key)
    # One row as keywords: a list would make a multi-VALUES statement that misses the
    # compiled-statement cache and costs more than the round trip it saves.
    values = insert(outbox).values(**rows[0]) if len(rows) == 1 else insert(outbox).values(rows)
    return values.add_cte(statement.cte("outbox_domain_write"))


@overload
def enqueue_many(
    session: SyncTarget, events: Iterable[BaseEvent], *, partition_key: str | None = None
) -> None: ...
@overload
def enqueue_many(
    session: AsyncTarget, events: Iterable[BaseEvent], *, partition_key: str | None = None
) -> Coroutine[Any, Any, None]: ...
def enqueue_many(
    session: SyncTarget | AsyncTarget,
    events: Iterable[BaseEvent],
    *,
    partition_key: str | None = None,
) -> Coroutine[Any, Any, None] | None:
    """Add several events in one INSERT; with an async session, await the result.

    >>> with Session(engine) as session, session.begin():  # doctest: +SKIP
    ...     session.add(Course(code="CS101"))
    ...     enqueue_many(session, [created, schedule_created])
    """
    rows = _rows(events, partition_key)
    if isinstance(session, AsyncSession | AsyncConnection):
        return _insert_async(session, rows)
    if isinstance(session, Session):
        # Session.connection() joins the session's transaction without autoflushing ORM state.
        _insert(session.connection(), rows)
        return None
    if isinstance(session, Connection):
        _insert(session, rows)
        return None
    raise _bad_target(session)


@overload
def enqueue(session: SyncTarget, event: BaseEvent, *, partition_key: str | None = None) -> None: ...
@overload
def enqueue(
    session: AsyncTarget, event: BaseEvent, *, partition_key: str | None = None
) -> Coroutine[Any, Any, None]: ...
def enqueue(
    session: SyncTarget | AsyncTarget, event: BaseEvent, *, partition_key: str | None = None
) -> Coroutine[Any, Any, None] | None:
    """Add one event to the outbox in ``session``'s transaction.

    ``partition_key`` overrides the event's own (its aggregate id): events sharing a key are
    published in commit order.

    >>> with Session(engine) as session, session.begin():  # doctest: +SKIP
    ...     session.add(Course(code="CS101", name="Intro"))
    ...     enqueue(session, CourseCreatedEvent(course_code="CS101", ...))
    >>> async with async_session.begin():  # doctest: +SKIP
    ...     await enqueue(async_session, event)
    """
    if isinstance(event, Sequence | set) and not isinstance(event, str | bytes):
        raise EnqueueError("enqueue() takes one event; use enqueue_many() for several")
    return enqueue_many(session, [event], partition_key=partition_key)


def _insert(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(_INSERT, rows)


async def _insert_async(target: AsyncSession | AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    connection = await target.connection() if isinstance(target, AsyncSession) else target
    driver = await _asyncpg_in_transaction(connection)
    if driver is None:
        await connection.execute(_INSERT, rows)
        return
    # The hot path: straight to asyncpg, 3x less CPU than a Core insert (bench/run.py (d)).
    args = [(*(row[c] for c in _COLUMNS[:-1]), json.dumps(row["headers"])) for row in rows]
    if len(args) == 1:
        await driver.execute(_ASYNCPG_INSERT, *args[0])
    else:
        await driver.executemany(_ASYNCPG_INSERT, args)


async def _asyncpg_in_transaction(connection: AsyncConnection) -> Any:
    """The asyncpg connection under ``connection`` when it is inside a transaction already.

    Only then may the insert bypass SQLAlchemy: if the event were the transaction's first
    statement, SQLAlchemy has not sent BEGIN yet and the insert would commit on its own.
    """
    if connection.dialect.driver != "asyncpg":
        return None
    driver = (await connection.get_raw_connection()).driver_connection
    return driver if driver is not None and driver.is_in_transaction() else None

"""``enqueue``: add events to the outbox inside the caller's transaction.

The rows commit or roll back with the caller's transaction. Nothing here commits, flushes ORM
state or opens a transaction of its own. On a ``Session`` or ``AsyncSession`` the rows are staged
in the session's unit of work and written, all in one statement, when the session next flushes
(at the latest at commit): an ``enqueue`` that is not awaited loses nothing, and many calls cost
one round trip (``outbox_client.staging``). On a connection they are inserted at once (on an
``AsyncConnection``: when awaited; committing with an un-awaited ``enqueue`` raises).

Before anything is staged, the message policy (``outbox_client.policy``) is applied: an event
the relay could never publish is refused here, with the reason, instead of being quarantined
later.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, overload

from sqlalchemy import (
    ARRAY,
    Connection,
    Delete,
    Insert,
    LargeBinary,
    Select,
    Update,
    bindparam,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox_client.capture import capture_mode
from outbox_client.errors import EnqueueError
from outbox_client.events.base import BaseEvent
from outbox_client.headers import Header
from outbox_client.policy import (
    RESERVED_FIX,
    headers_problem,
    reserved_header,
    subject_problem,
)
from outbox_client.staging import STAGED, PendingWrite, Row, stage, write
from outbox_client.table import outbox
from outbox_client.tracing import current_trace_context
from outbox_client.walframe import WAL_PREFIX, encode

SyncTarget = Session | Connection
AsyncTarget = AsyncSession | AsyncConnection

#: A partition key longer than this is named in the error when the header block is too large.
_LONG_KEY = 1024
_PARTITION_KEY = Header.PARTITION_KEY.value
#: The relay's Nats-Msg-Id header as the checks see it: the text of any event id (a UUID is
#: always these 36 characters long, and of hex digits and dashes), without formatting each.
_MSG_ID = {Header.MSG_ID.value: str(uuid.UUID(int=0))}


def _refused(event: BaseEvent, problem: str, fix: str) -> EnqueueError:
    return EnqueueError(f"cannot enqueue {type(event).__name__} {event.event_id}: {problem}. {fix}")


def _row(event: object, partition_key: str | None) -> Row:
    if not isinstance(event, BaseEvent):
        raise EnqueueError(
            f"enqueue() takes a BaseEvent subclass instance, got {type(event).__name__}: "
            "build one of the outbox_client event classes, e.g. CourseCreatedEvent(...)"
        )
    problem = subject_problem(event.subject)
    if problem:
        raise _refused(
            event,
            f"event_type {event.subject[:80]!r} is not a subject a producer may publish to "
            f"({problem})",
            "The event_type is the NATS subject: use one of your own, e.g. "
            "'academic.course.created'",
        )
    trace = current_trace_context()
    if trace and event.metadata.traceparent is None:
        event = event.model_copy(update={"metadata": event.metadata.model_copy(update=trace)})
    key = partition_key if partition_key is not None else event.partition_key
    headers = event.nats_headers()
    headers[_PARTITION_KEY] = key
    reserved = reserved_header(headers)
    if reserved is not None:  # a subclass's nats_headers() added one
        raise _refused(event, f"its headers set {reserved!r}", RESERVED_FIX)
    # Checked as the relay will send them, with its Nats-Msg-Id (a larger block).
    problem = headers_problem(headers | _MSG_ID, reserved_allowed=True)
    if problem:
        long_key = isinstance(key, str) and len(key) > _LONG_KEY
        size = f" (the partition key is {len(key)} characters)" if long_key else ""
        raise _refused(
            event,
            f"its NATS headers cannot be sent: {problem}{size}",
            "The partition key and the metadata travel as headers with every message: keep "
            "them short, printable text (a partition key is the aggregate's id, e.g. a course "
            "code)",
        )
    return (event.event_id, event.event_type, event.subject, key, event.to_bytes(), headers)


def _rows(events: Iterable[object], partition_key: str | None) -> list[Row]:
    if isinstance(events, BaseEvent | str | bytes) or not isinstance(events, Iterable):
        raise EnqueueError("enqueue_many() takes an iterable of events; use enqueue() for one")
    return [_row(event, partition_key) for event in events]


def _bad_target(target: object) -> EnqueueError:
    return EnqueueError(
        "enqueue() needs the Session, AsyncSession, Connection or AsyncConnection whose "
        f"transaction the event must join, got {type(target).__name__}"
    )


_COLUMN_NAMES = ("event_id", "event_type", "subject", "partition_key", "payload", "headers")


def with_events(
    statement: Insert | Update | Delete, *events: BaseEvent, partition_key: str | None = None
) -> Insert | Select[Any]:
    """``statement`` and the outbox insert of ``events`` as ONE SQL statement.

    The domain write becomes a data-modifying CTE of the outbox INSERT, so the pair costs one
    round trip instead of two: worth it when the database is across a network. On loopback
    it saves no CPU (building the combined statement costs about what the round trip did;
    ``make bench`` (d) measures both). Both writes commit or roll back with the caller's
    transaction, exactly as with ``enqueue``. The domain statement's RETURNING rows are not
    returned; use ``enqueue`` when you need them. With ``OUTBOX_CAPTURE=wal`` the statement is
    a SELECT of ``pg_logical_emit_message`` with the domain write as its CTE (PostgreSQL runs
    a data-modifying CTE whether or not the query reads it).

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
    raw = _rows(events, partition_key)
    if capture_mode() == "wal":
        frames = bindparam("frames", [encode(*row) for row in raw], type_=ARRAY(LargeBinary()))
        unnested = select(func.unnest(frames).label("frame")).subquery("frames")
        emit = func.pg_logical_emit_message(true(), literal(WAL_PREFIX), unnested.c.frame)
        return (
            select(func.count(emit))
            .select_from(unnested)
            .add_cte(statement.cte("outbox_domain_write"))
        )
    rows = [dict(zip(_COLUMN_NAMES, row, strict=True)) for row in raw]
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
) -> Awaitable[None]: ...
def enqueue_many(
    session: SyncTarget | AsyncTarget,
    events: Iterable[BaseEvent],
    *,
    partition_key: str | None = None,
) -> Awaitable[None] | None:
    """Add several events; on a session they join its unit of work, on a connection they are
    inserted in one statement (await it on an ``AsyncConnection``).

    >>> with Session(engine) as session, session.begin():  # doctest: +SKIP
    ...     session.add(Course(code="CS101"))
    ...     enqueue_many(session, [created, schedule_created])
    """
    rows = _rows(events, partition_key)
    if isinstance(session, AsyncSession):
        stage(session.sync_session, rows)
        return STAGED
    if isinstance(session, Session):
        stage(session, rows)
        return None
    if isinstance(session, AsyncConnection):
        return PendingWrite(session, rows)
    if isinstance(session, Connection):
        write(session, rows)
        return None
    raise _bad_target(session)


@overload
def enqueue(session: SyncTarget, event: BaseEvent, *, partition_key: str | None = None) -> None: ...
@overload
def enqueue(
    session: AsyncTarget, event: BaseEvent, *, partition_key: str | None = None
) -> Awaitable[None]: ...
def enqueue(
    session: SyncTarget | AsyncTarget, event: BaseEvent, *, partition_key: str | None = None
) -> Awaitable[None] | None:
    """Add one event to the outbox in ``session``'s transaction.

    ``partition_key`` overrides the event's own (its aggregate id): events sharing a key are
    published in commit order. On a ``Session``/``AsyncSession`` the row is written at the
    session's next flush (at the latest at commit), with all other events staged since, in
    one statement; awaiting the result on an ``AsyncSession`` is allowed and does nothing more.
    On an ``AsyncConnection`` the row is inserted when the result is awaited, and a commit
    refuses to go ahead while one is not.

    >>> with Session(engine) as session, session.begin():  # doctest: +SKIP
    ...     session.add(Course(code="CS101", name="Intro"))
    ...     enqueue(session, CourseCreatedEvent(course_code="CS101", ...))
    >>> async with async_session.begin():  # doctest: +SKIP
    ...     await enqueue(async_session, event)
    """
    if isinstance(event, Sequence | set) and not isinstance(event, str | bytes):
        raise EnqueueError("enqueue() takes one event; use enqueue_many() for several")
    return enqueue_many(session, [event], partition_key=partition_key)

"""Where ``enqueue`` puts rows: a session's unit of work, or straight onto a connection.

On a ``Session`` (and the ``Session`` inside an ``AsyncSession``) rows are *staged*: one
:class:`StagedEvents` object joins the session as a pending object, and a ``before_flush``
listener takes it out again and writes every row it holds in one statement (after the flush's
own domain writes when it has some). So the rows are
written by whatever flushes the session (``commit()``, ``flush()``, an autoflush, the flush
before a savepoint), whether or not the caller awaited ``enqueue``; a rollback, or the rollback
of the savepoint they were staged in, discards them with the session's other pending objects.

An ``AsyncConnection`` has no unit of work: ``enqueue`` writes when awaited. Until then the write
is registered as pending on the connection, and committing it raises :class:`EnqueueError` and
rolls the transaction back, so that a forgotten ``await`` can never commit the domain write
without its event.

Writing: one row is a plain INSERT; several are one ``INSERT ... SELECT FROM unnest(...)``
(one statement, one round trip, one firing of the notify trigger; ~1.5x the rows/s of a
pipelined ``executemany`` of the same rows, measured with ``make bench``).
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Generator
from typing import Any

from sqlalchemy import ARRAY, Connection, Engine, LargeBinary, Text, Uuid, bindparam, event, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, registry
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import await_

from outbox_client.capture import capture_mode
from outbox_client.errors import EnqueueError
from outbox_client.table import outbox
from outbox_client.walframe import WAL_PREFIX, encode, headers_json

#: One row: event_id, event_type, subject, partition_key, payload, headers.
Row = tuple[uuid.UUID, str, str, str, bytes, dict[str, str]]

_COLUMNS = "event_id, event_type, subject, partition_key, payload, headers"
_ONE_ROW = f"INSERT INTO {outbox.name} ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
_UNNEST = (
    f"INSERT INTO {outbox.name} ({_COLUMNS}) "
    "SELECT i, t, s, k, p, h::jsonb FROM unnest({}::uuid[], {}::text[], {}::text[], {}::text[], "
    "{}::bytea[], {}::text[]) AS u(i, t, s, k, p, h)"
)
_ASYNCPG_MANY = _UNNEST.format(*(f"${i}" for i in range(1, 7)))
_NAMES = ("ids", "types", "subjects", "keys", "payloads", "headers")
_TYPES: tuple[TypeEngine[Any], ...] = (Uuid(), Text(), Text(), Text(), LargeBinary(), Text())


#: The same statement with named binds, for any driver (and for asyncpg before the
#: transaction's first statement). The space before "::" keeps each bind a bind.
_CORE_MANY = text(_UNNEST.format(*(f":{name} " for name in _NAMES))).bindparams(
    *(bindparam(name, type_=ARRAY(type_)) for name, type_ in zip(_NAMES, _TYPES, strict=True))
)


#: WAL capture: one transactional logical message per event, in the caller's transaction.
_EMIT_ONE = "SELECT pg_logical_emit_message(true, $1, $2::bytea)"
_EMIT_MANY = "SELECT count(pg_logical_emit_message(true, $1, f)) FROM unnest($2::bytea[]) AS f"
_CORE_EMIT = text(
    "SELECT count(pg_logical_emit_message(true, :prefix , f)) FROM unnest(:frames ) AS f"
).bindparams(bindparam("prefix", type_=Text()), bindparam("frames", type_=ARRAY(LargeBinary())))


def write(connection: Connection, rows: list[Row]) -> None:
    """Insert ``rows`` on ``connection`` in one statement (sync code; inside a greenlet too);
    with ``OUTBOX_CAPTURE=wal``, emit them as logical decoding messages instead."""
    if not rows:
        return
    driver = _asyncpg_in_transaction(connection)
    if driver is not None:
        await_(driver.execute(*_asyncpg_statement(rows)))
    elif capture_mode() == "wal":
        frames = [encode(*row) for row in rows]
        connection.execute(_CORE_EMIT, {"prefix": WAL_PREFIX, "frames": frames})
    else:
        columns = _columns(rows)
        connection.execute(_CORE_MANY, dict(zip(_NAMES, columns, strict=True)))


def _columns(rows: list[Row]) -> list[list[Any]]:
    # Headers go as JSON text cast to jsonb in SQL: the same bytes for every driver.
    columns = [list(column) for column in zip(*rows, strict=True)]
    columns[-1] = [headers_json(headers) for headers in columns[-1]]
    return columns


def _asyncpg_statement(rows: list[Row]) -> tuple[Any, ...]:
    """The statement and arguments that write ``rows`` on an asyncpg connection (``rows`` is
    not empty)."""
    if capture_mode() == "wal":
        if len(rows) == 1:
            return (_EMIT_ONE, WAL_PREFIX, encode(*rows[0]))
        return (_EMIT_MANY, WAL_PREFIX, [encode(*row) for row in rows])
    columns = _columns(rows)
    if len(rows) == 1:
        return (_ONE_ROW, *(column[0] for column in columns))
    return (_ASYNCPG_MANY, *columns)


def _asyncpg_in_transaction(connection: Connection) -> Any:
    """The asyncpg connection under ``connection`` when it is inside a transaction already.

    Only then may the insert bypass SQLAlchemy (3x less CPU than a Core insert): if the event
    were the transaction's first statement, SQLAlchemy has not sent BEGIN yet and the insert
    would commit on its own.
    """
    if connection.dialect.driver != "asyncpg":
        return None
    driver = connection.connection.driver_connection
    return driver if driver is not None and driver.is_in_transaction() else None


# --- sessions: rows staged in the unit of work --------------------------------------------------


class StagedEvents:
    """The pending object that carries a session's staged outbox rows until its next flush.

    It is mapped (so that it can be pending in a session) but never inserted: the flush
    listener removes it from the session and writes its rows itself.
    """

    def __init__(self) -> None:
        self.rows: list[Row] = []


registry().map_imperatively(StagedEvents, outbox, include_properties=["id"])
_STAGED = "vertector_outbox_staged"
_AFTER_FLUSH = "vertector_outbox_after_flush"


def stage(session: Session, rows: list[Row]) -> None:
    """Add ``rows`` to ``session``'s unit of work (no I/O; autobegins like ``Session.add``)."""
    if session._flushing:  # called from a flush hook: too late to stage
        write(session.connection(), rows)
        return
    staged = session.info.get(_STAGED)
    if staged is None or staged not in session:
        staged = StagedEvents()
        session.add(staged)
        session.info[_STAGED] = staged
    staged.rows.extend(rows)


@event.listens_for(Session, "before_flush")
def _take_staged(session: Session, _context: object, _instances: object) -> None:
    staged = session.info.pop(_STAGED, None)
    if staged is None or staged not in session:
        return
    session.expunge(staged)
    if session.new or session.dirty or session.deleted:
        # Written after this flush's domain writes: an event's id is then taken after the
        # write that locks its aggregate, which is what keeps per-key commit order.
        # Appended, not assigned: rows of an earlier flush whose after_flush never came (a
        # flush that needed no SQL returns early) are written with these, not overwritten.
        session.info.setdefault(_AFTER_FLUSH, []).extend(staged.rows)
    else:
        write(session.connection(), staged.rows)


@event.listens_for(Session, "after_flush")
def _write_after_flush(session: Session, _context: object) -> None:
    rows = session.info.pop(_AFTER_FLUSH, None)
    if rows:
        write(session.connection(), rows)


@event.listens_for(Session, "before_commit")
def _write_left_over(session: Session) -> None:
    # A flush whose only other objects turned out to need no SQL ends without after_flush.
    _write_after_flush(session, None)


@event.listens_for(Session, "after_transaction_end")
def _drop_unwritten(session: Session, _transaction: object) -> None:
    # The flush failed (its transaction rolled back): the rows go with it.
    if _AFTER_FLUSH in session.info:
        del session.info[_AFTER_FLUSH]


class Staged:
    """What ``enqueue`` returns for an ``AsyncSession``: the rows are staged already, so
    awaiting it does nothing (and forgetting to await it loses nothing)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator: awaiting completes at once


STAGED = Staged()


# --- async connections: writes that must be awaited before commit -------------------------------

_pending: weakref.WeakKeyDictionary[Connection, set[PendingWrite]] = weakref.WeakKeyDictionary()


class PendingWrite:
    """What ``enqueue`` returns for an ``AsyncConnection``: the insert, run when awaited.

    Until it is awaited it is pending on the connection, and a commit refuses to go ahead.
    """

    __slots__ = ("_connection", "_rows")

    def __init__(self, connection: AsyncConnection, rows: list[Row]) -> None:
        sync = connection.sync_connection
        if sync is None:
            raise EnqueueError(
                "enqueue() got an AsyncConnection that is not connected: use "
                "`async with engine.begin() as conn:` and pass `conn`"
            )
        self._connection = connection
        self._rows = rows
        _pending.setdefault(sync, set()).add(self)

    def __await__(self) -> Generator[Any, None, None]:
        sync = self._connection.sync_connection
        waiting = _pending.get(sync) if sync is not None else None
        if sync is None or waiting is None or self not in waiting:
            raise EnqueueError("this enqueue() was awaited already, or its transaction ended")
        waiting.discard(self)
        # The connection is open and asyncpg is inside the transaction (the common case: the
        # event follows the domain write): send the statement from this coroutine. No
        # greenlet for run_sync(), which cost about as much CPU as the statement itself.
        if self._rows and not (sync.closed or sync.invalidated):
            driver = _asyncpg_in_transaction(sync)
            if driver is not None:
                return _send(driver, _asyncpg_statement(self._rows)).__await__()
        return self._connection.run_sync(write, self._rows).__await__()


async def _send(driver: Any, statement: tuple[Any, ...]) -> None:
    await driver.execute(*statement)


@event.listens_for(Engine, "commit")
def _refuse_unawaited(connection: Connection) -> None:
    waiting = _pending.pop(connection, None)
    if waiting:
        connection.engine.dialect.do_rollback(connection.connection)
        raise EnqueueError(
            f"{len(waiting)} enqueue() call(s) on this AsyncConnection were never awaited, so "
            "their events were not written: the transaction was rolled back instead of "
            "committing without them. Write `await enqueue(conn, event)`"
        )


@event.listens_for(Engine, "rollback")
def _forget_unawaited(connection: Connection) -> None:
    _pending.pop(connection, None)

"""What the store contract suite needs beyond the store: write rows, hold a transaction open,
read a row back, and move the clock by back-dating (an expired lease, a silent instance, an old
sent row). One driver per store; the suite never looks past this interface."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from relay.pgstore import PgStore
from tests.memstore import MemoryDatabase, MemoryStore

SUBJECT = "academic.course.updated"


@dataclass(frozen=True)
class RowState:
    sent: bool
    stream: str | None
    stream_seq: int | None
    attempts: int
    last_error: str | None
    quarantined: bool


class Uncommitted(Protocol):
    """A row inserted in a transaction still open: its id is taken, nobody else sees it."""

    id: int

    async def commit(self) -> None: ...


class Driver(Protocol):
    async def store(self, owner: str, *, keep_sent: bool = True) -> PgStore: ...
    async def insert(self, key: str, subject: str = SUBJECT) -> int: ...
    async def begin(self, key: str) -> Uncommitted: ...
    async def row(self, row_id: int) -> RowState | None: ...
    async def expire_lease(self, partition: int) -> None: ...
    async def age_instance(self, name: str, seconds: float) -> None: ...
    async def age_row(self, row_id: int, seconds: float) -> None:
        """Move ``created_at`` and ``sent_at`` back by ``seconds``."""
        ...

    async def close(self) -> None: ...


# --- in memory --------------------------------------------------------------------------------


@dataclass
class _MemoryPending:
    db: MemoryDatabase
    id: int

    async def commit(self) -> None:
        self.db.rows[self.id].visible = True


class MemoryDriver:
    def __init__(self) -> None:
        self.db = MemoryDatabase()

    async def store(self, owner: str, *, keep_sent: bool = True) -> PgStore:
        return MemoryStore(
            owner=owner, keep_sent=keep_sent, hold_all=False, forbid_double_marks=False, db=self.db
        )

    async def insert(self, key: str, subject: str = SUBJECT) -> int:
        return self.db.insert(key, subject).id

    async def begin(self, key: str) -> Uncommitted:
        return _MemoryPending(self.db, self.db.insert(key, SUBJECT, visible=False).id)

    async def row(self, row_id: int) -> RowState | None:
        r = self.db.rows.get(row_id)
        if r is None or not r.visible:
            return None
        return RowState(
            r.sent, r.stream, r.stream_seq, r.attempts, r.last_error, r.quarantined_at is not None
        )

    async def expire_lease(self, partition: int) -> None:
        self.db.leases[partition].expires_at = datetime.now(UTC) - timedelta(seconds=1)

    async def age_instance(self, name: str, seconds: float) -> None:
        self.db.instances[name].heartbeat_at -= timedelta(seconds=seconds)

    async def age_row(self, row_id: int, seconds: float) -> None:
        row = self.db.rows[row_id]
        row.created_at -= timedelta(seconds=seconds)
        if row.sent_at is not None:
            row.sent_at -= timedelta(seconds=seconds)

    async def close(self) -> None:
        return None


# --- PostgreSQL -------------------------------------------------------------------------------

INSERT = """
INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload)
VALUES ($1, 'test.event', $2, $3, '{}') RETURNING id
"""


@dataclass
class _PgPending:
    conn: asyncpg.Connection
    transaction: asyncpg.transaction.Transaction
    id: int

    async def commit(self) -> None:
        await self.transaction.commit()


class PgDriver:
    def __init__(self, url: str, admin: asyncpg.Connection) -> None:
        self.url = url
        self.admin = admin
        self.stores: list[PgStore] = []
        self.connections: list[asyncpg.Connection] = []

    @classmethod
    async def connect(cls, url: str) -> PgDriver:
        return cls(url, await asyncpg.connect(url))

    async def store(self, owner: str, *, keep_sent: bool = True) -> PgStore:
        store = PgStore(self.url, pool_size=2, keep_sent=keep_sent, owner=owner)
        await store.open()
        self.stores.append(store)
        return store

    async def insert(self, key: str, subject: str = SUBJECT) -> int:
        return int(await self.admin.fetchval(INSERT, uuid.uuid4(), subject, key))

    async def begin(self, key: str) -> Uncommitted:
        conn = await asyncpg.connect(self.url)
        self.connections.append(conn)
        transaction = conn.transaction()
        await transaction.start()
        return _PgPending(
            conn, transaction, await conn.fetchval(INSERT, uuid.uuid4(), SUBJECT, key)
        )

    async def row(self, row_id: int) -> RowState | None:
        r = await self.admin.fetchrow(
            "SELECT sent_at IS NOT NULL AS sent, stream, stream_seq, attempts, last_error,"
            " quarantined_at IS NOT NULL AS quarantined FROM outbox_events WHERE id = $1",
            row_id,
        )
        return None if r is None else RowState(**dict(r))

    async def expire_lease(self, partition: int) -> None:
        await self.admin.execute(
            "UPDATE outbox_relay_leases SET expires_at = now() - interval '1 second'"
            " WHERE partition = $1",
            partition,
        )

    async def age_instance(self, name: str, seconds: float) -> None:
        await self.admin.execute(
            "UPDATE outbox_relay_instances SET heartbeat_at = heartbeat_at"
            " - make_interval(secs => $2) WHERE name = $1",
            name,
            seconds,
        )

    async def age_row(self, row_id: int, seconds: float) -> None:
        await self.admin.execute(
            "UPDATE outbox_events SET created_at = created_at - make_interval(secs => $2),"
            " sent_at = sent_at - make_interval(secs => $2) WHERE id = $1",
            row_id,
            seconds,
        )

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()
        for store in self.stores:
            await store.close()
        await self.admin.close()

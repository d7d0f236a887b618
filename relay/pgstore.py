"""The PostgreSQL implementation of :class:`relay.ports.Store` (asyncpg, SQL by name)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import asyncpg

from relay.checkpoints import NO_CHECKPOINTS, Checkpoints
from relay.errors import StoreError, cause
from relay.log import log_event
from relay.ports import Backlog, OutboxRow, Sent
from relay.queries import query

logger = logging.getLogger("relay.store")

T = TypeVar("T")

#: What a lost, restarting or paused PostgreSQL raises; all of it is retried. asyncpg raises
#: InternalClientError ("cannot switch to state ...") on a connection broken mid-operation.
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)


def application_name(instance: str) -> str:
    """How the relay's connections show in ``pg_stat_activity`` (63 bytes at most)."""
    return f"vertector-relay/{instance}"[:63]


class UnreadableJson:
    """A stored JSON value Python cannot read back (nested deeper than Python's recursion
    limit, an integer of thousands of digits): the row is then quarantined for its headers
    (they are not an object), never a crash of the loop."""

    def __init__(self, error: BaseException) -> None:
        self.error = f"{type(error).__name__}: {error}"[:200]

    def __repr__(self) -> str:
        return f"UnreadableJson({self.error!r})"


def _decode_json(text: str) -> object:
    try:
        return json.loads(text)
    except (RecursionError, ValueError) as exc:
        return UnreadableJson(exc)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=_decode_json, schema="pg_catalog"
    )


def _row(r: asyncpg.Record) -> OutboxRow:
    return OutboxRow(
        id=r["id"],
        event_id=r["event_id"],
        subject=r["subject"],
        partition_key=r["partition_key"],
        partition=r["partition"],
        payload=r["payload"],
        headers=r["headers"],
        attempts=r["attempts"],
        created_at=r["created_at"],
        replay_label=r["replay_label"],
    )


class PgStore:
    """Claims, marks and purges outbox rows through a small asyncpg pool."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 4,
        command_timeout: float = 30.0,
        keep_sent: bool = True,
        owner: str = "relay",
        checkpoints: Checkpoints = NO_CHECKPOINTS,
    ) -> None:
        self.dsn = dsn
        self.owner = owner
        self.keep_sent = keep_sent
        self.checkpoints = checkpoints
        self.pool_size = pool_size
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Create the pool; raises :class:`StoreError` when PostgreSQL does not answer."""
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                init=_init_connection,
                command_timeout=self.command_timeout,
                timeout=min(self.command_timeout, 10),  # also in the error below
                server_settings={"application_name": application_name(self.owner)},
            )
        except DRIVER_ERRORS as exc:
            waited = min(self.command_timeout, 10)
            raise StoreError(f"cannot connect to PostgreSQL: {cause(exc, waited)}") from exc
        log_event(logger, "relay.store.connected", pool_size=self.pool_size)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except (*DRIVER_ERRORS,) as exc:
                log_event(logger, "relay.store.close_failed", level=logging.WARNING, error=str(exc))
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is not open: call open() first")
        return self._pool

    async def _call(self, method: str, sql_name: str, *args: Any) -> Any:
        try:
            return await getattr(self.pool, method)(query(sql_name), *args)
        except TimeoutError as exc:
            raise StoreError(
                f"{sql_name} failed: no answer from PostgreSQL within {self.command_timeout:g} s"
                " (RELAY_DB_TIMEOUT_SECONDS)"
            ) from exc
        except DRIVER_ERRORS as exc:
            raise StoreError(f"{sql_name} failed: {type(exc).__name__}: {exc}") from exc

    async def claim(
        self,
        partitions: Sequence[int],
        exclude: Sequence[int],
        held_keys: Sequence[str],
        limit: int,
    ) -> list[OutboxRow]:
        if not partitions:
            return []
        records = await self._call(
            "fetch", "claim", list(partitions), list(exclude), limit, list(held_keys)
        )
        return [_row(r) for r in records]

    async def claim_ids(self, ids: Sequence[int], partitions: Sequence[int]) -> list[OutboxRow]:
        if not ids or not partitions:
            return []
        return [
            _row(r) for r in await self._call("fetch", "claim_ids", list(ids), list(partitions))
        ]

    async def mark_sent(self, sent: Sequence[Sent]) -> int:
        """Record the PubAcks: update the rows (kept for replay) or delete them."""
        if self.checkpoints.armed("mid_mark"):
            return await self._crash_mid_mark(sent)
        if not self.keep_sent:
            return int(
                await self._call("fetchval", "delete_sent", [s.row_id for s in sent], self.owner)
            )
        status = await self._call(
            "execute",
            "mark_sent",
            [s.row_id for s in sent],
            [s.stored.stream for s in sent],
            [s.stored.seq for s in sent],
            self.owner,
        )
        return int(status.split()[-1])

    async def _crash_mid_mark(self, sent: Sequence[Sent]) -> int:
        # Fault suite only: the statement is on the wire when the process dies.
        task = asyncio.ensure_future(
            self._call("fetchval", "delete_sent", [s.row_id for s in sent], self.owner)
        )
        await asyncio.sleep(0)
        self.checkpoints.reached("mid_mark")
        return int(await task)

    async def record_failures(self, failures: Sequence[tuple[int, str]]) -> None:
        await self._call(
            "execute", "record_failures", [f[0] for f in failures], [f[1] for f in failures]
        )

    async def quarantine(self, rows: Sequence[tuple[int, str]]) -> None:
        await self._call(
            "execute", "quarantine", [r[0] for r in rows], [r[1] for r in rows], self.owner
        )

    async def purge(self, older_than_seconds: float, limit: int) -> int:
        return int(await self._call("fetchval", "purge_sent", older_than_seconds, limit))

    async def vacuum(self) -> None:
        await self._call("execute", "vacuum")

    async def can_vacuum(self) -> bool:
        return bool(await self._call("fetchval", "can_vacuum"))

    async def ownership(self) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        """For ``status``: every partition's lease, and every registered instance."""
        leases = await self._call("fetch", "lease_status")
        instances = await self._call("fetch", "instance_status")
        return leases, instances

    async def waiting_subjects(self, limit: int) -> list[str]:
        """Distinct subjects of unsent, unquarantined rows (at most ``limit``)."""
        return [r["subject"] for r in await self._call("fetch", "waiting_subjects", limit)]

    async def backlog(self) -> Backlog:
        r = await self._call("fetchrow", "backlog")
        return Backlog(
            pending=r["pending"],
            oldest_age_seconds=r["oldest_age_seconds"],
            quarantined=r["quarantined"],
        )


class PgLeaseStore:
    """:class:`relay.leases.LeaseStore` on the same pool."""

    def __init__(self, store: PgStore) -> None:
        self.store = store

    async def heartbeat(self, name: str, ttl: float) -> int:
        return int(await self.store._call("fetchval", "heartbeat", name, ttl))

    async def renew(self, name: str, ttl: float) -> list[int]:
        return [r["partition"] for r in await self.store._call("fetch", "renew_leases", name, ttl)]

    async def acquire(self, name: str, ttl: float, count: int) -> list[int]:
        rows = await self.store._call("fetch", "acquire_leases", name, ttl, count)
        return sorted(r["partition"] for r in rows)

    async def release(self, name: str, partitions: Sequence[int]) -> None:
        await self.store._call("execute", "release_leases", name, list(partitions))

    async def leave(self, name: str) -> None:
        await self.store._call("execute", "leave", name)

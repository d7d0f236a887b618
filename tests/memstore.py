"""The outbox tables in memory, answering ``relay/sql/queries.sql`` by query name.

Like procrastinate's ``InMemoryConnector``: :class:`MemoryStore` is a :class:`PgStore` whose one
seam to PostgreSQL, ``_call(method, query_name, *args)``, is answered here by the Python function
registered under the same query name, with the same positional parameters (``$1``, ``$2``, ...)
and the same kind of result asyncpg gives (records, a status string such as ``"UPDATE 3"``, a
value). Everything above that seam (argument marshalling, empty-input shortcuts, status parsing,
:class:`relay.pgstore.PgLeaseStore`) is the production code, so the fake cannot drift from
``PgStore``'s calls, and ``tests/contract/test_store_contract.py`` runs one suite against both to
hold the rules themselves (claim order, fencing, retry heads, marks, leases) equal. The SQL is
the truth: where this file and the SQL disagree, this file is wrong.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from outbox_client.table import PARTITIONS, partition_of
from relay.errors import StoreError
from relay.pgstore import PgStore

Record = dict[str, Any]
FOREVER = datetime.max.replace(tzinfo=UTC)
#: Queries whose failure ``fail_writes`` injects (the relay's outcome writes).
WRITES = frozenset({"mark_sent", "delete_sent", "record_failures", "quarantine"})


@dataclass
class MemRow:
    """One ``outbox_events`` row; ``visible`` is False while its transaction is still open."""

    id: int
    partition_key: str
    subject: str
    visible: bool = True
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    event_type: str = "test.event"
    payload: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    attempts: int = 0
    last_error: str | None = None
    sent_at: datetime | None = None
    stream: str | None = None
    stream_seq: int | None = None
    quarantined_at: datetime | None = None
    replay_label: str | None = None
    partition: int = field(init=False)  # a generated column in PostgreSQL

    def __post_init__(self) -> None:
        self.partition = partition_of(self.partition_key)

    @property
    def sent(self) -> bool:
        return self.sent_at is not None

    @property
    def quarantined(self) -> str | None:
        """The quarantine reason (kept in ``last_error``), None when not quarantined."""
        return self.last_error if self.quarantined_at is not None else None

    @property
    def pending(self) -> bool:
        return self.sent_at is None and self.quarantined_at is None

    def record(self) -> Record:
        return {
            "id": self.id, "event_id": self.event_id, "subject": self.subject,
            "partition_key": self.partition_key, "partition": self.partition,
            "payload": self.payload, "headers": dict(self.headers), "attempts": self.attempts,
            "created_at": self.created_at, "replay_label": self.replay_label,
        }  # fmt: skip


@dataclass
class MemLease:
    owner: str | None = None
    epoch: int = 0
    expires_at: datetime | None = None

    def held_by(self, owner: str, now: datetime) -> bool:
        return self.owner == owner and self.expires_at is not None and self.expires_at > now


@dataclass
class MemInstance:
    heartbeat_at: datetime
    started_at: datetime


@dataclass
class MemoryDatabase:
    """``outbox_events``, ``outbox_relay_leases`` and ``outbox_relay_instances``."""

    rows: dict[int, MemRow] = field(default_factory=dict)
    leases: dict[int, MemLease] = field(
        default_factory=lambda: {p: MemLease() for p in range(PARTITIONS)}
    )
    instances: dict[str, MemInstance] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def insert(self, key: str, subject: str, *, visible: bool = True) -> MemRow:
        row = MemRow(next(self.ids), key, subject, visible=visible)
        self.rows[row.id] = row
        return row

    def visible(self) -> list[MemRow]:
        """What another transaction sees, in primary-key order."""
        return sorted((r for r in self.rows.values() if r.visible), key=lambda r: r.id)


# --- the queries, by the names of their blocks in relay/sql/queries.sql ---------------------

Query = Callable[..., Any]
#: query name -> (the asyncpg method PgStore runs it with, its in-memory answer)
QUERIES: dict[str, tuple[str, Query]] = {}


def sql(method: str) -> Callable[[Query], Query]:
    def register(fn: Query) -> Query:
        QUERIES[fn.__name__] = (method, fn)
        return fn

    return register


def _unique(ids: Sequence[int]) -> dict[int, int]:
    """id -> its first position: ``UPDATE ... FROM unnest(...)`` changes a row once."""
    first: dict[int, int] = {}
    for i, row_id in enumerate(ids):
        first.setdefault(row_id, i)
    return first


@sql("fetch")
def claim(
    db: MemoryDatabase, now: datetime, partitions: list[int], exclude: list[int], limit: int,
    held_keys: list[str],
) -> list[Record]:  # fmt: skip
    owned, skip, held = set(partitions), set(exclude), set(held_keys)
    rows = [
        r for r in db.visible()
        if r.pending and r.partition in owned and r.id not in skip and r.partition_key not in held
    ]  # fmt: skip
    return [r.record() for r in rows[:limit]]


@sql("fetch")
def claim_ids(
    db: MemoryDatabase, now: datetime, ids: list[int], partitions: list[int]
) -> list[Record]:
    wanted, owned = set(ids), set(partitions)
    return [
        r.record() for r in db.visible() if r.id in wanted and r.pending and r.partition in owned
    ]


def _fenced(db: MemoryDatabase, row: MemRow, owner: str, now: datetime) -> bool:
    return db.leases[row.partition].held_by(owner, now)


def _update_unsent(
    db: MemoryDatabase, now: datetime, ids: list[int], owner: str | None,
    change: Callable[[MemRow, int], None],
) -> str:  # fmt: skip
    """``UPDATE outbox_events ... FROM unnest($1, ...) WHERE o.sent_at IS NULL``: ``change``
    gets each visible unsent row once with its position in ``ids``; with ``owner``, only rows
    of partitions it holds an unexpired lease on (the fenced statements)."""
    changed = 0
    for row_id, i in _unique(ids).items():
        row = db.rows.get(row_id)
        if row is None or not row.visible or row.sent_at is not None:
            continue
        if owner is not None and not _fenced(db, row, owner, now):
            continue
        change(row, i)
        row.attempts += 1
        changed += 1
    return f"UPDATE {changed}"


@sql("execute")
def mark_sent(
    db: MemoryDatabase, now: datetime, ids: list[int], streams: list[str], seqs: list[int],
    owner: str,
) -> str:  # fmt: skip
    def sent(row: MemRow, i: int) -> None:
        row.sent_at, row.stream, row.stream_seq, row.last_error = now, streams[i], seqs[i], None

    return _update_unsent(db, now, ids, owner, sent)


@sql("fetchval")
def delete_sent(db: MemoryDatabase, now: datetime, ids: list[int], owner: str) -> int:
    gone = [
        row_id for row_id in _unique(ids)
        if (row := db.rows.get(row_id)) is not None and row.visible
        and row.quarantined_at is None and _fenced(db, row, owner, now)
    ]  # fmt: skip
    for row_id in gone:
        del db.rows[row_id]
    return len(gone)


@sql("execute")
def record_failures(db: MemoryDatabase, now: datetime, ids: list[int], errors: list[str]) -> str:
    def failed(row: MemRow, i: int) -> None:
        row.last_error = errors[i]

    return _update_unsent(db, now, ids, None, failed)


@sql("execute")
def quarantine(
    db: MemoryDatabase, now: datetime, ids: list[int], reasons: list[str], owner: str
) -> str:
    def quarantined(row: MemRow, i: int) -> None:
        row.quarantined_at, row.last_error = now, reasons[i]

    return _update_unsent(db, now, ids, owner, quarantined)


@sql("fetchval")
def purge_sent(db: MemoryDatabase, now: datetime, older_than_seconds: float, limit: int) -> int:
    cutoff = now - timedelta(seconds=older_than_seconds)
    old = sorted(
        (r for r in db.visible() if r.sent_at is not None and r.sent_at < cutoff),
        key=lambda r: r.sent_at or now,
    )[:limit]
    for row in old:
        del db.rows[row.id]
    return len(old)


@sql("fetchrow")
def backlog(db: MemoryDatabase, now: datetime) -> Record:
    pending = [r for r in db.visible() if r.pending]
    oldest = min((r.created_at for r in pending), default=None)
    return {
        "pending": len(pending),
        "oldest_age_seconds": (now - oldest).total_seconds() if oldest else 0.0,
        "quarantined": sum(1 for r in db.visible() if r.quarantined_at is not None),
    }


@sql("fetch")
def waiting_subjects(db: MemoryDatabase, now: datetime, limit: int) -> list[Record]:
    subjects = dict.fromkeys(r.subject[:1025] for r in db.visible() if r.pending)
    return [{"subject": subject} for subject in list(subjects)[:limit]]


@sql("fetchval")
def heartbeat(db: MemoryDatabase, now: datetime, name: str, ttl: float) -> int:
    cutoff = now - timedelta(seconds=ttl)
    alive = sum(1 for n, i in db.instances.items() if n != name and i.heartbeat_at >= cutoff)
    for n in [n for n, i in db.instances.items() if n != name and i.heartbeat_at < cutoff]:
        del db.instances[n]
    if name in db.instances:
        db.instances[name].heartbeat_at = now
    else:
        db.instances[name] = MemInstance(heartbeat_at=now, started_at=now)
    return alive + 1


@sql("fetch")
def renew_leases(db: MemoryDatabase, now: datetime, name: str, ttl: float) -> list[Record]:
    renewed = []
    for partition, lease in sorted(db.leases.items()):
        if lease.held_by(name, now):
            lease.expires_at = now + timedelta(seconds=ttl)
            renewed.append({"partition": partition, "epoch": lease.epoch})
    return renewed


@sql("fetch")
def acquire_leases(
    db: MemoryDatabase, now: datetime, name: str, ttl: float, count: int
) -> list[Record]:
    free = [
        p for p, lease in sorted(db.leases.items())
        if lease.owner is None or lease.expires_at is None or lease.expires_at <= now
    ][:count]  # fmt: skip
    taken = []
    for partition in free:
        lease = db.leases[partition]
        lease.owner, lease.epoch = name, lease.epoch + 1
        lease.expires_at = now + timedelta(seconds=ttl)
        taken.append({"partition": partition, "epoch": lease.epoch})
    return taken


@sql("execute")
def release_leases(db: MemoryDatabase, now: datetime, name: str, partitions: list[int]) -> str:
    released = [p for p in set(partitions) if p in db.leases and db.leases[p].owner == name]
    for partition in released:
        db.leases[partition].owner = db.leases[partition].expires_at = None
    return f"UPDATE {len(released)}"


@sql("execute")
def leave(db: MemoryDatabase, now: datetime, name: str) -> str:
    for lease in db.leases.values():
        if lease.owner == name:
            lease.owner = lease.expires_at = None
    return f"DELETE {int(db.instances.pop(name, None) is not None)}"


@sql("fetch")
def lease_status(db: MemoryDatabase, now: datetime) -> list[Record]:
    return [
        {
            "partition": p, "owner": lease.owner, "epoch": lease.epoch,
            "expires_in": (lease.expires_at - now).total_seconds() if lease.expires_at else None,
        }
        for p, lease in sorted(db.leases.items())
    ]  # fmt: skip


@sql("fetch")
def instance_status(db: MemoryDatabase, now: datetime) -> list[Record]:
    return [
        {"name": name, "heartbeat_age": (now - i.heartbeat_at).total_seconds(),
         "started_at": i.started_at}
        for name, i in sorted(db.instances.items())
    ]  # fmt: skip


@sql("execute")
def vacuum(db: MemoryDatabase, now: datetime) -> str:
    return "VACUUM"


@sql("fetchval")
def can_vacuum(db: MemoryDatabase, now: datetime) -> bool:
    return True


# --- the store --------------------------------------------------------------------------------


class MemoryStore(PgStore):
    """``PgStore`` over :class:`MemoryDatabase`.

    By default this relay (``owner``) holds every partition's lease for ever, so loop tests need
    no lease manager; ``hold_all=False`` starts with every lease free, as a fresh database does.
    ``fail_claims`` / ``fail_writes``: how many next claims / outcome writes raise
    :class:`StoreError`. ``forbid_double_marks`` makes marking an already-sent row fail the test
    (the SQL ignores it; for the loop's tests it betrays a row published twice).
    """

    def __init__(
        self,
        *,
        owner: str = "relay",
        keep_sent: bool = True,
        hold_all: bool = True,
        forbid_double_marks: bool = True,
        db: MemoryDatabase | None = None,
    ) -> None:
        super().__init__("memory://", keep_sent=keep_sent, owner=owner)
        self.db = db if db is not None else MemoryDatabase()
        if hold_all:
            for lease in self.db.leases.values():
                lease.owner, lease.expires_at = owner, FOREVER
        self.forbid_double_marks = forbid_double_marks
        self.fail_claims = 0
        self.fail_writes = 0

    @property
    def rows(self) -> dict[int, MemRow]:
        return self.db.rows

    def add(
        self, key: str, subject: str = "academic.course.updated", *, visible: bool = True
    ) -> MemRow:
        return self.db.insert(key, subject, visible=visible)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _call(self, method: str, sql_name: str, *args: Any) -> Any:
        await asyncio.sleep(0)
        try:
            expected, answer = QUERIES[sql_name]
        except KeyError:
            raise AssertionError(f"tests/memstore.py has no query '{sql_name}'") from None
        assert method == expected, f"{sql_name} is run with {method}, the fake answers {expected}"
        if sql_name == "claim" and self.fail_claims:
            self.fail_claims -= 1
            raise StoreError("claim failed: injected")
        if sql_name in WRITES and self.fail_writes:
            self.fail_writes -= 1
            raise StoreError(f"{sql_name} failed: injected")
        if sql_name == "mark_sent" and self.forbid_double_marks:
            twice = [i for i in args[0] if i in self.db.rows and self.db.rows[i].sent]
            assert not twice, f"rows {twice} marked twice"
        return answer(self.db, datetime.now(UTC), *args)

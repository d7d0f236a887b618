"""WAL capture's :class:`relay.ports.Store`: events read from a logical replication slot.

Why a store, not a second loop: the relay loop's contract is exactly what WAL capture needs.
"Claim" hands out the oldest unsettled events (here: decoded from the slot, in commit order,
held in a read-ahead buffer), keys backing off are left out, ``mark_sent`` and ``quarantine``
settle events. So waves (one event per key in flight), retries of a key's head, validation,
quarantine verdicts and checkpoints are the table mode's own code, unchanged; only what
"unsent" means differs.

Positions: the slot is read with ``pg_logical_slot_peek_binary_changes`` (nothing consumed)
and moved with ``pg_replication_slot_advance`` (``wal_advance``) to the end of the newest
transaction such that it and every transaction before it are settled: each of its events
acknowledged by JetStream or written to the quarantine. A crash re-reads from there;
re-published events carry the same ``Nats-Msg-Id`` (their event id) and JetStream drops
them. Transactions are decoded in commit order, so per-key order is commit order.

With ``stream`` (``RELAY_WAL_READ=stream``, :mod:`relay.walstream`) the walsender pushes the
transactions instead: a read takes the next whole ones it received (no statement), a position
is confirmed with a standby status update instead of ``wal_advance``, and each arrival wakes
the loop (``on_rows``). The stream is opened lazily by the reader, reopened after a failure
from the slot's confirmed position (what was read or settled before is passed over; the
settled position is confirmed again at once), closed when this relay is not the reader, and
one left open by a relay that lost the lease is ended by the holder (``wal_take_slot``).

Reads: a peek returns everything from the confirmed position, so the rows already in the
buffer come again first; they are skipped undecoded when the row before the new ones ends the
newest transaction read (else the slot is not where this relay left it, and all is decoded).
After a full claim the next events are read in the background (``READ_AHEAD_CLAIMS``) while
the batch in hand is published; a read is never cut short by a cancelled claim, and poison it
found stays pending until it is written to the quarantine.

Transactions: with ``atomic_max_events`` set, the events of a transaction of 2 up to that
many events carry its number (``OutboxRow.txn``) and are handed out whole: a claim takes all
of a transaction's unsettled events or none of them (when one of its keys is held back, the
transaction waits, and so do the later events of all of its keys), and a retry head comes with
the rest of its transaction. The publisher may then send them as one atomic batch.

Ids: each event decoded gets a number from a counter of this process (never reused), which
is what the loop calls a row id. ``reset()`` (a change of the reader lease) forgets the
buffer: the next claim re-reads from the slot's confirmed position.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from outbox_client.table import partition_of
from outbox_client.walframe import WAL_PREFIX, FrameError, decode
from relay.checkpoints import NO_CHECKPOINTS, Checkpoints
from relay.errors import StoreError
from relay.log import log_event
from relay.pgoutput import Transaction, ends_transaction, transactions
from relay.pgstore import PgStore
from relay.ports import Backlog, OutboxRow, Sent
from relay.walstream import SlotBusyError, SlotStream, StreamTarget, open_stream

logger = logging.getLogger("relay.walstore")

#: Prefix of the relay's own idle heartbeats (see wal_heartbeat in queries.sql).
HEARTBEAT_PREFIX = "vertector.outbox.heartbeat"
#: An idle slot is given a heartbeat at most this often.
HEARTBEAT_SECONDS = 10.0
#: While the slot moves, a running-transactions record is logged at most this often
#: (wal_snapshot): the slot's restart point, where each peek and advance starts decoding,
#: moves only past one, and PostgreSQL itself writes one every 15 s. Measured at a steady
#: 5,000 events/s: the restart point 75 MB behind after 10 s without, about 1 MB with.
SNAPSHOT_SECONDS = 0.1
#: Why wal_snapshot may be refused: the function is missing (migration 0008 not run, or
#: PostgreSQL 15 has no pg_log_standby_snapshot) or its owner may not execute it.
_SNAPSHOT_UNAVAILABLE = {"42883": "undefined_function", "42501": "insufficient_privilege"}
#: Decoded rows of the slot function per event of a one-event transaction (begin, message,
#: commit): how many rows a peek asks for.
_ROWS_PER_EVENT = 3
#: After a full claim, a read of the slot starts in the background once the events read
#: ahead, beyond that claim and those in flight, could not fill this many more claims: the
#: loop then finds the next batch decoded instead of waiting while PostgreSQL decodes it.
READ_AHEAD_CLAIMS = 2
#: RELAY_WAL_READ=stream: attempts at starting the stream while an old one holds the slot.
_TAKEOVER_ATTEMPTS = 20


@dataclass(slots=True)
class _Txn:
    end_lsn: int
    committed_at: datetime
    unsettled: set[int]
    changes: int


class WalStore:
    """Reads slot ``slot`` through publication ``publication`` on ``base``'s pool; fenced by
    the reader lease of ``owner`` (:class:`relay.walreader.WalReaderLease`)."""

    def __init__(
        self,
        base: PgStore,
        *,
        slot: str,
        publication: str,
        owner: str,
        buffer_events: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        atomic_max_events: int = 0,
        stream: StreamTarget | None = None,
        on_rows: Callable[[], None] = lambda: None,
    ) -> None:
        self.base = base
        self.stream_target = stream
        self.on_rows = on_rows
        self._stream: SlotStream | None = None
        self.atomic_max_events = atomic_max_events
        self.heartbeat_seconds = heartbeat_seconds
        self.checkpoints = checkpoints
        self.slot = slot
        self.publication = publication
        self.owner = owner
        self.buffer_events = buffer_events
        self.clock = clock
        self._slot_lock = asyncio.Lock()  # one slot function at a time: the slot is exclusive
        self._reading: asyncio.Task[None] | None = None  # the read of the slot in progress
        self._snapshots = True  # until wal_snapshot is refused as unavailable
        self._last_snapshot = -float("inf")
        self._next_id = 1
        self._epoch = 0  # reset() counts: a read begun before one is not taken in
        self.reset()

    def reset(self) -> None:
        """Forget what was read ahead: the next claim starts at the slot's confirmed position."""
        self._epoch += 1
        self._close_stream()
        self._poison: list[tuple[OutboxRow, str]] = []  # read, not yet written to quarantine
        self._rows: dict[int, OutboxRow] = {}  # unsettled events by id, in commit order
        self._types: dict[int, str] = {}  # their event types (for the quarantine)
        self._txn_of: dict[int, _Txn] = {}
        self._txns: deque[_Txn] = deque()  # read, not yet confirmed, in commit order
        self._read_lsn = 0  # end of the newest transaction read into the buffer
        self._confirmed_lsn = 0
        self._settled_lsn = 0  # end of the newest transaction of the settled prefix
        self._window = 0  # slot rows between the confirmed position and _read_lsn
        self._last_heartbeat = self.clock()

    # --- the pool is the table store's ---------------------------------------------------------

    async def open(self) -> None:
        await self.base.open()

    async def close(self) -> None:
        self._close_stream()
        await self.base.close()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    # --- reading -------------------------------------------------------------------------------

    async def claim(
        self,
        partitions: Sequence[int],
        exclude: Sequence[int],
        held_keys: Sequence[str],
        limit: int,
    ) -> list[OutboxRow]:
        if not partitions:
            # Not the reader (the lease expired on this relay's clock): a stream still open
            # would keep the slot from the relay that holds the lease now.
            self._close_stream()
            return []
        skip, held, owned = set(exclude), set(held_keys), set(partitions)
        found = self._claimable(skip, held, owned, limit)
        # Read on while the buffer cannot fill a batch (rows of held keys wait in it, and
        # the keys behind them must not starve), up to RELAY_WAL_BUFFER_EVENTS: the read
        # begun in the background if there is one, else one now.
        if len(found) < limit and len(self._rows) < self.buffer_events:
            begun = self._reading is not None
            await self._read_ahead(limit)
            found = self._claimable(skip, held, owned, limit)
            if begun and len(found) < limit and len(self._rows) < self.buffer_events:
                await self._read_ahead(limit)  # that read was too small for this claim
                found = self._claimable(skip, held, owned, limit)
        # A full claim: more is likely waiting in the slot. Begin reading it now when what
        # is left here could not fill the next claims.
        spare = len(self._rows) - len(found) - len(skip)
        if (
            len(found) >= limit
            and spare < READ_AHEAD_CLAIMS * limit
            and len(self._rows) < self.buffer_events
        ):
            self._begin_read(limit)
        return found

    def _begin_read(self, limit: int) -> None:
        """Start a read of the slot in the background unless one is in progress."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read(limit, self._epoch))

    async def _read_ahead(self, limit: int) -> None:
        """Wait for the read in progress (begun now if none was); its error is raised here,
        once. A claim cancelled meanwhile does not cancel the read: it is taken in whole."""
        self._begin_read(limit)
        task = self._reading
        assert task is not None
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._reading is task:
                self._reading = None

    def _claimable(
        self, skip: set[int], held: set[str], owned: set[int], limit: int
    ) -> list[OutboxRow]:
        found: list[OutboxRow] = []
        waiting: set[str] = set()  # keys of a transaction that waits: their later rows wait
        rows = iter(self._rows.values())
        for row in rows:
            if row.txn is None:
                if row.id in skip or row.partition_key in held or row.partition not in owned:
                    continue
                if row.partition_key in waiting:
                    continue
                found.append(row)
                if len(found) >= limit:
                    break
                continue
            group = [row, *(r for r in self._txn_rows(row) if r.id != row.id)]
            for _ in group[1:]:
                next(rows)  # a transaction's rows are consecutive in the buffer
            group = [r for r in group if r.id not in skip]  # in flight or being settled
            if not group:
                continue
            keys = {r.partition_key for r in group}
            if keys & (held | waiting) or any(r.partition not in owned for r in group):
                waiting |= keys
                continue
            if found and len(found) + len(group) > limit:
                break  # a transaction is not split between claims
            found += group
            if len(found) >= limit:
                break
        return found

    def _txn_rows(self, row: OutboxRow) -> list[OutboxRow]:
        """The unsettled rows of ``row``'s transaction, in commit order."""
        txn = self._txn_of.get(row.id)
        if txn is None:
            return [row]
        return sorted((self._rows[i] for i in txn.unsettled if i in self._rows), key=_by_id)

    async def claim_ids(self, ids: Sequence[int], partitions: Sequence[int]) -> list[OutboxRow]:
        """The heads ``ids``, each with the rest of its transaction when it has a ``txn``."""
        owned = set(partitions)
        found: dict[int, OutboxRow] = {}
        for row in (self._rows.get(i) for i in ids):
            if row is None or row.partition not in owned:
                continue
            for r in self._txn_rows(row) if row.txn is not None else [row]:
                found[r.id] = r
        return sorted(found.values(), key=_by_id)

    async def _read(self, limit: int, epoch: int) -> None:
        """Decode the transactions after those already read (about ``limit`` events)."""
        if self.stream_target is not None:
            await self._read_stream(limit, epoch)
            return
        await self._write_poison()
        for _ in range(2):
            async with self._slot_lock:
                known = self._window  # rows of the slot already in the buffer, in this order
                records = await self.base._call(
                    "fetch", "wal_peek", self.slot, known + _ROWS_PER_EVENT * limit,
                    self.publication,
                )  # fmt: skip
            if epoch != self._epoch:
                return  # the reader lease changed hands meanwhile: this read is stale
            # The slot returns what is in the buffer again first: skip it without decoding
            # when the row before the new ones ends the newest transaction read (else the slot
            # is not where this relay left it: decode all, see "stale" below).
            first = known if known and _ends(records, known - 1, self._read_lsn) else 0
            fresh = stale = 0
            for txn in transactions((r["lsn"], r["data"]) for r in islice(records, first, None)):
                if txn.end_lsn <= self._settled_lsn:
                    stale += 1  # settled here, yet the slot is before it: see below
                elif txn.end_lsn > self._read_lsn:
                    fresh += 1
                    self._read_lsn = txn.end_lsn
                    self._window += txn.changes
                    self._poison += self._add(txn)
                # else: read before, still in the buffer
            await self._write_poison()
            if not stale:
                break
            # The slot lost positions this relay confirmed (PostgreSQL restarted before the
            # checkpoint that persists them) or an advance failed: move it to where the
            # settled events end, then read again. Those events are not published twice.
            self._confirmed_lsn = 0
            await self._advance()
        await self._after_read(fresh)

    async def _after_read(self, fresh: int) -> None:
        """An idle slot gets its heartbeat; a settled head (nothing of it to publish) moves
        the slot."""
        if not fresh and not self._rows:
            await self._heartbeat()
        if self._txns and not self._txns[0].unsettled:
            await self._advance()

    async def _read_stream(self, limit: int, epoch: int) -> None:
        """Take the next transactions the walsender pushed (about ``limit`` events;
        ``RELAY_WAL_READ=stream``)."""
        await self._write_poison()
        stream = self._stream
        if stream is None or stream.closed:
            self._stream = None
            stream = await self._open_stream(epoch)
            if stream is None:
                return
        try:
            rows = stream.take(_ROWS_PER_EVENT * limit)
        except StoreError:
            self._stream = None
            raise
        fresh = 0
        for txn in transactions(rows):
            # A new stream starts at the slot's confirmed position: what was read before (in
            # the buffer, or settled) comes again first and is passed over.
            if txn.end_lsn > self._read_lsn:
                fresh += 1
                self._read_lsn = txn.end_lsn
                self._poison += self._add(txn)
        await self._write_poison()
        await self._after_read(fresh)

    async def _open_stream(self, epoch: int) -> SlotStream | None:
        """Start streaming the slot. A stream still open for a relay that lost the lease (a
        paused process, a partition) is ended first, by the lease's holder only."""
        target = self.stream_target
        assert target is not None
        for attempt in range(_TAKEOVER_ATTEMPTS):
            try:
                stream = await open_stream(
                    target.dsn, self.slot, self.publication, on_rows=self.on_rows,
                    timeout=target.timeout, application_name=target.application_name,
                )  # fmt: skip
                break
            except SlotBusyError:
                if attempt + 1 == _TAKEOVER_ATTEMPTS:
                    raise
                ended = await self.base._call("fetchval", "wal_take_slot", self.slot, self.owner)
                if ended:
                    log_event(logger, "relay.wal.stream_taken_over", slot=self.slot)
                await asyncio.sleep(0.05 * (attempt + 1))
        if epoch != self._epoch:
            stream.close()  # the reader lease changed hands meanwhile
            return None
        # After a PostgreSQL restart the slot may be behind what this relay settled.
        stream.confirm(self._settled_lsn)
        self._confirmed_lsn = self._settled_lsn
        self._stream = stream
        log_event(logger, "relay.wal.stream_started", slot=self.slot, confirmed=self._settled_lsn)
        return stream

    async def _write_poison(self) -> None:
        """Quarantine the unreadable events read (kept until written: their transactions hold
        the slot back until then)."""
        if self._poison:
            poison, epoch = self._poison, self._epoch
            await self._quarantine_rows(poison)
            if epoch == self._epoch:
                self._poison = []

    def _add(self, txn: Transaction) -> list[tuple[OutboxRow, str]]:
        entry = _Txn(txn.end_lsn, txn.committed_at, set(), txn.changes)
        self._txns.append(entry)
        poison: list[tuple[OutboxRow, str]] = []
        events = sum(prefix == WAL_PREFIX for prefix, _ in txn.messages)
        group = txn.end_lsn if 2 <= events <= self.atomic_max_events else None
        for prefix, content in txn.messages:
            if prefix != WAL_PREFIX and not _outbox_family(prefix):
                continue  # another producer's message, or the relay's heartbeat
            row_id, self._next_id = self._next_id, self._next_id + 1
            try:
                if prefix != WAL_PREFIX:
                    raise FrameError(
                        f"message prefix {prefix[:100]!r} is not {WAL_PREFIX!r} (a newer "
                        "producer's frame?): upgrade the relay"
                    )
                if not txn.transactional:
                    raise FrameError(_NOT_TRANSACTIONAL)
                frame = decode(content)
            except FrameError as exc:
                row = _unreadable(row_id, content, txn.committed_at)
                poison.append((row, f"unreadable WAL frame: {exc}"))
            else:
                row = OutboxRow(
                    id=row_id,
                    event_id=frame.event_id,
                    subject=frame.subject,
                    partition_key=frame.partition_key,
                    partition=partition_of(frame.partition_key),
                    payload=frame.payload,
                    headers=frame.headers,  # type: ignore[arg-type]  # checked by relay.checks
                    attempts=0,
                    created_at=txn.committed_at,
                    txn=group,
                )
                self._rows[row_id] = row
                self._types[row_id] = frame.event_type
            entry.unsettled.add(row_id)
            self._txn_of[row_id] = entry
        return poison

    async def _heartbeat(self) -> None:
        now = self.clock()
        if now - self._last_heartbeat < self.heartbeat_seconds:
            return
        self._last_heartbeat = now
        await self.base._call("execute", "wal_heartbeat", HEARTBEAT_PREFIX)

    # --- settling ------------------------------------------------------------------------------

    def _settle(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            self._rows.pop(row_id, None)
            self._types.pop(row_id, None)
            txn = self._txn_of.pop(row_id, None)
            if txn is not None:
                txn.unsettled.discard(row_id)

    async def _advance(self) -> int:
        """Move the slot past every settled transaction at the head; 1 when it moved."""
        while self._txns and not self._txns[0].unsettled:
            txn = self._txns.popleft()
            self._settled_lsn = txn.end_lsn
            self._window -= txn.changes
        target = self._settled_lsn
        if target <= self._confirmed_lsn:
            return 0
        if self.stream_target is not None:
            if self._stream is None or self._stream.closed:
                return 0  # the next stream confirms it when it starts
            self._stream.confirm(target)  # a status update: no statement, no round trip
            self._confirmed_lsn = target
            await self._snapshot()
            return 1
        async with self._slot_lock:
            confirmed = await self.base._call(
                "fetchval", "wal_advance", self.slot, target, self.owner
            )
        if confirmed is None:
            log_event(logger, "relay.wal.not_reader", level=logging.WARNING, slot=self.slot)
            return 0
        self._confirmed_lsn = int(confirmed)
        await self._snapshot()
        return 1

    async def _snapshot(self) -> None:
        now = self.clock()
        if not self._snapshots or now - self._last_snapshot < SNAPSHOT_SECONDS:
            return
        self._last_snapshot = now
        try:
            await self.base._call("fetchval", "wal_snapshot", self.slot, self.owner)
        except StoreError as exc:
            state = getattr(exc.__cause__, "sqlstate", None)
            if state not in _SNAPSHOT_UNAVAILABLE:
                raise
            self._snapshots = False
            log_event(
                logger, "relay.wal.snapshot_unavailable", level=logging.WARNING,
                error=_SNAPSHOT_UNAVAILABLE[state], detail=str(exc),
                effect="each read of the slot decodes the WAL since PostgreSQL's last "
                "running-transactions record (every 15 s): slower reads, more CPU",
                fix="run migrations (vertector-relay migrate: 0008) on PostgreSQL 16+, as a "
                "superuser or an owner granted EXECUTE ON FUNCTION pg_log_standby_snapshot()",
            )  # fmt: skip

    async def mark_sent(self, sent: Sequence[Sent]) -> int:
        ids = [s.row_id for s in sent if s.row_id in self._rows]
        self._settle(ids)
        if self.checkpoints.armed("mid_mark"):
            # Fault suite only: the slot's advance is on the wire when the process dies.
            task = asyncio.ensure_future(self._advance())
            await asyncio.sleep(0)
            self.checkpoints.reached("mid_mark")
            await task
        else:
            await self._advance()
        return len(ids)

    async def record_failures(self, failures: Sequence[tuple[int, str]]) -> None:
        for row_id, _ in failures:
            row = self._rows.get(row_id)
            if row is not None:
                self._rows[row_id] = replace(row, attempts=row.attempts + 1)

    async def quarantine(self, rows: Sequence[tuple[int, str]]) -> None:
        known = [(self._rows[i], reason) for i, reason in rows if i in self._rows]
        if known:
            await self._quarantine_rows(known)
        await self._advance()

    async def _quarantine_rows(self, rows: Sequence[tuple[OutboxRow, str]]) -> None:
        settle = [r.id for r, _ in rows]
        rows = await self._new_to_quarantine(rows)
        if rows:
            await self._insert_quarantined(rows)
        self._settle(settle)

    async def _new_to_quarantine(
        self, rows: Sequence[tuple[OutboxRow, str]]
    ) -> list[tuple[OutboxRow, str]]:
        """``rows`` but those whose event id is quarantined already (or earlier in ``rows``):
        a producer retrying a poison event writes it again under the same id, which is the
        same event (as JetStream's deduplication has it); the first row of it is kept."""
        found = await self.base._call(
            "fetch", "wal_quarantined_ids", list({r.event_id for r, _ in rows})
        )
        seen = {record["event_id"] for record in found}
        fresh: list[tuple[OutboxRow, str]] = []
        repeated: list[str] = []
        for row, reason in rows:
            if row.event_id in seen:
                repeated.append(str(row.event_id))
                continue
            seen.add(row.event_id)
            fresh.append((row, reason))
        if repeated:
            log_event(
                logger, "relay.wal.quarantined_again", level=logging.WARNING,
                count=len(repeated), event_ids=repeated[:10],
                detail="poison events whose event id is quarantined already: the first one "
                "is kept (dead-letters show <event id>), these are not written again",
            )  # fmt: skip
        return fresh

    async def _insert_quarantined(self, rows: Sequence[tuple[OutboxRow, str]]) -> None:
        await self.base._call(
            "execute",
            "wal_quarantine",
            [r.event_id for r, _ in rows],
            [self._types.get(r.id, "") for r, _ in rows],
            [r.subject for r, _ in rows],
            [r.partition_key for r, _ in rows],
            [r.payload for r, _ in rows],
            [_headers_json(r) for r, _ in rows],
            [r.attempts + 1 for r, _ in rows],
            [reason for _, reason in rows],
            [r.created_at for r, _ in rows],
            self.slot,
            self.owner,
        )

    # --- the rest of the port ------------------------------------------------------------------

    async def purge(self, older_than_seconds: float, limit: int) -> int:
        return 0  # nothing is kept: a PubAck only moves the slot

    async def vacuum(self) -> None:
        return None

    async def can_vacuum(self) -> bool:
        return False  # no queue table to vacuum

    async def waiting_subjects(self, limit: int) -> list[str]:
        return sorted({r.subject[:1024] for r in self._rows.values()})[:limit]

    async def backlog(self) -> Backlog:
        """Read ahead but unsettled events, the age of the oldest unconfirmed transaction's
        commit, and the quarantine (rows of outbox_events)."""
        quarantined = await self.base._call("fetchval", "wal_quarantined_count")
        oldest = self._txns[0].committed_at if self._txns else None
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        return Backlog(pending=len(self._rows), oldest_age_seconds=age, quarantined=quarantined)

    @property
    def confirmed_lsn(self) -> int:
        return self._confirmed_lsn


def _outbox_family(prefix: str) -> bool:
    """A prefix of the outbox's (``vertector.outbox.``) other than the relay's heartbeat: an
    event this relay cannot read must be quarantined, not passed over as another's message."""
    return prefix.startswith(_FAMILY) and prefix != HEARTBEAT_PREFIX


_FAMILY = WAL_PREFIX.rsplit(".", 1)[0] + "."
_NOT_TRANSACTIONAL = (
    "a non-transactional message (pg_logical_emit_message(false, ...)): decoded whether or not "
    "its transaction committed, it may be a phantom; an outbox event exists only if its "
    "transaction commits (enqueue writes transactional messages)"
)


def _ends(records: Sequence[Any], index: int, lsn: int) -> bool:
    """Whether slot row ``index`` of ``records`` ends the transaction that ends at ``lsn``."""
    if index >= len(records):
        return False
    record = records[index]
    return ends_transaction(record["lsn"], record["data"]) == lsn


def _by_id(row: OutboxRow) -> int:
    return row.id


def _headers_json(row: OutboxRow) -> str:
    try:
        return json.dumps(row.headers)
    except (TypeError, ValueError, RecursionError):
        return "{}"


def _unreadable(row_id: int, content: bytes, committed_at: datetime) -> OutboxRow:
    try:
        event_id = uuid.UUID(bytes=content[1:17])
    except ValueError:
        event_id = uuid.uuid4()
    return OutboxRow(
        id=row_id, event_id=event_id, subject="", partition_key="", partition=0,
        payload=content, headers={}, attempts=0, created_at=committed_at,
    )  # fmt: skip

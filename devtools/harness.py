"""Fault-suite machinery: relays as real processes, a workload that commits out of order and
rolls back, and a checker that counts lost, duplicated, phantom and out-of-order events."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import api as js_api
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.processes import RelayProcess
from outbox_client import CourseUpdatedEvent, enqueue
from outbox_client.capture import capture_mode

#: Short leases and timeouts, so that each fault shows its effect in seconds.
FAULT_SETTINGS = {
    "RELAY_LEASE_SECONDS": "2",
    "RELAY_BATCH_SIZE": "200",
    "RELAY_PUBLISH_TIMEOUT_SECONDS": "2",
    "RELAY_RETRY_BACKOFF_MAX_SECONDS": "1",
    "RELAY_POLL_INTERVAL_SECONDS": "0.2",
    "NATS_RECONNECT_WAIT_SECONDS": "0.2",
    "NATS_PING_INTERVAL_SECONDS": "1",
    "NATS_MAX_OUTSTANDING_PINGS": "2",
}


class FaultRelay(RelayProcess):
    """A relay process with :data:`FAULT_SETTINGS` (each overridable)."""

    def __init__(self, database_url: str, nats_url: str, name: str, **env: str) -> None:
        super().__init__(database_url, nats_url, name, **(FAULT_SETTINGS | env))


@dataclass
class Workload:
    """Producers committing events of their own keys, in per-key sequence, with transactions
    held open at random (so commits land out of id order) and a share rolled back."""

    engine: AsyncEngine
    producers: int = 6
    keys_per_producer: int = 5
    rollback_share: float = 0.2
    jitter: float = 0.02
    committed: dict[uuid.UUID, tuple[str, int]] = field(default_factory=dict)
    rolled_back: set[uuid.UUID] = field(default_factory=set)
    unknown: set[uuid.UUID] = field(default_factory=set)  # the database failed mid-commit
    transactions: list[tuple[uuid.UUID, ...]] = field(default_factory=list)  # committed ones
    wal_end: int = 0  # WAL capture: a position before the end of the last commit
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _producer(self, p: int, limit: int | None) -> None:
        rng = random.Random(p)
        seqs = dict.fromkeys((f"P{p}K{k}" for k in range(self.keys_per_producer)), 0)
        done = 0
        wal = capture_mode() == "wal"
        while not self._stop.is_set() and (limit is None or done < limit):
            key = rng.choice(list(seqs))
            events = []
            for _ in range(rng.randint(1, 3)):
                seqs[key] += 1
                events.append(
                    CourseUpdatedEvent(course_code=key, credits=1, description=str(seqs[key]))
                )
            rollback = rng.random() < self.rollback_share
            try:
                async with self.engine.connect() as conn:
                    trans = await conn.begin()
                    for event in events:
                        await enqueue(conn, event)
                    await asyncio.sleep(rng.random() * self.jitter)
                    if wal and not rollback:
                        # Its commit ends after this: the slot is drained once confirmed past.
                        lsn = await conn.scalar(text(_INSERT_LSN))
                        self.wal_end = max(self.wal_end, int(lsn))
                    if rollback:
                        await trans.rollback()
                    else:
                        await trans.commit()
            except Exception:  # a database fault mid-transaction: its fate is unknown
                seqs[key] -= len(events)
                await asyncio.sleep(0.05)
                self.unknown.update(e.event_id for e in events)
                continue
            if rollback:
                seqs[key] -= len(events)
                self.rolled_back.update(e.event_id for e in events)
            else:
                for event in events:
                    self.committed[event.event_id] = (key, int(event.description or 0))
                self.transactions.append(tuple(e.event_id for e in events))
                done += len(events)

    async def run(self, per_producer: int | None = None) -> None:
        await asyncio.gather(*(self._producer(p, per_producer) for p in range(self.producers)))

    def stop(self) -> None:
        self._stop.set()


@dataclass
class DeliveryReport:
    """What reached the stream, checked against what was committed (:func:`check`)."""

    lost: int
    stream_duplicates: int
    phantoms: int
    order_violations: int
    delivered: int
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"delivered {self.delivered}: lost {self.lost}, duplicates {self.stream_duplicates}, "
            f"phantoms {self.phantoms}, order violations {self.order_violations} "
            f"{self.examples[:5]}"
        )


def check(workload: Workload, stream: list[tuple[uuid.UUID, str, int]]) -> DeliveryReport:
    """``stream``: (event id, key, sequence) in stream order."""
    ids = [s[0] for s in stream]
    seen = set(ids)
    committed = set(workload.committed)
    lost = len(committed - seen)
    phantoms = len(seen - committed - workload.unknown)
    duplicates = len(ids) - len(seen)
    last: dict[str, int] = {}
    violations = 0
    examples: list[str] = []
    first_seen: set[uuid.UUID] = set()
    for event_id, key, seq in stream:
        if event_id in first_seen:
            continue  # a duplicate is counted above, not as disorder
        first_seen.add(event_id)
        if seq <= last.get(key, 0):
            violations += 1
            examples.append(f"{key}: {seq} after {last.get(key, 0)}")
        last[key] = max(seq, last.get(key, 0))
    return DeliveryReport(lost, duplicates, phantoms, violations, len(seen & committed), examples)


_INSERT_LSN = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
_SLOT_BEHIND = (
    "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
    " AND (confirmed_flush_lsn - '0/0'::pg_lsn) < :end"
)


async def _unsent(engine: AsyncEngine, wal_end: int = 0) -> int:
    """Rows not yet sent (table capture), or 1 while the slot is not confirmed past the last
    commit (WAL capture: there are no rows to count)."""
    if capture_mode() == "wal":
        async with engine.connect() as conn:
            return int((await conn.execute(text(_SLOT_BEHIND), {"end": wal_end})).scalar_one())
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT count(*) FROM outbox_events"
                " WHERE sent_at IS NULL AND quarantined_at IS NULL"
            )
        )
        return int(result.scalar_one())


def assert_clean(report: DeliveryReport, relays: list[FaultRelay]) -> None:
    """0 lost, 0 stream duplicates, 0 phantoms, 0 order violations; else the relays' logs."""
    v = report
    logs = "\n---\n".join(r.tail() for r in relays)
    assert (v.lost, v.stream_duplicates, v.phantoms, v.order_violations) == (0, 0, 0, 0), (
        f"{v}\n{logs}"
    )


async def connect(nats_url: str) -> Client:
    """A client of ``nats_url``: one server or a comma-separated cluster's."""
    return await nats.connect(servers=nats_url.split(","), connect_timeout=2)


async def stream_leader(
    nats_url: str, stream: str = "ACADEMIC_EVENTS", *, other_than: str | None = None
) -> str:
    """The server name of the stream's current leader, waiting out an election.

    With `other_than` (a node just killed or paused), wait until the servers asked report a
    different leader: right after a node goes silent its peers still name it until their
    election timeout passes, so one look would only read back the old leader."""
    deadline = asyncio.get_running_loop().time() + 30.0
    seen = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            nc = await connect(nats_url)
        except (TimeoutError, OSError, nats.errors.Error):
            continue  # a paused node: try again (servers are picked at random)
        try:
            info = await nc.jetstream().stream_info(stream)
            if info.cluster is not None and info.cluster.leader:
                seen = str(info.cluster.leader)
                if seen != other_than:
                    return seen
        except (TimeoutError, nats.errors.Error):
            pass  # no leader yet: the election is running
        finally:
            await nc.close()
        await asyncio.sleep(0.2)
    wanted = f"a leader other than {other_than}" if other_than else "a leader"
    raise AssertionError(f"stream {stream} has had no {wanted} for 30 s (last seen: {seen})")


async def create_test_stream(
    nats_url: str,
    duplicate_window: float = 120,
    replicas: int = 1,
    *,
    allow_atomic: bool | None = None,
) -> None:
    """A LIMITS stream (so that it can be read back whole) over every academic subject. With
    ``allow_atomic`` (by default: when capturing from the WAL) it takes atomic batches, so a
    WAL relay sends each transaction as one (a server older than 2.12 ignores the setting and
    the relay goes event by event)."""
    if allow_atomic is None:
        allow_atomic = capture_mode() == "wal"
    nc = await connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name in ("ACADEMIC_EVENTS", "NOTES_EVENTS", "DEAD_LETTERS"):
                await js.delete_stream(info.config.name)
        await js.add_stream(js_api.StreamConfig(
            name="ACADEMIC_EVENTS", subjects=["academic.>"], duplicate_window=duplicate_window,
            num_replicas=replicas, allow_atomic=True if allow_atomic else None,
        ))  # fmt: skip
        await js.add_stream(
            js_api.StreamConfig(name="NOTES_EVENTS", subjects=["notes.>"], num_replicas=replicas)
        )
    finally:
        await nc.close()


async def read_stream(nats_url: str) -> list[tuple[uuid.UUID, str, int]]:
    import json

    nc = await connect(nats_url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info("ACADEMIC_EVENTS")).state.messages
        out: list[tuple[uuid.UUID, str, int]] = []
        if not total:
            return out
        sub = await js.subscribe(
            "academic.>", stream="ACADEMIC_EVENTS", ordered_consumer=True,
            pending_msgs_limit=total + 100,
        )  # fmt: skip
        while len(out) < total:
            msg = await sub.next_msg(timeout=10)
            body = json.loads(msg.data)
            out.append((uuid.UUID(body["event_id"]), body["course_code"], int(body["description"])))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def wait_drained(nats_url: str, workload: Workload, timeout: float = 90) -> list[Any]:
    """Wait until every committed event is in the stream and the outbox holds no unsent row
    (re-publishes of unmarked rows are done), or time runs out; return the stream."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    nc = await connect(nats_url)
    try:
        js = nc.jetstream()
        while loop.time() < deadline:
            stored = (await js.stream_info("ACADEMIC_EVENTS")).state.messages
            drained = not await _unsent(workload.engine, workload.wal_end)
            if stored >= len(workload.committed) and drained:
                break
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    await asyncio.sleep(1.0)  # let stragglers (duplicates) land before counting
    return await read_stream(nats_url)


async def under_load(
    workload: Workload,
    nats_url: str,
    relays: list[FaultRelay],
    faults: Callable[[], Awaitable[None]],
) -> DeliveryReport:
    """The frame of most fault scenarios: start the relays, produce while ``faults`` runs,
    stop producing, wait for the stream to hold every committed event, stop the relays
    (off the loop: a proxy may run on it) and count. Asserts nothing."""
    for relay in relays:
        if not relay.alive:
            relay.start()
    producing = asyncio.create_task(workload.run())
    try:
        await faults()
    finally:
        workload.stop()
        await producing
    try:
        stream = await wait_drained(nats_url, workload)
    finally:
        for relay in relays:
            await asyncio.to_thread(relay.stop)
    return check(workload, stream)

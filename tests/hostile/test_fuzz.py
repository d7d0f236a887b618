"""A property-based fuzz of raw rows: hypothesis draws subjects, headers (any JSON a producer
could store), payloads and keys; they are inserted straight into the outbox, as an insert-only
producer role may, while a steady flow of good events runs through ``enqueue``.

Properties: every good event is published, once, in per-key order, and none waits more than a
few seconds; every hostile row ends quarantined with a reason or published (never pending,
never retried for ever), and nothing reserved is ever published; no stream's message count
ever drops and no stream disappears; the relay never stops.

``VERTECTOR_FUZZ_ROWS`` (default 1500, the CI profile) and ``VERTECTOR_FUZZ_SEED`` size and
reproduce a run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence

import asyncpg
import nats
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from outbox_client import enqueue
from tests.harness import asyncpg_url
from tests.hostile.rows import RawRow, good
from tests.relayrun import (
    apply_default_streams,
    engine,
    event_ids,
    jetstream,
    running_relay,
    stream_messages,
)

ROWS = int(os.environ.get("VERTECTOR_FUZZ_ROWS", "1500"))
SEED = int(os.environ.get("VERTECTOR_FUZZ_SEED", "20261129"))
#: Longest a good event may take from commit to the stream, on a busy 2-core machine.
MAX_DELAY_SECONDS = 5.0
STREAMS = ("ACADEMIC_EVENTS", "NOTES_EVENTS")
GOOD_KEYS = [f"G{i}" for i in range(8)]
BIG = b"x" * 1_100_000  # over the server's max_payload

# PostgreSQL text and jsonb hold neither NUL nor lone surrogates: no producer can store them.
_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
_text = st.text(_chars, max_size=30)
_token = st.one_of(
    st.sampled_from(["academic", "course", "notes", "created", "*", ">", "", " ", "$JS", "_INBOX"]),
    _text,
)
_subjects = st.one_of(
    st.sampled_from(
        [
            "$JS.API.STREAM.PURGE.ACADEMIC_EVENTS",
            "$JS.API.STREAM.DELETE.NOTES_EVENTS",
            "$JS.API.STREAM.DELETE.ACADEMIC_EVENTS",
            "$JS.API.CONSUMER.CREATE.ACADEMIC_EVENTS",
            "$JS.ACK.ACADEMIC_EVENTS.x.1.1.1.1.1",
            "$SYS.REQ.SERVER.PING",
            "$KV.config.x",
            "$O.bucket.x",
            "_INBOX.someone.else",
            "_R_.reply",
            "academic.course.updated",  # valid: published when the rest of the row is
            "notes.created",
            "academic.course",  # captured by no stream
            "payroll.salaries",
        ]
    ),
    st.lists(_token, min_size=1, max_size=6).map(".".join),
    _text,
    st.integers(1025, 5000).map(lambda n: "a" * n),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
_header_names = st.one_of(
    st.sampled_from(
        [
            "Nats-Msg-Id", "Nats-Rollup", "Nats-TTL", "Nats-Expected-Last-Sequence",
            "nats-expected-stream", "Vertector-Event-Type", "Vertector-Partition-Key",
            "traceparent", "bad name", "x:y", "",
        ]
    ),
    _text,
)  # fmt: skip
_header_values = st.one_of(
    _text,
    st.sampled_from(["a\r\nInjected: yes", "v\n", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]),
    st.integers(60_000, 70_000).map(lambda n: "v" * n),
)
_headers = st.one_of(
    st.dictionaries(_header_names, _header_values, max_size=5).map(json.dumps),
    _json.map(json.dumps),
    st.integers(1001, 1800).map(lambda n: "[" * n + "]" * n),  # deeper than Python reads
    st.just('{"x": ' + "9" * 5000 + "}"),
)
_payloads = st.tuples(st.integers(0, 49), st.binary(max_size=300)).map(
    lambda t: BIG if t[0] == 0 else t[1]
)
_keys = st.one_of(st.sampled_from(GOOD_KEYS), _text.filter(bool), st.just("k" * 100_000))
_rows = st.builds(RawRow, subject=_subjects, headers=_headers, payload=_payloads, key=_keys)


def hostile_rows(count: int) -> list[RawRow]:
    """``count`` rows drawn by hypothesis (generation only: nothing here can fail)."""
    drawn: list[RawRow] = []

    @seed(SEED)
    @settings(
        max_examples=count, database=None, phases=[Phase.generate], deadline=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(_rows)
    def draw(row: RawRow) -> None:
        drawn.append(row)

    draw()
    return drawn


def must_be_quarantined(row: RawRow) -> bool:
    """What the fuzz knows without the relay's own code: reserved subjects, headers that are
    not a JSON object, ``Nats-*`` header names and oversize payloads never go out."""
    if row.subject[:1] in ("$", "_") or row.payload is BIG:
        return True
    try:
        headers = json.loads(row.headers)
    except (RecursionError, ValueError):
        return True
    if not isinstance(headers, dict):
        return True
    return any(name.lower().startswith("nats-") for name in headers)


async def _insert(conn: asyncpg.Connection, rows: Sequence[RawRow]) -> None:
    await conn.executemany(
        "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload, headers)"
        " VALUES ($1, 'hostile', $2, $3, $4, $5::jsonb)",
        [(r.event_id, r.subject, r.key, r.payload, r.headers) for r in rows],
    )


async def test_hostile_rows_beside_a_good_flow(database_url: str, nats_url: str) -> None:
    hostile = hostile_rows(ROWS)
    await apply_default_streams(nats_url)
    committed: dict[uuid.UUID, float] = {}
    order: dict[str, list[uuid.UUID]] = defaultdict(list)
    arrived: dict[uuid.UUID, float] = {}
    arrivals: list[uuid.UUID] = []
    counts: dict[str, list[int]] = {name: [] for name in STREAMS}
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        event_id = uuid.UUID(msg.headers["Nats-Msg-Id"]) if msg.headers else None
        if event_id is not None:
            arrived.setdefault(event_id, time.monotonic())
            arrivals.append(event_id)

    async def good_flow(eng: object) -> None:
        i = 0
        while not done.is_set():
            event = good(GOOD_KEYS[i % len(GOOD_KEYS)])
            async with eng.begin() as conn:  # type: ignore[attr-defined]
                await enqueue(conn, event)
            committed[event.event_id] = time.monotonic()
            order[event.course_code].append(event.event_id)
            i += 1
            await asyncio.sleep(0.02)

    async def watch_streams() -> None:
        async with jetstream(nats_url) as js:
            while not done.is_set():
                for name in STREAMS:
                    try:
                        counts[name].append((await js.stream_info(name)).state.messages)
                    except NotFoundError:
                        counts[name].append(-1)  # the stream is gone
                await asyncio.sleep(0.1)

    async def hostile_flow() -> None:
        conn = await asyncpg.connect(asyncpg_url(database_url))
        try:
            for start in range(0, len(hostile), 50):
                async with conn.transaction():
                    await _insert(conn, hostile[start : start + 50])
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    listener = await nats.connect(nats_url)
    await listener.subscribe("academic.>", cb=on_message)
    await listener.subscribe("notes.>", cb=on_message)
    started = time.monotonic()
    try:
        async with (
            engine(database_url) as eng,
            running_relay(database_url, nats_url, retry_backoff_seconds=0.05) as app,
        ):
            tasks = [asyncio.create_task(good_flow(eng)), asyncio.create_task(watch_streams())]
            await asyncio.sleep(1.0)
            await hostile_flow()
            await asyncio.sleep(1.0)
            done.set()
            await asyncio.gather(*tasks)
            pending = await _wait_drained(database_url)
            assert not pending, f"{len(pending)} rows still waiting: {pending[:5]}"
            await asyncio.sleep(0.5)
            assert app.stats.published >= len(committed)
    finally:
        await listener.close()
    elapsed = time.monotonic() - started
    rows = await _final_rows(database_url, hostile)
    stored = event_ids(await stream_messages(nats_url, "ACADEMIC_EVENTS"))

    # Good events: all stored once, per key in commit order, none late.
    good_ids = set(committed)
    received = [e for e in stored if e in good_ids]
    assert set(received) == good_ids, f"{len(good_ids - set(received))} good events lost"
    assert len(received) == len(good_ids), "a good event was stored twice"
    for key, ids in order.items():
        assert [e for e in received if e in set(ids)] == ids, f"key {key} out of order"
    delays = sorted(arrived[e] - committed[e] for e in good_ids)
    assert delays[-1] < MAX_DELAY_SECONDS, f"a good event took {delays[-1]:.1f} s"

    # Hostile rows: quarantined with a reason or published; nothing reserved went out.
    published = {e for e in arrivals if e not in good_ids}
    for row in hostile:
        state = rows.get(row.event_id)
        if state is None:  # deleted on its PubAck
            assert row.event_id in published, f"row lost: {row.subject[:60]!r}"
            assert not must_be_quarantined(row), (
                f"published: {row.subject[:60]!r} {row.headers[:80]}"
            )
        else:
            assert state, f"quarantined without a reason: {row.subject[:60]!r}"
    for name, seen in counts.items():
        assert seen and min(seen) >= 0, f"stream {name} disappeared"
        assert all(a <= b for a, b in itertools.pairwise(seen)), f"{name} lost messages"
    quarantined = sum(1 for reason in rows.values() if reason)
    print(
        f"\nfuzz: {len(hostile)} hostile rows ({quarantined} quarantined, "
        f"{len(hostile) - len(rows)} published), {len(good_ids)} good events, "
        f"delay p50 {delays[len(delays) // 2] * 1000:.0f} ms max {delays[-1] * 1000:.0f} ms, "
        f"{elapsed:.1f} s"
    )


async def _wait_drained(database_url: str, timeout: float = 60) -> list[str]:
    """Wait until no row waits; what still waits at the deadline (for the failure message)."""
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        deadline = time.monotonic() + timeout
        while True:
            pending = await conn.fetch(
                "SELECT left(subject, 40) AS subject, left(partition_key, 20) AS key, attempts,"
                " last_error FROM outbox_events"
                " WHERE sent_at IS NULL AND quarantined_at IS NULL ORDER BY attempts DESC, id"
            )
            if not pending or time.monotonic() > deadline:
                return [str(dict(r)) for r in pending]
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _final_rows(database_url: str, rows: Sequence[RawRow]) -> dict[uuid.UUID, str]:
    """Event id -> quarantine reason of the hostile rows still in the table."""
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        records = await conn.fetch(
            "SELECT event_id, coalesce(last_error, '') AS reason FROM outbox_events"
            " WHERE event_id = ANY($1::uuid[])",
            [r.event_id for r in rows],
        )
    finally:
        await conn.close()
    return {r["event_id"]: r["reason"] for r in records}

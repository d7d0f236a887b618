"""WAL capture's hostile input: frames written straight with ``pg_logical_emit_message`` under
the outbox's prefix, as a producer in another language (or a bug) could write them, but not
as ``outbox_client.walframe`` encodes them. Each is quarantined with a reason naming what is
wrong; the good events around it (before, after, in the same transaction) are published in
commit order, and the slot moves past all of it: nothing stops relaying."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
from sqlalchemy import LargeBinary, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox_client import CourseUpdatedEvent, enqueue
from outbox_client.walframe import _HEAD, VERSION, WAL_PREFIX
from relay.settings import RelaySettings
from tests.harness import asyncpg_url
from tests.relayrun import (
    apply_default_streams,
    engine,
    event_ids,
    running_relay,
    stream_messages,
    wait_for_messages,
)

SUBJECT = "academic.course.updated"


def raw(
    event_id: uuid.UUID,
    *,
    subject: bytes = SUBJECT.encode(),
    key: bytes = b"H",
    headers: bytes = b"{}",
    payload: bytes = b"{}",
    event_type: bytes = b"academic.course.updated",
    version: int = VERSION,
) -> bytes:
    """A frame laid out as walframe's, each field given as bytes (any bytes)."""
    parts = [event_type, subject, key, headers]
    head = _HEAD.pack(version, event_id.bytes, *(len(p) for p in parts))
    return b"".join((head, *parts, payload))


def hostile() -> dict[str, tuple[bytes, str]]:
    """Frame -> what its quarantine reason says, by case (each frame its own event id)."""
    ids = iter(uuid.uuid4, None)
    whole = raw(next(ids), payload=b'{"a": 1}')
    lengths = _HEAD.pack(VERSION, next(ids).bytes, 23, 2**32 - 1, 1, 2)
    return {
        "header value not a string": (raw(next(ids), headers=b'{"x": 1}'), "value of type int"),
        "headers a list": (raw(next(ids), headers=b"[1, 2]"), "headers of type list"),
        "headers not JSON": (raw(next(ids), headers=b"{x"), "frame headers are not JSON"),
        "headers nested past the recursion limit": (
            raw(next(ids), headers=b"[" * 5000 + b"]" * 5000),
            "RecursionError",
        ),
        "headers with a 5000-digit number": (
            raw(next(ids), headers=b'{"x": ' + b"9" * 5000 + b"}"),
            "not JSON",
        ),
        "header with CR LF": (
            raw(next(ids), headers=b'{"x": "a\\r\\nInjected: yes"}'),
            "CR, LF or NUL",
        ),
        "reserved header": (raw(next(ids), headers=b'{"Nats-Msg-Id": "forged"}'), "reserved"),
        "header block over the limit": (
            raw(next(ids), headers=json.dumps({"x": "v" * 70_000}).encode()),
            "header block",
        ),
        "payload over max_payload": (raw(next(ids), payload=b"x" * 1_100_000), "max_payload"),
        "unknown frame version": (
            raw(next(ids), version=VERSION + 1),
            f"frame version {VERSION + 1} is not",
        ),
        "version 0": (raw(next(ids), version=0), "frame version 0 is not"),
        "empty": (b"", "shorter than its"),
        "shorter than the head": (b"\x01" + next(ids).bytes[:9], "shorter than its"),
        "truncated in its fields": (whole[: _HEAD.size + 10], "frame truncated"),
        "a length past the end": (lengths + b"x" * 40, "frame truncated"),
        "subject not UTF-8": (raw(next(ids), subject=b"academic.\xff\xfe"), "not UTF-8"),
        "key not UTF-8": (raw(next(ids), key=b"\xc3\x28"), "not UTF-8"),
        "headers not UTF-8": (raw(next(ids), headers=b'{"x": "\xff"}'), "not UTF-8"),
        "NUL in the key": (raw(next(ids), key=b"H\x00"), "NUL"),
        "NUL in the event type": (raw(next(ids), event_type=b"t\x00"), "NUL"),
        "NUL in a header (JSON escape)": (raw(next(ids), headers=b'{"x": "a\\u0000"}'), "NUL"),
        "NUL in a header name": (raw(next(ids), headers=b'{"x\\u0000": "a"}'), "NUL"),
        "subject with a space": (raw(next(ids), subject=b"academic. course"), "invalid subject"),
        "subject empty": (raw(next(ids), subject=b""), "invalid subject"),
        "wildcard subject": (raw(next(ids), subject=b"academic.course.*"), "wildcard"),
    }


def good(n: int) -> CourseUpdatedEvent:
    return CourseUpdatedEvent(course_code=f"G{n % 3}", credits=1, description=str(n))


_EMIT = text("SELECT pg_logical_emit_message(true, :prefix, :frame)").bindparams(
    bindparam("frame", type_=LargeBinary())
)


async def emit(eng: AsyncEngine, *items: bytes | CourseUpdatedEvent) -> int:
    """One transaction: raw frames, and events as enqueue writes them, in this order. Returns
    a WAL position its commit ends after."""
    async with eng.begin() as conn:
        for item in items:
            if isinstance(item, bytes):
                await conn.execute(_EMIT, {"prefix": WAL_PREFIX, "frame": item})
            else:
                await enqueue(conn, item)
        return int(await conn.scalar(text(_INSERT_LSN)))


_INSERT_LSN = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
_CONFIRMED = (
    "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots"
    " WHERE slot_name = $1"
)


async def wait_confirmed_past(conn: asyncpg.Connection, url: str, lsn: int) -> int:
    """Wait (10 s at most) for the relay to confirm the slot past ``lsn``; where it is."""
    slot = RelaySettings(database_url=url).slot_name
    for _ in range(100):
        confirmed = int(await conn.fetchval(_CONFIRMED, slot))
        if confirmed > lsn:
            break
        await asyncio.sleep(0.1)
    return confirmed


async def test_hostile_frames_are_quarantined_with_their_reason_and_the_rest_flows(
    wal_database_url: str, nats_url: str
) -> None:
    url = wal_database_url
    await apply_default_streams(nats_url)
    cases = hostile()
    goods: list[CourseUpdatedEvent] = []
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        async with engine(url) as eng:
            for n, (frame, _) in enumerate(cases.values()):
                before, inside, after = good(3 * n), good(3 * n + 1), good(3 * n + 2)
                goods += [before, inside, after]
                await emit(eng, before)
                await emit(eng, frame, inside)  # a transaction shared with a good one
                end = await emit(eng, after)
            async with running_relay(url, nats_url, capture="wal", retry_backoff_seconds=0.05):
                assert await wait_for_messages(nats_url, len(goods), timeout=60) == len(goods)
                for _ in range(200):
                    rows = await conn.fetch("SELECT event_id, last_error, payload FROM outbox_events"
                                        " WHERE quarantined_at IS NOT NULL")  # fmt: skip
                    if len(rows) >= len(cases):
                        break
                    await asyncio.sleep(0.05)
                confirmed = await wait_confirmed_past(conn, url, end)
            ids = event_ids(await stream_messages(nats_url))
            assert sorted(ids) == sorted(e.event_id for e in goods)  # each good one, once
            for key in ("G0", "G1", "G2"):  # in commit order
                mine = [e.event_id for e in goods if e.partition_key == key]
                assert [i for i in ids if i in mine] == mine
            # Every hostile frame is in the quarantine, its reason naming what is wrong.
            by_payload = {bytes(r["payload"]): r["last_error"] for r in rows}
            reasons = {r["event_id"]: r["last_error"] for r in rows}
            missing = []
            for case, (frame, expected) in cases.items():
                reason = reasons.get(uuid.UUID(bytes=frame[1:17])) if len(frame) >= 17 else None
                reason = reason or by_payload.get(frame)
                if reason is None or expected not in reason:
                    missing.append(f"{case}: {reason!r} (wanted {expected!r})")
            assert not missing, "\n".join(missing)
            assert len(rows) == len(cases)
            assert confirmed > end, "the slot was not confirmed past the last transaction"
    finally:
        await conn.close()


async def test_a_frame_whose_payload_is_not_utf8_is_carried_as_bytes(
    wal_database_url: str, nats_url: str
) -> None:
    """The relay carries a payload's bytes as they are, as in table mode (the contract check,
    RELAY_VALIDATE_RAW_ROWS, judges payloads of governed types)."""
    url = wal_database_url
    await apply_default_streams(nats_url)
    event_id = uuid.uuid4()
    async with engine(url) as eng:
        await emit(eng, raw(event_id, payload=b"\xff\xfe\x00 not JSON"))
    async with running_relay(url, nats_url, capture="wal"):
        assert await wait_for_messages(nats_url, 1) == 1
    [message] = await stream_messages(nats_url)
    assert message.data == b"\xff\xfe\x00 not JSON"
    assert message.headers["Nats-Msg-Id"] == str(event_id)


async def test_a_quarantined_event_id_seen_again_does_not_stop_the_slot(
    wal_database_url: str, nats_url: str
) -> None:
    """A producer that retries a poison event writes its frame again, with the same event id
    (and the same hostile bytes twice in one transaction): the quarantine keeps the first and
    says so, and the slot moves on."""
    url = wal_database_url
    await apply_default_streams(nats_url)
    poison = uuid.uuid4()
    frame = raw(poison, subject=b"academic. bad")
    after = good(1)
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        async with engine(url) as eng:
            await emit(eng, frame)
            await emit(eng, frame, frame)
            end = await emit(eng, after)
        async with running_relay(url, nats_url, capture="wal"):
            assert await wait_for_messages(nats_url, 1) == 1
            confirmed = await wait_confirmed_past(conn, url, end)
        rows = await conn.fetch("SELECT event_id, last_error FROM outbox_events")
    finally:
        await conn.close()
    assert event_ids(await stream_messages(nats_url)) == [after.event_id]
    assert [r["event_id"] for r in rows] == [poison]
    assert "invalid subject" in rows[0]["last_error"]
    assert confirmed > end, "the slot did not move past the repeated poison event"


async def test_a_frame_under_another_version_of_the_prefix_is_quarantined(
    wal_database_url: str, nats_url: str
) -> None:
    """A frame under vertector.outbox.v2 (a newer producer's) is not another application's
    message to pass over: it is quarantined, loudly; another prefix is left alone."""
    url = wal_database_url
    await apply_default_streams(nats_url)
    newer = uuid.uuid4()
    after = good(1)
    async with engine(url) as eng, eng.begin() as conn:
        await conn.execute(_EMIT, {"prefix": "vertector.outbox.v2", "frame": raw(newer, version=2)})
        await conn.execute(_EMIT, {"prefix": "someone.else", "frame": b"not ours"})
        await enqueue(conn, after)
        end = int(await conn.scalar(text(_INSERT_LSN)))
    conn2 = await asyncpg.connect(asyncpg_url(url))
    try:
        async with running_relay(url, nats_url, capture="wal"):
            assert await wait_for_messages(nats_url, 1) == 1
            for _ in range(100):
                rows = await conn2.fetch("SELECT event_id, last_error FROM outbox_events")
                if rows:
                    break
                await asyncio.sleep(0.05)
            confirmed = await wait_confirmed_past(conn2, url, end)
    finally:
        await conn2.close()
    assert event_ids(await stream_messages(nats_url)) == [after.event_id]
    assert [r["event_id"] for r in rows] == [newer]
    assert "'vertector.outbox.v2' is not 'vertector.outbox.v1'" in rows[0]["last_error"]
    assert confirmed > end


async def test_a_non_transactional_frame_is_quarantined_not_published(
    wal_database_url: str, nats_url: str
) -> None:
    """pg_logical_emit_message(false, ...) is decoded at once, whether or not its transaction
    commits: published, it could be a phantom (here its transaction rolls back). enqueue never
    writes one; the relay quarantines it and goes on."""
    url = wal_database_url
    await apply_default_streams(nats_url)
    phantom, after = good(0), good(1)
    async with engine(url) as eng:
        async with eng.connect() as conn:
            trans = await conn.begin()
            await conn.execute(
                text("SELECT pg_logical_emit_message(false, :prefix, :frame)").bindparams(
                    bindparam("frame", type_=LargeBinary())
                ),
                {"prefix": WAL_PREFIX, "frame": raw(phantom.event_id)},
            )
            await trans.rollback()
        end = await emit(eng, after)
    conn2 = await asyncpg.connect(asyncpg_url(url))
    try:
        async with running_relay(url, nats_url, capture="wal"):
            assert await wait_for_messages(nats_url, 1) == 1
            confirmed = await wait_confirmed_past(conn2, url, end)
            await asyncio.sleep(0.5)
        rows = await conn2.fetch("SELECT event_id, last_error FROM outbox_events")
    finally:
        await conn2.close()
    assert event_ids(await stream_messages(nats_url)) == [after.event_id]
    assert [r["event_id"] for r in rows] == [phantom.event_id]
    assert "non-transactional" in rows[0]["last_error"]
    assert confirmed > end

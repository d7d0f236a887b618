"""Poison and a full stream in the middle of a healthy flow: oversize, wildcard, whitespace and
no-stream events are each quarantined with their reason; a stream at its limits (discard new)
is retried, never quarantined, its keys held back in order; the other stream's flow goes on."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from nats.js import api as js_api
from sqlalchemy import text

from devtools.harness import (
    FaultRelay,
    Workload,
    assert_clean,
    connect,
    create_test_stream,
    under_load,
)
from outbox_client import NoteCreatedEvent, enqueue
from outbox_client.capture import capture_mode
from outbox_client.walframe import WAL_PREFIX, encode
from tests.harness import asyncpg_url
from tests.relayrun import engine
from tests.walsupport import both_modes  # noqa: F401 - every test in both capture modes

POISON = {
    "academic.course.*": "wildcard",
    "academic course.updated": "whitespace",
    "nowhere.to.go": "no configured stream captures",
    "academic.course.created": "over the server's max_payload",
}


async def _insert_poison(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        for subject in POISON:
            payload = b"x" * (1_100_000 if subject == "academic.course.created" else 2)
            if capture_mode() == "wal":  # the same raw events, as WAL messages
                frame = encode(uuid.uuid4(), "x", subject, f"poison-{subject}", payload, {})
                await conn.execute(
                    "SELECT pg_logical_emit_message(true, $1, $2::bytea)", WAL_PREFIX, frame
                )
                continue
            await conn.execute(
                "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload)"
                " VALUES ($1, 'x', $2, $3, $4)",
                uuid.uuid4(), subject, f"poison-{subject}", payload,
            )  # fmt: skip
    finally:
        await conn.close()


async def test_poison_and_a_full_stream_amid_a_healthy_flow(
    database_url: str, nats_url: str
) -> None:
    await create_test_stream(nats_url)
    nc = await connect(nats_url)
    js = nc.jetstream()
    academic = (await js.stream_info("ACADEMIC_EVENTS")).config
    academic.max_msgs, academic.discard = 300, js_api.DiscardPolicy.NEW
    await js.update_stream(academic)
    relay = FaultRelay(database_url, nats_url, "amid-poison", RELAY_NO_STREAM_MAX_ATTEMPTS="3")
    notes: list[float] = []  # commit times of notes events
    seen: dict[str, int] = {}

    async def produce_notes(eng: object, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            async with eng.begin() as conn:  # type: ignore[attr-defined]
                await enqueue(conn, NoteCreatedEvent(note_id=f"n{i}", author_id="a", title="t"))
            notes.append(time.monotonic())
            i += 1
            await asyncio.sleep(0.02)

    async def faults() -> None:
        stop_notes = asyncio.Event()
        producing_notes = asyncio.create_task(produce_notes(eng, stop_notes))
        try:
            await asyncio.sleep(1.0)
            await _insert_poison(database_url)
            for _ in range(100):  # the academic stream fills up
                if (await js.stream_info("ACADEMIC_EVENTS")).state.messages >= 300:
                    break
                await asyncio.sleep(0.1)
            full_since = time.monotonic()
            await asyncio.sleep(5.0)
            early = sum(1 for t in notes if t < time.monotonic() - 3.0)
            seen["notes_due"] = early
            seen["notes_stored"] = (await js.stream_info("NOTES_EVENTS")).state.messages
            seen["academic_while_full"] = (await js.stream_info("ACADEMIC_EVENTS")).state.messages
            seen["full_for"] = int(time.monotonic() - full_since)
            academic.max_msgs = -1  # space again: the held-back events go out, in order
            await js.update_stream(academic)
            await asyncio.sleep(1.0)
        finally:
            stop_notes.set()
            await producing_notes

    try:
        async with engine(database_url) as eng:
            workload = Workload(eng)
            report = await under_load(workload, nats_url, [relay], faults)
            async with eng.connect() as conn:
                result = await conn.execute(
                    text(
                        "SELECT subject, last_error FROM outbox_events"
                        " WHERE quarantined_at IS NOT NULL"
                    )
                )
                quarantined = {subject: reason for subject, reason in result.all()}
        notes_stored = (await js.stream_info("NOTES_EVENTS")).state.messages
    finally:
        await nc.close()
    assert_clean(report, [relay])
    assert seen["academic_while_full"] == 300, seen
    assert seen["notes_stored"] >= seen["notes_due"] > 50, f"the notes flow stalled: {seen}"
    assert notes_stored == len(notes)
    assert set(quarantined) == set(POISON), quarantined
    for subject, reason in POISON.items():
        assert reason in quarantined[subject], (subject, quarantined[subject])

"""Issue 10, case 1: a row may not reach the server's own subjects, nor any subject outside the
relay's configured streams. On the old relay, ``$JS.API.STREAM.PURGE.ACADEMIC_EVENTS`` inserted
by a producer emptied the stream, again on every retry, and ``...DELETE.NOTES_EVENTS`` deleted
a stream."""

from __future__ import annotations

import asyncio
import time

from tests.hostile.rows import RawRow, good, insert_raw, wait_quarantined
from tests.relayrun import (
    apply_default_streams,
    engine,
    event_ids,
    jetstream,
    produce,
    running_relay,
    stream_messages,
    wait_for_messages,
)

HOSTILE = {
    "$JS.API.STREAM.PURGE.ACADEMIC_EVENTS": "reserved namespace ($JS)",
    "$JS.API.STREAM.DELETE.NOTES_EVENTS": "reserved namespace ($JS)",
    "$JS.API.CONSUMER.CREATE.ACADEMIC_EVENTS": "reserved namespace ($JS)",
    "$SYS.REQ.SERVER.PING": "reserved namespace ($SYS)",
    "$KV.config.x": "reserved namespace ($KV)",
    "$O.bucket.x": "reserved namespace ($O)",
    "_INBOX.someone.else": "reserved namespace (_INBOX)",
    "payroll.salaries": "no configured stream captures 'payroll.salaries'",
    "notes.two.tokens": "no configured stream captures",
}


async def test_reserved_and_unrouted_subjects_are_quarantined_and_reach_nothing(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    before = [good(f"B{i}") for i in range(10)]
    after = [good(f"A{i}") for i in range(10)]
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, retry_backoff_seconds=0.05),
    ):
        await produce(eng, before)
        assert await wait_for_messages(nats_url, 10) == 10
        # Empty payloads, as a purge request wants; keys shared with good events.
        ids = await insert_raw(
            database_url,
            [RawRow(s, payload=b"", key=f"B{i}") for i, s in enumerate(HOSTILE)],
        )
        await produce(eng, after)
        reasons = await wait_quarantined(database_url, ids)
        deadline = time.monotonic() + 30
        while await wait_for_messages(nats_url, 20, timeout=1) < 20:
            assert time.monotonic() < deadline, "good events after the hostile rows are stuck"
        await asyncio.sleep(0.5)  # anything still on its way would land now
    stored = event_ids(await stream_messages(nats_url))
    assert stored == [e.event_id for e in before + after], "the stream lost or gained events"
    async with jetstream(nats_url) as js:
        assert (await js.stream_info("NOTES_EVENTS")).config.name == "NOTES_EVENTS"
    for row_id, subject in zip(ids, HOSTILE, strict=True):
        assert row_id in reasons, f"{subject} was not quarantined"
        assert HOSTILE[subject] in reasons[row_id], (subject, reasons[row_id])

"""Issue 10, case 4: what JetStream would refuse on every attempt is quarantined, not retried for
ever. On the old relay a header block over 64 KB (error 10097) and a producer's ``Nats-Rollup``,
``Nats-Expected-Last-Sequence`` or ``Nats-TTL`` (10111, 10071, 10166) each held their key back
for good, and 10,000 such keys stopped the relay taking new rows."""

from __future__ import annotations

from tests.hostile.rows import RawRow, good, headers_json, insert_raw, wait_quarantined
from tests.relayrun import (
    apply_default_streams,
    engine,
    event_ids,
    produce,
    running_relay,
    stream_messages,
    wait_for_messages,
)

SUBJECT = "academic.course.updated"
#: Stored headers -> what the quarantine reason says.
REFUSED = {
    headers_json({"Vertector-Partition-Key": "k" * 100_000}): "header block of",
    headers_json({"Nats-Rollup": "sub"}): "reserved",
    headers_json({"Nats-Expected-Last-Sequence": "1"}): "reserved",
    headers_json({"Nats-TTL": "1s"}): "reserved",
    headers_json({"Nats-Expected-Stream": "OTHER"}): "reserved",
    headers_json({"nats-expected-last-msg-id": "x"}): "reserved",
}


async def test_refusals_that_cannot_succeed_are_quarantined_and_their_keys_go_on(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    after = [good(f"R{i}") for i in range(len(REFUSED))]
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, retry_backoff_seconds=0.05),
    ):
        ids = await insert_raw(
            database_url,
            [RawRow(SUBJECT, headers, key=f"R{i}") for i, headers in enumerate(REFUSED)],
        )
        await produce(eng, after)  # the same keys, behind the refused rows
        reasons = await wait_quarantined(database_url, ids)
        assert await wait_for_messages(nats_url, len(after)) == len(after)
    assert event_ids(await stream_messages(nats_url)) == [e.event_id for e in after]
    for row_id, headers in zip(ids, REFUSED, strict=True):
        assert row_id in reasons, f"{headers[:50]} was not quarantined"
        assert REFUSED[headers] in reasons[row_id], (headers[:50], reasons[row_id])

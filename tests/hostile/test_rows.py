"""Issue 10, case 2: every field of a row is checked before the loop touches it, and a loop that
dies ends the relay. On the old relay, ``headers`` of ``{"x": 1}`` (or ``null``, a list, a
string) killed the publishing loop while the process stayed up and answered healthy."""

from __future__ import annotations

import asyncio
import logging

import pytest

from outbox_client.nats_config import NATSConfig
from relay.app import RelayApp
from relay.errors import RelayError
from relay.settings import RelaySettings
from tests.hostile.rows import RawRow, good, insert_raw, wait_quarantined
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
#: Stored headers (JSON text) -> what the quarantine reason says.
MALFORMED = {
    '{"x": 1}': "value of type int",
    '{"x": null}': "value of type NoneType",
    '{"x": {"y": "z"}}': "value of type dict",
    "[1, 2]": "headers of type list",
    '"str"': "headers of type str",
    "null": "headers of type NoneType",
    "17": "headers of type int",
    '{"bad name": "v"}': "is not a token",
    '{"x": "a\\r\\nInjected: yes"}': "CR, LF or NUL",
    '{"Nats-Rollup": "all"}': "reserved",
    '{"Nats-Msg-Id": "forged"}': "reserved",
    # Deeper than Python's recursion limit: PostgreSQL stores it, json.loads cannot read it.
    "[" * 1500 + "]" * 1500: "headers of type UnreadableJson",
    '{"x": ' + "9" * 5000 + "}": "headers of type UnreadableJson",
}


async def test_malformed_rows_are_quarantined_and_the_rest_flows(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    before = [good(f"K{i}") for i in range(10)]
    after = [good(f"K{i}") for i in range(10)]  # the same keys: none of them is held back
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, retry_backoff_seconds=0.05),
    ):
        await produce(eng, before)
        ids = await insert_raw(
            database_url,
            [RawRow(SUBJECT, headers, key=f"K{i}") for i, headers in enumerate(MALFORMED)],
        )
        await produce(eng, after)
        reasons = await wait_quarantined(database_url, ids)
        assert await wait_for_messages(nats_url, 20, timeout=30) == 20
    assert event_ids(await stream_messages(nats_url)) == [e.event_id for e in before + after]
    for row_id, headers in zip(ids, MALFORMED, strict=True):
        assert row_id in reasons, f"headers {headers[:40]} were not quarantined"
        assert "invalid headers" in reasons[row_id], reasons[row_id]
        assert MALFORMED[headers] in reasons[row_id], (headers[:40], reasons[row_id])


async def test_a_thousand_hostile_rows_are_a_few_warnings_and_each_keeps_its_reason(
    database_url: str, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning per quarantined row flooded the log: 1,000 hostile rows were 1,000 lines.
    Now one line per batch (count, a few ids, the reasons); each row's reason is in the table."""
    caplog.set_level(logging.INFO, logger="relay.worker")
    await apply_default_streams(nats_url)
    kinds = list(MALFORMED.items())[:10]
    rows = [RawRow(SUBJECT, kinds[i % 10][0], key=f"H{i}") for i in range(1000)]
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, retry_backoff_seconds=0.05),
    ):
        ids = await insert_raw(database_url, rows)
        await produce(eng, [good("after")])
        reasons = await wait_quarantined(database_url, ids, timeout=60)
        assert await wait_for_messages(nats_url, 1) == 1
    assert len(reasons) == 1000
    for i, row_id in enumerate(ids):
        assert kinds[i % 10][1] in reasons[row_id], (kinds[i % 10][0], reasons[row_id])
    warned = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "relay.worker"
    ]
    assert {r.getMessage() for r in warned} == {"relay.events.quarantined"}
    assert len(warned) <= 3, len(warned)  # one a batch: 1,000 rows are one or two batches
    assert sum(vars(r)["event_fields"]["count"] for r in warned) == 1000


@pytest.mark.parametrize("vacuum_every_rows", [20_000, 0])
async def test_a_crash_of_the_publishing_loop_ends_the_relay(
    database_url: str, nats_url: str, vacuum_every_rows: int
) -> None:
    """A bug in the loop (here: injected) must not leave a healthy-looking process that
    publishes nothing: ``run`` ends with an error (the CLI exits non-zero). Also when a
    background task ended cleanly first (vacuum off: it returns at once)."""
    await apply_default_streams(nats_url)
    app = RelayApp(
        RelaySettings(
            database_url=database_url, metrics_port=-1, vacuum_every_rows=vacuum_every_rows
        ),
        NATSConfig(servers=[nats_url]),
    )
    real_step = app.relay.step
    rounds = 0

    async def step() -> float | None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            raise RuntimeError("injected bug in the loop")
        return await real_step()

    app.relay.step = step  # type: ignore[method-assign]
    with pytest.raises(RelayError, match="publishing loop stopped unexpectedly"):
        await asyncio.wait_for(app.run(asyncio.Event()), 60)

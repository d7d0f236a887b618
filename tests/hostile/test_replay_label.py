"""A replay's label changes an event's Nats-Msg-Id (``<event_id>:<label>``), and with it what
JetStream deduplicates. It used to be a ``Vertector-Replay`` header, which any producer may
write: a forged one made the relay send a Msg-Id of the producer's choosing. Now the label is
the ``replay_label`` column, written only by ``vertector-relay replay --fresh-ids`` (as the
table's owner; the producer role may not), and a producer's ``Vertector-Replay`` header is
refused with its reason."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from relay import admin, schema
from tests.harness import asyncpg_url
from tests.hostile.rows import RawRow, good, headers_json, insert_raw, wait_quarantined
from tests.integration.test_least_privilege import as_user, setup_roles
from tests.relayrun import (
    apply_default_streams,
    engine,
    produce,
    running_relay,
    stream_messages,
    wait_for_messages,
)

SUBJECT = "academic.course.updated"


async def test_a_forged_replay_header_cannot_change_the_msg_id(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    forged = [
        RawRow(SUBJECT, headers_json({"Vertector-Replay": "forged"}), key="F1"),
        RawRow(SUBJECT, headers_json({"vertector-replay": "forged"}), key="F2"),
    ]
    after = [good("F1"), good("F2")]  # the same keys, behind the forged rows
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, retry_backoff_seconds=0.05),
    ):
        ids = await insert_raw(database_url, forged)
        await produce(eng, after)
        reasons = await wait_quarantined(database_url, ids)
        assert await wait_for_messages(nats_url, len(after)) == len(after)
    messages = await stream_messages(nats_url)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [str(e.event_id) for e in after]
    assert not any("forged" in str(m.headers) for m in messages)
    assert len(reasons) == 2, reasons
    for reason in reasons.values():
        assert "invalid headers" in reason and "replay_label" in reason, reason


async def test_only_the_replay_sets_the_label_and_the_relay_sends_it(
    database_url: str, nats_url: str
) -> None:
    """The admin path still works (``replay --fresh-ids`` end to end is in
    tests/acceptance/test_admin_cli.py); the producer role cannot write the column."""
    await setup_roles(database_url)
    await apply_default_streams(nats_url)
    producer = await asyncpg.connect(asyncpg_url(as_user(database_url, "schedule_svc")))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await producer.execute(
                "INSERT INTO outbox_events (event_id, event_type, subject, partition_key,"
                " payload, replay_label) VALUES (gen_random_uuid(), 't', $1, 'k', '', 'mine')",
                SUBJECT,
            )
    finally:
        await producer.close()
    events = [good("L1"), good("L2")]
    async with engine(database_url) as eng:
        async with running_relay(database_url, nats_url, retention_seconds=3600):
            await produce(eng, events)
            assert await wait_for_messages(nats_url, 2) == 2
        selection = admin.ReplaySelection(from_id=1)
        assert await admin.replay(database_url, selection, fresh_ids="replay-test") == 2
        async with running_relay(database_url, nats_url, retention_seconds=3600):
            assert await wait_for_messages(nats_url, 4) == 4
    messages = await stream_messages(nats_url)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [str(e.event_id) for e in events] + [
        f"{e.event_id}:replay-test" for e in events
    ]
    assert not any("Vertector-Replay" in (m.headers or {}) for m in messages)


async def test_the_migration_moves_a_waiting_rows_label_into_the_column(
    empty_database_url: str,
) -> None:
    """Rows a replay of the previous release marked keep their replay; the header goes."""
    await asyncio.to_thread(schema.upgrade, empty_database_url, "0004_relay_delete_functions")
    conn = await asyncpg.connect(asyncpg_url(empty_database_url))
    try:
        insert = (
            "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload,"
            " headers, sent_at) VALUES (gen_random_uuid(), 't', $1, $2, '', $3::jsonb, $4)"
            " RETURNING id"
        )
        header = headers_json({"Vertector-Replay": "replay-old", "x": "y"})
        waiting = await conn.fetchval(insert, SUBJECT, "w", header, None)
        sent = await conn.fetchval(insert, SUBJECT, "s", header, None)
        await conn.execute("UPDATE outbox_events SET sent_at = now() WHERE id = $1", sent)
        await asyncio.to_thread(schema.upgrade, empty_database_url)
        rows = {
            r["id"]: (r["replay_label"], r["headers"])
            for r in await conn.fetch("SELECT id, replay_label, headers::text FROM outbox_events")
        }
        assert rows == {waiting: ("replay-old", '{"x": "y"}'), sent: (None, '{"x": "y"}')}
        await asyncio.to_thread(schema.downgrade, empty_database_url, "0004_relay_delete_functions")
        back = await conn.fetchval("SELECT headers::text FROM outbox_events WHERE id = $1", waiting)
        assert back == '{"x": "y", "Vertector-Replay": "replay-old"}'
    finally:
        await conn.close()

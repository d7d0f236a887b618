"""Operator commands as a user runs them: quarantined events, replay, consumer dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import text

from outbox_client import CourseUpdatedEvent
from tests.harness import asyncpg_url
from tests.relayrun import (
    apply_default_streams,
    engine,
    produce,
    running_relay,
    stream_messages,
    wait_for_messages,
)

BIN = Path(sys.executable).parent / "vertector-relay"


async def cli(database_url: str, nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"OUTBOX_DATABASE_URL": database_url, "NATS_SERVERS": nats_url}
    return await asyncio.to_thread(
        subprocess.run, [str(BIN), *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_quarantined_events_are_listed_shown_requeued_and_purged(
    database_url: str, nats_url: str
) -> None:
    async with engine(database_url) as eng:
        async with eng.begin() as conn:
            for subject in ("academic.course.*", "academic.course.*"):
                await conn.execute(
                    text(
                        "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload)"
                        " VALUES (:id, 'academic.course.updated', :subject, 'k', '\\x7b7d')"
                    ),
                    {"id": uuid.uuid4(), "subject": subject},
                )
        await apply_default_streams(nats_url)
        async with running_relay(database_url, nats_url) as app:
            await produce(eng, [CourseUpdatedEvent(course_code="OK", credits=1)])
            assert await wait_for_messages(nats_url, 1) == 1
            for _ in range(100):
                if sum(app.stats.quarantined.values()) == 2:
                    break
                await asyncio.sleep(0.05)

        listed = await cli(database_url, nats_url, "dead-letters", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert len(rows) == 2 and "wildcard" in rows[0]["last_error"]
        first, second = rows[0]["event_id"], rows[1]["event_id"]

        shown = await cli(database_url, nats_url, "dead-letters", "show", first)
        assert shown.returncode == 0 and '"payload_bytes": 2' in shown.stdout

        requeued = await cli(database_url, nats_url, "dead-letters", "requeue", "--event-id", first)
        assert requeued.stdout.strip() == "1 events requeued"
        conn = await asyncpg.connect(asyncpg_url(database_url))
        try:
            state = await conn.fetchrow(
                "SELECT quarantined_at, attempts FROM outbox_events WHERE event_id = $1",
                uuid.UUID(first),
            )
            assert state["quarantined_at"] is None and state["attempts"] == 0
            purged = await cli(
                database_url, nats_url, "dead-letters", "purge", "--event-id", second
            )
            assert purged.stdout.strip() == "1 quarantined events deleted"
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM outbox_events WHERE quarantined_at IS NOT NULL"
                )
                == 0
            )
        finally:
            await conn.close()
        refused = await cli(database_url, nats_url, "dead-letters", "purge")
        assert refused.returncode == 2 and "--event-id" in refused.stderr


async def test_replay_republishes_retained_events_in_order(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    events = [CourseUpdatedEvent(course_code="R", credits=i) for i in range(5)]
    async with engine(database_url) as eng:
        async with running_relay(database_url, nats_url, retention_seconds=3600):
            await produce(eng, events)
            assert await wait_for_messages(nats_url, 5) == 5
        from tests.relayrun import jetstream

        async with jetstream(nats_url) as js:  # the stream lost them (and its dedup state)
            await js.delete_stream("ACADEMIC_EVENTS")
        await apply_default_streams(nats_url)
        done = await cli(database_url, nats_url, "replay", "--since", "2000-01-01T00:00:00+00:00")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "replay: 5 events (ACADEMIC_EVENTS 5)"
        assert done.stdout.splitlines()[-1] == "5 events marked for re-publishing"
        # Published seconds ago, inside the 2-minute window: the user is told what JetStream
        # will do with them (here the stream was recreated, so it happens not to).
        assert "inside their stream's duplicate window" in done.stderr
        async with running_relay(database_url, nats_url, retention_seconds=3600):
            assert await wait_for_messages(nats_url, 5) == 5
    replayed = [json.loads(m.data)["credits"] for m in await stream_messages(nats_url)]
    assert replayed == [0, 1, 2, 3, 4]
    refused = await cli(database_url, nats_url, "replay")
    assert refused.returncode == 2 and "give a range" in refused.stderr


async def test_replay_inside_the_duplicate_window_warns_dry_runs_and_redelivers_with_fresh_ids(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    events = [CourseUpdatedEvent(course_code="W", credits=i) for i in range(3)]
    since = ("--since", "2000-01-01T00:00:00+00:00")
    async with engine(database_url) as eng:
        async with running_relay(database_url, nats_url, retention_seconds=3600):
            await produce(eng, events)
            assert await wait_for_messages(nats_url, 3) == 3
        dry = await cli(database_url, nats_url, "replay", *since, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "3 of them were published inside their stream's duplicate window" in dry.stderr
        assert "--fresh-ids" in dry.stderr
        assert dry.stdout.splitlines()[-1] == "dry run: nothing changed"
        conn = await asyncpg.connect(asyncpg_url(database_url))
        try:
            assert (
                await conn.fetchval("SELECT count(*) FROM outbox_events WHERE sent_at IS NULL") == 0
            )
        finally:
            await conn.close()

        fresh = await cli(
            database_url, nats_url, "replay", *since, "--fresh-ids", "--batch-size", "2"
        )
        assert fresh.returncode == 0, fresh.stderr
        assert "duplicate window" not in fresh.stderr  # fresh ids: nothing will be dropped
        assert "  marked 2 of 3" in fresh.stdout and "  marked 3 of 3" in fresh.stdout
        async with running_relay(database_url, nats_url, retention_seconds=3600):
            assert await wait_for_messages(nats_url, 6) == 6  # stored again, not dropped
    messages = await stream_messages(nats_url)
    assert [json.loads(m.data)["credits"] for m in messages] == [0, 1, 2, 0, 1, 2]
    ids = [m.headers["Nats-Msg-Id"] for m in messages]
    originals = [str(e.event_id) for e in events]
    assert ids[:3] == originals
    label = ids[3].split(":", 1)[1]
    assert label.startswith("replay-") and ids[3:] == [f"{i}:{label}" for i in originals]


async def test_requeue_selectors_are_mutually_exclusive(database_url: str, nats_url: str) -> None:
    both = await cli(
        database_url, nats_url, "dead-letters", "requeue", "--event-id", str(uuid.uuid4()), "--all"
    )
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr

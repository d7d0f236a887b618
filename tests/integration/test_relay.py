"""The relay against real PostgreSQL and a real nats-server: the guarantees README.md lists
('Guarantees and their limits')."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import asyncpg
import pytest
from sqlalchemy import text

from outbox_client import CourseCreatedEvent, CourseUpdatedEvent, NoteCreatedEvent, enqueue
from outbox_client.streams import DEFAULT_STREAMS, StreamConfig
from relay.errors import MissingStreamError
from tests.harness import asyncpg_url
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


def update(code: str, credits: int = 3) -> CourseUpdatedEvent:
    return CourseUpdatedEvent(course_code=code, credits=credits)


async def pg_rows(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_committed_events_reach_the_stream_with_headers_and_acks_recorded(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    events = [update(f"C{i % 13}", i % 7) for i in range(300)]
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, retention_seconds=3600),
    ):
        await produce(eng, events)
        assert await wait_for_messages(nats_url, 300) == 300
        await asyncio.sleep(0.3)
    messages = await stream_messages(nats_url)
    assert event_ids(messages) == [e.event_id for e in events]
    first = messages[0]
    assert first.data == events[0].to_bytes()
    assert first.headers["Vertector-Event-Type"] == "academic.course.updated"
    assert first.headers["Vertector-Schema-Version"] == "1"
    rows = await pg_rows(database_url, "SELECT * FROM outbox_events ORDER BY id")
    assert all(r["sent_at"] is not None for r in rows)
    assert [r["stream_seq"] for r in rows] == list(range(1, 301))
    assert {r["stream"] for r in rows} == {"ACADEMIC_EVENTS"}


async def test_rolled_back_transactions_publish_nothing(database_url: str, nats_url: str) -> None:
    await apply_default_streams(nats_url)
    kept = update("KEPT")
    async with engine(database_url) as eng, running_relay(database_url, nats_url):
        for i in range(20):
            async with eng.connect() as conn:
                trans = await conn.begin()
                await enqueue(conn, update(f"GONE{i}"))
                await trans.rollback()
        await produce(eng, [kept])
        assert await wait_for_messages(nats_url, 1) == 1
        await asyncio.sleep(0.5)
    assert event_ids(await stream_messages(nats_url)) == [kept.event_id]


async def test_late_commits_are_never_skipped_and_keys_keep_commit_order(
    database_url: str, nats_url: str
) -> None:
    """Many producers commit out of id order; one transaction stays open for seconds."""
    await apply_default_streams(nats_url)
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, poll_interval_seconds=0.05),
    ):
        held = await eng.connect()
        trans = await held.begin()
        slow = update("SLOW", 1)
        await enqueue(held, slow)  # the lowest id of all, committed last: never skipped

        async def producer(n: int) -> None:
            for i in range(25):
                async with eng.begin() as conn:
                    await enqueue(conn, update(f"K{n}", i))
                await asyncio.sleep(0.001 * (n % 3))

        await asyncio.gather(*(producer(n) for n in range(8)))
        # Meanwhile the others flow: an open transaction holds back only its own rows.
        assert await wait_for_messages(nats_url, 200, timeout=20) == 200
        await asyncio.sleep(1.0)  # several claim rounds pass the uncommitted lowest id
        await trans.commit()
        await held.close()
        assert await wait_for_messages(nats_url, 201) == 201
    messages = await stream_messages(nats_url)
    ids = event_ids(messages)
    assert ids[-1] == slow.event_id, "the late commit was skipped or published early"
    by_key: dict[str, list[int]] = {}
    for m in messages:
        body = json.loads(m.data)
        by_key.setdefault(body["course_code"], []).append(body["credits"])
    for key, credits in by_key.items():
        if key != "SLOW":
            assert credits == list(range(25)), key


async def test_republish_is_dropped_by_jetstream_dedup(
    database_url: str, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await apply_default_streams(nats_url)
    events = [update(f"D{i}") for i in range(50)]
    async with engine(database_url) as eng:
        async with running_relay(database_url, nats_url) as app:  # deletes rows on PubAck
            await produce(eng, events)
            assert await wait_for_messages(nats_url, 50) == 50
            await asyncio.sleep(0.3)
        # Forget that they were sent, as a crash between PubAck and mark would.
        await produce(eng, [e.model_copy() for e in events])
        async with running_relay(database_url, nats_url) as app:
            deadline = time.monotonic() + 20
            while app.stats.duplicates < 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert app.stats.duplicates == 50
            assert app.stats.published == 0  # JetStream stored none of them
            samples = [s for m in app.metrics.registry.collect() for s in m.samples]
            counted = {
                name: sum(s.value for s in samples if s.name == name)
                for name in (
                    "vertector_relay_events_published_total",
                    "vertector_relay_publish_duplicates_total",
                )
            }
            assert counted == {
                "vertector_relay_events_published_total": 0,
                "vertector_relay_publish_duplicates_total": 50,
            }
    # Each is reported: a reused event id is otherwise silently dropped with its row.
    reported = [r for r in caplog.records if r.getMessage() == "relay.event.duplicate"]
    fields = [vars(r)["event_fields"] for r in reported]
    assert {f["event_id"] for f in fields} == {str(e.event_id) for e in events}
    assert {f["subject"] for f in fields} == {"academic.course.updated"}
    assert len(await stream_messages(nats_url)) == 50
    assert await pg_rows(database_url, "SELECT 1 FROM outbox_events") == []


async def test_poison_is_quarantined_while_healthy_events_flow(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    async with jetstream(nats_url) as js:
        max_payload = js._nc.max_payload
    # Under max_payload on its own, over it once the headers are added.
    big = CourseCreatedEvent(
        course_code="BIG", course_name="Big", semester="F", credits=3, instructor="X",
        description="x" * (max_payload - 300),
    )  # fmt: skip
    assert len(big.to_bytes()) < max_payload
    healthy = [update(f"H{i}") for i in range(100)]
    async with engine(database_url) as eng:
        async with eng.begin() as conn:
            await enqueue(conn, big)
            for subject in ("academic.course.*", "academic course.updated", "nowhere.to.go"):
                await conn.execute(
                    text(
                        "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload)"
                        " VALUES (:id, 'x', :subject, :key, '\\x7b7d')"
                    ),
                    {"id": uuid.uuid4(), "subject": subject, "key": subject},
                )
        await produce(eng, healthy[:50])
        async with running_relay(
            database_url, nats_url, no_stream_max_attempts=3, retry_backoff_seconds=0.05
        ) as app:
            await produce(eng, healthy[50:])
            assert await wait_for_messages(nats_url, 100) == 100
            deadline = time.monotonic() + 20
            while sum(app.stats.quarantined.values()) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert app.publisher.client.is_connected, "a poison message cost the connection"
    rows = await pg_rows(
        database_url,
        "SELECT subject, last_error, attempts FROM outbox_events WHERE quarantined_at IS NOT NULL",
    )
    reasons = {r["subject"]: r["last_error"] for r in rows}
    assert "over the server's max_payload" in reasons["academic.course.created"]
    assert "wildcard" in reasons["academic.course.*"]
    assert "whitespace" in reasons["academic course.updated"]
    assert "no configured stream captures 'nowhere.to.go'" in reasons["nowhere.to.go"]
    assert event_ids(await stream_messages(nats_url)) == [e.event_id for e in healthy]


async def test_notify_wakes_the_relay_long_before_the_poll_interval(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, poll_interval_seconds=30),
    ):
        await asyncio.sleep(0.5)  # let the listener connect and the first scan pass
        latencies = []
        for i in range(20):
            started = time.monotonic()
            await produce(eng, [update(f"N{i}")])
            assert await wait_for_messages(nats_url, i + 1, timeout=5) == i + 1
            latencies.append(time.monotonic() - started)
    assert max(latencies) < 5  # with a 30 s poll, only NOTIFY explains this


async def test_sent_rows_are_purged_after_retention(database_url: str, nats_url: str) -> None:
    await apply_default_streams(nats_url)
    async with (
        engine(database_url) as eng,
        running_relay(
            database_url,
            nats_url,
            retention_seconds=0,
            purge_interval_seconds=0.1,
            purge_batch_size=7,
        ),
    ):
        await produce(eng, [update(f"P{i}") for i in range(40)])
        assert await wait_for_messages(nats_url, 40) == 40
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not await pg_rows(database_url, "SELECT 1 FROM outbox_events"):
                break
            await asyncio.sleep(0.1)
    assert await pg_rows(database_url, "SELECT 1 FROM outbox_events") == []


async def test_run_refuses_to_start_when_a_configured_stream_is_missing(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url, [s for s in DEFAULT_STREAMS if s.name != "NOTES_EVENTS"])
    with pytest.raises(MissingStreamError, match=r"NOTES_EVENTS.*streams apply"):
        async with running_relay(database_url, nats_url):
            await asyncio.sleep(5)


async def test_a_relay_configured_with_one_stream_relays_what_it_captures(
    database_url: str, nats_url: str
) -> None:
    """Domain-free: the relay checks the streams it is configured with, not an event catalog,
    and relays an event type it has never heard of."""
    courses = StreamConfig(name="T_COURSES", subjects=("academic.course.>",))
    await apply_default_streams(nats_url, [courses])
    events = [update(f"D{i}") for i in range(5)]
    unknown_type = uuid.uuid4()
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, streams=[courses]) as app,
    ):
        await produce(eng, events)
        async with eng.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload)"
                    " VALUES (:id, 'academic.course.archived', 'academic.course.archived', 'D0',"
                    " '\\x7b7d')"
                ),
                {"id": unknown_type},
            )
        assert await wait_for_messages(nats_url, 6, stream="T_COURSES") == 6
    stored = event_ids(await stream_messages(nats_url, "T_COURSES"))
    assert stored == [e.event_id for e in events] + [unknown_type]
    assert not app.stats.quarantined


async def test_a_stream_deleted_under_a_running_relay_is_given_up_on_after_retries(
    database_url: str, nats_url: str
) -> None:
    """'No responders' for a configured stream is retried (an election looks the same); once
    JetStream's API confirms the stream is gone, its events are quarantined, others flow."""
    await apply_default_streams(nats_url)
    async with (
        engine(database_url) as eng,
        running_relay(
            database_url, nats_url, no_stream_max_attempts=3, retry_backoff_seconds=0.05
        ) as app,
    ):
        await produce(eng, [update("G0")])
        assert await wait_for_messages(nats_url, 1) == 1  # the relay is past its start-up check
        async with jetstream(nats_url) as js:
            await js.delete_stream("NOTES_EVENTS")
        await produce(eng, [NoteCreatedEvent(note_id="n1", author_id="a", title="t")])
        await produce(eng, [update("G1")])
        assert await wait_for_messages(nats_url, 2) == 2
        for _ in range(200):
            if sum(app.stats.quarantined.values()) == 1:
                break
            await asyncio.sleep(0.05)
    rows = await pg_rows(
        database_url,
        "SELECT subject, last_error FROM outbox_events WHERE quarantined_at IS NOT NULL",
    )
    assert [(r["subject"], "gave up after 3 attempts" in r["last_error"]) for r in rows] == [
        ("notes.created", True)
    ], rows


async def test_an_event_no_stream_takes_is_a_warning_at_its_first_failure_not_at_the_end(
    database_url: str, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15 item 8: with the default settings such an event was retried for ~87 s before
    the first word in the log (its quarantine). Now its first failure is a warning naming it
    and the reason; 200 of them in a batch are one line; their retries add no warnings."""
    caplog.set_level(logging.DEBUG, logger="relay.worker")
    await apply_default_streams(nats_url)
    notes = [NoteCreatedEvent(note_id=f"n{i}", author_id=f"a{i}", title="t") for i in range(200)]
    async with engine(database_url) as eng, running_relay(database_url, nats_url):
        await produce(eng, [update("G0")])
        assert await wait_for_messages(nats_url, 1) == 1  # the relay is past its start-up check
        async with jetstream(nats_url) as js:
            await js.delete_stream("NOTES_EVENTS")
        await produce(eng, notes)
        started = time.monotonic()
        while not _warnings(caplog) and time.monotonic() - started < 30:
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        first = _warnings(caplog)
        attempts = await pg_rows(database_url, "SELECT attempts, quarantined_at FROM outbox_events")
        # Then let every one of them fail again at least once.
        retried = "SELECT count(*) AS n FROM outbox_events WHERE attempts >= 2"
        while (await pg_rows(database_url, retried))[0]["n"] < 200:
            assert time.monotonic() - started < 60, "no retry within 60 s"
            await asyncio.sleep(0.1)
    assert took < 10, took
    assert [r.getMessage() for r in first] == ["relay.events.delivery_failed"]
    fields = vars(first[0])["event_fields"]
    assert fields["count"] == 200
    assert "no stream captures the subject" in fields["reasons"]
    assert str(notes[0].event_id) in fields["events"] and "notes.created" in fields["events"]
    assert all(r["quarantined_at"] is None for r in attempts)  # at the first failure, not the end
    assert min(r["attempts"] for r in attempts if r["attempts"]) <= 2
    assert _warnings(caplog) == first, [r.getMessage() for r in _warnings(caplog)]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "relay.worker"]


async def test_streams_apply_is_idempotent_and_reports_changes(nats_url: str) -> None:
    from relay.natsstreams import apply_streams

    async with jetstream(nats_url) as js:
        first = [str(a) for a in await apply_streams(js, DEFAULT_STREAMS)]
        assert first == ["ACADEMIC_EVENTS: created", "NOTES_EVENTS: created"]
        again = [a.action for a in await apply_streams(js, DEFAULT_STREAMS)]
        assert again == ["unchanged", "unchanged"]
        changed = StreamConfig(
            **(DEFAULT_STREAMS[1].model_dump() | {"duplicate_window_seconds": 60})
        )
        [result] = await apply_streams(js, [changed])
        assert result.action == "updated"
        assert "duplicate_window 600.0 -> 60.0" in result.changes
        info = await js.stream_info("ACADEMIC_EVENTS")
        assert info.config.retention == "workqueue"
        assert info.config.duplicate_window == 600


async def test_full_stream_is_retried_not_quarantined(database_url: str, nats_url: str) -> None:
    """A stream at its limits with discard-new answers an error that clears when space frees:
    the relay retries with backoff and delivers everything once the limit is raised."""
    full = StreamConfig(
        name="ACADEMIC_EVENTS", subjects=("academic.>",), max_msgs=20, discard="new",
        retention="limits",
    )  # fmt: skip
    notes = DEFAULT_STREAMS[1]
    await apply_default_streams(nats_url, [full, notes])
    events = [update(f"F{i}") for i in range(50)]
    async with (
        engine(database_url) as eng,
        running_relay(
            database_url, nats_url, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.3
        ) as app,
    ):
        await produce(eng, events)
        assert await wait_for_messages(nats_url, 20) == 20
        for _ in range(100):
            if sum(app.stats.retries.values()) >= 10:
                break
            await asyncio.sleep(0.05)
        assert sum(app.stats.retries.values()) >= 10
        assert not app.stats.quarantined, "a full stream is transient, not poison"
        # The server's refusal itself, read at once (nats-py's publish_async loses it and
        # leaves the PubAck to time out: nats-io/nats.py#985).
        assert app.stats.retries["jetstream 503 10077"] >= 10, app.stats.retries
        assert not app.stats.retries["timeout waiting for PubAck"], app.stats.retries
        await apply_default_streams(nats_url, [full.model_copy(update={"max_msgs": -1}), notes])
        assert await wait_for_messages(nats_url, 50) == 50
    assert sorted(event_ids(await stream_messages(nats_url))) == sorted(e.event_id for e in events)

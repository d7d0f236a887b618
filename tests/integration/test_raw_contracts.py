"""Contract enforcement for raw rows and the CloudEvents binding, with a real relay, PostgreSQL
and nats-server."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import nats
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from outbox_client import CourseUpdatedEvent, decode_event
from outbox_client.schemas import catalog
from outbox_client.schemas.registry import publish
from tests.harness import asyncpg_url
from tests.relayrun import apply_default_streams, engine, produce, running_relay, stream_messages


async def publish_registry(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await publish(nc.jetstream(), catalog())
    finally:
        await nc.close()


async def insert_raw(database_url: str, payload: dict[str, Any], key: str) -> uuid.UUID:
    """A row as a producer in another language writes it: no outbox_client mark. (The
    relays below keep sent rows, retention_seconds=3600, so that their outcome can be read.)"""
    event_id = uuid.uuid4()
    headers = {
        "Vertector-Event-Type": "academic.course.updated",
        "Vertector-Source-Service": "go-svc",
    }
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        await conn.execute(
            "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload, headers)"
            " VALUES ($1, 'academic.course.updated', 'academic.course.updated', $2, $3, $4::jsonb)",
            event_id, key, json.dumps(payload | {"event_id": str(event_id)}).encode(), json.dumps(headers),
        )  # fmt: skip
    finally:
        await conn.close()
    return event_id


async def outcome(database_url: str, event_id: uuid.UUID) -> tuple[Any, Any, Any]:
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT sent_at, quarantined_at, last_error FROM outbox_events WHERE event_id = $1",
            event_id,
        )
    finally:
        await conn.close()
    return (row["sent_at"], row["quarantined_at"], row["last_error"]) if row else (None, None, None)


async def settled(database_url: str, ids: list[uuid.UUID], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        states = [await outcome(database_url, i) for i in ids]
        if all(sent or quarantined for sent, quarantined, _ in states):
            return
        assert asyncio.get_running_loop().time() < deadline, states
        await asyncio.sleep(0.1)


def valid_payload() -> dict[str, Any]:
    return json.loads(CourseUpdatedEvent(course_code="GO1", credits=4).to_bytes())


async def test_an_invalid_raw_row_is_quarantined_with_the_schema_error_while_valid_ones_flow(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    await publish_registry(nats_url)
    good = await insert_raw(database_url, valid_payload(), "GO1")
    negative = await insert_raw(database_url, valid_payload() | {"credits": -5}, "GO2")
    stray = await insert_raw(database_url, valid_payload() | {"colour": "red"}, "GO3")
    future = await insert_raw(database_url, valid_payload() | {"schema_version": 9}, "GO4")
    after = await insert_raw(database_url, valid_payload(), "GO2")  # same key, later, valid
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, validate_raw_rows=True, retention_seconds=3600),
    ):
        marked = CourseUpdatedEvent(course_code="PY1", credits=2)
        await produce(eng, [marked])
        await settled(database_url, [good, negative, stray, future, after, marked.event_id])
    assert (await outcome(database_url, good))[0] is not None
    assert (await outcome(database_url, after))[0] is not None
    assert (await outcome(database_url, marked.event_id))[0] is not None
    for event_id, reason in (
        (
            negative,
            "contract academic.course.updated.v1: at credits: -5 is less than the minimum of 0",
        ),
        (
            stray,
            "contract academic.course.updated.v1: at (payload): Additional properties are not allowed ('colour' was unexpected)",
        ),
        (future, "contract: academic.course.updated version 9 is not in the schema registry"),
    ):
        sent, quarantined, error = await outcome(database_url, event_id)
        assert sent is None and quarantined is not None
        assert error == reason
    ids = {m.headers["Nats-Msg-Id"] for m in await stream_messages(nats_url)}
    assert ids == {str(good), str(after), str(marked.event_id)}


async def test_validation_can_be_turned_off(database_url: str, nats_url: str) -> None:
    await apply_default_streams(nats_url)
    await publish_registry(nats_url)
    negative = await insert_raw(database_url, valid_payload() | {"credits": -5}, "GO2")
    async with running_relay(
        database_url, nats_url, validate_raw_rows=False, retention_seconds=3600
    ):
        await settled(database_url, [negative])
    assert (await outcome(database_url, negative))[0] is not None


async def test_cloudevents_binary_mode_is_read_by_the_cloudevents_sdk_and_by_ours(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    event = CourseUpdatedEvent(course_code="CE1", credits=3)
    async with (
        engine(database_url) as eng,
        running_relay(
            database_url,
            nats_url,
            validate_raw_rows=True,
            cloudevents=True,
            retention_seconds=3600,
        ),
    ):
        await produce(eng, [event])
        await settled(database_url, [event.event_id])
    (msg,) = await stream_messages(nats_url)
    cloud = from_http(HTTPMessage(dict(msg.headers), msg.data), JSONFormat())
    assert cloud.get_specversion() == "1.0"
    assert cloud.get_id() == str(event.event_id)
    assert cloud.get_type() == "academic.course.updated"
    assert cloud.get_source() == "/unspecified"
    assert cloud.get_subject() == "CE1"
    assert cloud.get_dataschema() == "urn:vertector:academic.course.updated:v1"
    assert cloud.get_datacontenttype() == "application/json"
    assert cloud.get_time() is not None
    assert cloud.get_data() == json.loads(event.to_bytes())
    assert msg.data == event.to_bytes()  # the payload is unchanged...
    assert decode_event(msg.data) == event  # ...so our consumers read it as before

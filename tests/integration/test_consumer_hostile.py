"""Consumers survive every message (issue 10, item 5) and dead-letter replay only sends what the
message policy allows (item 1), against a real nats-server."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from outbox_client import (
    BaseEvent,
    ConsumerConfig,
    CourseDeletedEvent,
    EventConsumer,
    NATSClient,
    NATSConfig,
    OutboxError,
)
from outbox_client.consumer import PAYLOAD_OMITTED_HEADER, ensure_dead_letter_stream
from outbox_client.deadletters import list_dead_letters, replay_dead_letter
from tests.integration.test_consumer import consuming, course, until
from tests.relayrun import apply_default_streams


async def test_every_malformed_message_is_dead_lettered_with_its_reason(nats_url: str) -> None:
    await apply_default_streams(nats_url)
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        handled: list[str] = []

        async def handler(event: BaseEvent, msg: Msg) -> None:
            handled.append(event.course_code)  # type: ignore[attr-defined]

        subject = "academic.course.created"
        good = course("GOOD")
        unknown = good.to_bytes().replace(b'"academic.course.created"', b'"academic.course.moved"')
        deleted = CourseDeletedEvent(course_code="CS101")
        max_payload = client.nc.max_payload
        hostile = {
            "unknown": unknown,
            "nested": b"[" * 100_000,
            "invalid": good.to_bytes().replace(b'"credits":3', b'"credits":"many"'),
            "contradicts": deleted.to_bytes(),
            "huge": b"{" + b" " * (max_payload - 200),
        }
        for body in hostile.values():
            await client.js.publish(subject, body)
        await client.js.publish(subject, good.to_bytes())
        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS", ConsumerConfig(durable_name="notes"), fetch_timeout=0.2
        )
        async with consuming(consumer, handler) as task:
            await until(lambda: handled == ["GOOD"] or task.done())
        assert handled == ["GOOD"] and consumer.dead_lettered == len(hostile)
        letters = await list_dead_letters(client)
        reasons = [letter.reason for letter in letters]
        assert "unknown event_type 'academic.course.moved'" in reasons[0]
        assert "RecursionError" in reasons[1]
        assert "invalid academic.course.created event" in reasons[2]
        assert "'academic.course.deleted' event on subject 'academic.course.created'" in reasons[3]
        huge = await client.js.get_msg("DEAD_LETTERS", letters[4].seq)
        assert not huge.data
        assert huge.headers is not None
        assert f"max_payload of {max_payload}" in huge.headers[PAYLOAD_OMITTED_HEADER]
        with pytest.raises(OutboxError, match="stored without its payload"):
            await replay_dead_letter(client, letters[4].seq)


async def test_replay_refuses_a_forged_subject_and_listing_an_empty_stream_works(
    nats_url: str,
) -> None:
    await apply_default_streams(nats_url)
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        await ensure_dead_letter_stream(client)
        assert await list_dead_letters(client) == []  # was JetStream error 10003 (seq 0)
        await client.js.publish("academic.course.created", course("KEEP").to_bytes())
        forged = {
            "Vertector-Original-Subject": "$JS.API.STREAM.PURGE.ACADEMIC_EVENTS",
            "Vertector-Dead-Reason": "forged",
        }
        ack = await client.js.publish("deadletter.x", b"", headers=forged)
        with pytest.raises(OutboxError, match=r"reserved namespace \(\$JS\)"):
            await replay_dead_letter(client, ack.seq)
        # A header that steers the server (here: accepted by DEAD_LETTERS, refused elsewhere).
        steering = {
            "Vertector-Original-Subject": "academic.course.created",
            "Nats-Expected-Stream": "DEAD_LETTERS",
        }
        ack = await client.js.publish("deadletter.y", course("X").to_bytes(), headers=steering)
        with pytest.raises(OutboxError, match="Nats-Expected-Stream"):
            await replay_dead_letter(client, ack.seq)
        assert (await client.js.stream_info("ACADEMIC_EVENTS")).state.messages == 1

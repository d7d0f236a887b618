"""Fan-out: several services consume the same academic events, each with its own durable and
inbox, each applying every event exactly once (the `fanout` stream profile); on the product's
default work-queue stream the second service gets an error that names the fix."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox_client import (
    BaseEvent,
    ConsumerConfig,
    EventConsumer,
    Inbox,
    NATSClient,
    NATSConfig,
    OutboxError,
)
from outbox_client.inbox import Effect
from outbox_client.streams import STREAM_PROFILES
from tests.integration.test_consumer import course, until
from tests.relayrun import apply_default_streams, engine


async def test_two_services_each_apply_every_event_once_on_the_fanout_profile(
    nats_url: str, database_url: str
) -> None:
    await apply_default_streams(nats_url, STREAM_PROFILES["fanout"])
    events = [course(f"F{i}") for i in range(40)]
    async with engine(database_url) as eng, NATSClient(NATSConfig(servers=[nats_url])) as client:
        applied: dict[str, list[str]] = {"notes": [], "search": []}

        def effect_of(service: str) -> Effect:
            async def effect(conn: AsyncConnection, event: BaseEvent) -> None:
                applied[service].append(str(event.event_id))

            return effect

        consumers = []
        for service in applied:
            consumer = EventConsumer(
                client, "ACADEMIC_EVENTS",
                ConsumerConfig(durable_name=f"{service}-consumer", filter_subjects=("academic.>",)),
                batch_size=16, fetch_timeout=0.2, concurrency=2,
            )  # fmt: skip
            handler = Inbox(eng, consumer=service).batch_handler(effect_of(service))
            consumers.append((consumer, asyncio.create_task(consumer.subscribe_batches(handler))))
        for e in events:
            await client.js.publish(
                e.subject, e.to_bytes(), headers={"Nats-Msg-Id": f"{e.event_id}"}
            )
        for e in events[:5]:  # re-published past the duplicate window: the inboxes drop them
            await client.js.publish(e.subject, e.to_bytes())
        try:
            await until(lambda: all(c.processed >= len(events) + 5 for c, _ in consumers))
        finally:
            for consumer, task in consumers:
                consumer.stop()
                await asyncio.wait_for(task, 10)
    want = sorted(str(e.event_id) for e in events)
    assert sorted(applied["notes"]) == want and sorted(applied["search"]) == want


async def test_a_second_service_on_the_work_queue_stream_is_told_the_fix(nats_url: str) -> None:
    await apply_default_streams(nats_url)  # ACADEMIC_EVENTS is a work queue
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        for service in ("notes", "search"):
            consumer = EventConsumer(
                client, "ACADEMIC_EVENTS",
                ConsumerConfig(durable_name=f"{service}-consumer", filter_subjects=("academic.>",)),
            )  # fmt: skip
            if service == "notes":
                await consumer.ensure()
                continue
            with pytest.raises(OutboxError, match=r"work-queue stream .* --profile fanout"):
                await consumer.ensure()

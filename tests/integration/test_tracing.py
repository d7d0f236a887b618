"""One trace from the producing transaction, through the relay, to the consumer's handler."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox_client import (
    BaseEvent,
    ConsumerConfig,
    CourseCreatedEvent,
    EventConsumer,
    EventPublisher,
    Inbox,
    NATSClient,
    NATSConfig,
    enqueue,
)
from tests.relayrun import apply_default_streams, engine, running_relay

EXPORTER = InMemorySpanExporter()


def provider() -> None:
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        sdk = TracerProvider()
        sdk.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(sdk)


async def test_trace_id_flows_from_enqueue_to_the_handler(database_url: str, nats_url: str) -> None:
    provider()
    EXPORTER.clear()
    await apply_default_streams(nats_url)
    tracer = trace.get_tracer("schedule-service")
    seen: list[int] = []
    async with engine(database_url) as eng, running_relay(database_url, nats_url):
        with tracer.start_as_current_span("POST /courses") as request_span:
            async with eng.begin() as conn:
                await enqueue(conn, CourseCreatedEvent(
                    course_code="TR1", course_name="Tracing", semester="F", credits=1,
                    instructor="X",
                ))  # fmt: skip
        trace_id = request_span.get_span_context().trace_id

        async def handler(event: BaseEvent, msg: Msg) -> None:
            seen.append(trace.get_current_span().get_span_context().trace_id)

        async with NATSClient(NATSConfig(servers=[nats_url])) as client:
            consumer = EventConsumer(
                client, "ACADEMIC_EVENTS", ConsumerConfig(durable_name="notes"), fetch_timeout=0.2
            )
            task = asyncio.create_task(consumer.subscribe(handler))
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.05)
            consumer.stop()
            await task
    assert seen == [trace_id]
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    relay_span = spans["publish academic.course.created"]
    consume_span = spans["consume academic.course.created"]
    assert relay_span.context.trace_id == trace_id
    assert (
        relay_span.parent is not None
        and relay_span.parent.span_id == request_span.get_span_context().span_id
    )
    assert (
        consume_span.parent is not None
        and consume_span.parent.span_id == relay_span.context.span_id
    )


async def _publish_in_a_span(client: NATSClient, code: str) -> None:
    with trace.get_tracer("schedule-service").start_as_current_span("POST /courses"):
        await EventPublisher(client).publish(CourseCreatedEvent(
            course_code=code, course_name="Tracing", semester="F", credits=1, instructor="X",
        ))  # fmt: skip


async def _publish_and_consume(nats_url: str, tracing: bool, durable: str) -> dict[str, str]:
    """Publish one event with EventPublisher inside a span and consume it; the headers seen."""
    config = NATSConfig(servers=[nats_url], enable_tracing=tracing)
    headers: dict[str, str] = {}
    async with NATSClient(config) as client:
        await _publish_in_a_span(client, "TR2")

        async def handler(event: BaseEvent, msg: Msg) -> None:
            headers.update(msg.headers or {})
            consumer.stop()

        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS", ConsumerConfig(durable_name=durable), fetch_timeout=0.2
        )
        await asyncio.wait_for(consumer.subscribe(handler), 30)
    return headers


async def test_nats_enable_tracing_is_honoured_by_event_publisher_and_consumer(
    nats_url: str,
) -> None:
    provider()
    await apply_default_streams(nats_url)
    EXPORTER.clear()
    assert "traceparent" in await _publish_and_consume(nats_url, True, "tracing")
    assert "consume academic.course.created" in {s.name for s in EXPORTER.get_finished_spans()}

    EXPORTER.clear()
    assert "traceparent" not in await _publish_and_consume(nats_url, False, "tracing")
    assert "consume academic.course.created" not in {s.name for s in EXPORTER.get_finished_spans()}


async def _through_the_inbox(nats_url: str, database_url: str, tracing: bool) -> None:
    """Publish one event inside a span and apply it with Inbox.batch_handler(effect)."""
    config = NATSConfig(servers=[nats_url], enable_tracing=tracing)
    async with NATSClient(config) as client, engine(database_url) as eng:
        await _publish_in_a_span(client, "TR3")

        async def effect(conn: AsyncConnection, event: BaseEvent) -> None:
            consumer.stop()

        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS", ConsumerConfig(durable_name="inbox-tracing"),
            fetch_timeout=0.2,
        )  # fmt: skip
        handler = Inbox(eng, consumer=f"inbox-{tracing}").batch_handler(effect)
        await asyncio.wait_for(consumer.subscribe_batches(handler), 30)
        assert consumer.processed == 1


async def test_inbox_spans_follow_nats_enable_tracing(nats_url: str, database_url: str) -> None:
    provider()
    await apply_default_streams(nats_url)
    EXPORTER.clear()
    await _through_the_inbox(nats_url, database_url, True)
    assert "consume academic.course.created" in {s.name for s in EXPORTER.get_finished_spans()}

    EXPORTER.clear()
    await _through_the_inbox(nats_url, database_url, False)
    assert "consume academic.course.created" not in {s.name for s in EXPORTER.get_finished_spans()}

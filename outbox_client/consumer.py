"""``EventConsumer``: typed, durable pull consumers with retries and dead letters.

>>> consumer = EventConsumer(client=client, stream_name="ACADEMIC_EVENTS",
...     consumer_config=ConsumerConfig(durable_name="notes-service-consumer",
...                                    filter_subjects=["academic.course.*"]),
...     batch_size=10)  # doctest: +SKIP
>>> await consumer.subscribe(handle_event)  # doctest: +SKIP

The handler is ``async def handler(event: BaseEvent, msg: Msg)``. It may ack, nak or term the
message itself; when it returns without doing so the message is acked. An exception is a
retry (``nak`` with a growing delay), :class:`PermanentError` is not; after ``max_deliver``
deliveries, or for a permanent error or undecodable bytes, the message goes to the dead-letter
stream with its reason and original headers, and is terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api as js_api
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from outbox_client.client import NATSClient
from outbox_client.errors import EventDecodeError, OutboxError
from outbox_client.events.base import BaseEvent
from outbox_client.events.registry import decode_event
from outbox_client.headers import Header
from outbox_client.tracing import consumer_span

logger = logging.getLogger("outbox_client.consumer")

Handler = Callable[[BaseEvent, Msg], Awaitable[None]]

DEAD_LETTER_STREAM = "DEAD_LETTERS"
DEAD_LETTER_PREFIX = "deadletter"


HANDLER_SECONDS = Histogram(
    "vertector_consumer_handler_seconds",
    "Time a handler took for one message",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_REGISTERED: dict[str, EventConsumer] = {}


class _ConsumerCollector(Collector):
    """Counters of every EventConsumer in the process, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        names = {
            "processed": "Messages handled successfully",
            "failed": "Handler failures (retried or dead-lettered)",
            "redelivered": "Messages delivered more than once",
            "dead_lettered": "Messages sent to the dead-letter stream",
        }
        for attr, text in names.items():
            family = CounterMetricFamily(f"vertector_consumer_{attr}", text, labels=["consumer"])
            for name, consumer in sorted(_REGISTERED.items()):
                family.add_metric([name], getattr(consumer, attr))
            yield family


REGISTRY.register(_ConsumerCollector())


class RetryableError(OutboxError):
    """Raise from a handler to retry the message later (``nak`` with backoff)."""


class PermanentError(OutboxError):
    """Raise from a handler when retrying cannot help: the message is dead-lettered."""


class ConsumerConfig(BaseModel):
    """A durable pull consumer, named as in the product description."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    durable_name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    filter_subjects: tuple[str, ...] = ()
    ack_policy: Literal["explicit", "all", "none"] = "explicit"
    max_deliver: int = Field(default=5, ge=1)
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    max_ack_pending: int = Field(default=1000, ge=1)
    #: Delay before redelivery after the n-th failure (the last value repeats).
    nak_backoff_seconds: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)

    def nak_delay(self, deliveries: int) -> float:
        return self.nak_backoff_seconds[min(deliveries, len(self.nak_backoff_seconds)) - 1]

    def to_nats(self, server_version: tuple[int, int]) -> js_api.ConsumerConfig:
        config = js_api.ConsumerConfig(
            durable_name=self.durable_name,
            ack_policy=js_api.AckPolicy(self.ack_policy),
            ack_wait=self.ack_wait_seconds,
            # Server-side redelivery is unlimited: the consumer counts deliveries itself and
            # dead-letters at max_deliver, so a crash on the last try cannot strand a message.
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            deliver_policy=js_api.DeliverPolicy.ALL,
        )
        if len(self.filter_subjects) == 1:
            config.filter_subject = self.filter_subjects[0]
        elif self.filter_subjects:
            if server_version < (2, 10):
                raise OutboxError(
                    "several filter_subjects need nats-server 2.10+; this server is "
                    f"{server_version[0]}.{server_version[1]}: use one wildcard subject instead"
                )
            config.filter_subjects = list(self.filter_subjects)
        return config


class EventConsumer:
    """Fetches batches from a durable pull consumer and hands typed events to a handler.

    Several processes with the same ``durable_name`` share the work.
    """

    def __init__(
        self,
        client: NATSClient,
        stream_name: str,
        consumer_config: ConsumerConfig,
        batch_size: int = 10,
        *,
        fetch_timeout: float = 1.0,
        dead_letter_stream: str | None = DEAD_LETTER_STREAM,
        unknown: Literal["error", "generic"] = "error",
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.client = client
        self.stream_name = stream_name
        self.config = consumer_config
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.dead_letter_stream = dead_letter_stream
        self.unknown = unknown
        self.concurrency = concurrency
        self._stop = asyncio.Event()
        self.processed = 0
        self.failed = 0
        self.dead_lettered = 0
        self.redelivered = 0
        self.handler_seconds = 0.0
        # NATS_ENABLE_METRICS=false: no vertector_consumer_* series for this consumer.
        self.handler_latency = (
            HANDLER_SECONDS.labels(consumer_config.durable_name)
            if client.config.enable_metrics
            else None
        )
        if client.config.enable_metrics:
            _REGISTERED[consumer_config.durable_name] = self

    async def ensure(self) -> None:
        """Create or update the durable consumer (and the dead-letter stream)."""
        js = self.client.js
        version = self.client.nc.connected_server_version
        config = self.config.to_nats((version.major, version.minor))
        await js.add_consumer(self.stream_name, config)
        if self.dead_letter_stream:
            await ensure_dead_letter_stream(self.client, self.dead_letter_stream)

    def stop(self) -> None:
        """Finish the message in hand and return from :meth:`subscribe`."""
        self._stop.set()

    async def subscribe(self, handler: Handler, *, stop: asyncio.Event | None = None) -> None:
        """Consume until :meth:`stop` is called (or ``stop`` is set)."""
        await self.ensure()
        sub = await self.client.js.pull_subscribe_bind(
            durable=self.config.durable_name, stream=self.stream_name
        )
        # fetch() returns at least every fetch_timeout, so a stop is noticed within that time.
        try:
            while not (self._stop.is_set() or (stop is not None and stop.is_set())):
                try:
                    msgs = await sub.fetch(self.batch_size, timeout=self.fetch_timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    # nats-py raises either, depending on where in fetch() time runs out.
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                    await asyncio.sleep(0.5)
                    continue
                await self._handle_batch(msgs, handler)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _handle_batch(self, msgs: list[Msg], handler: Handler) -> None:
        if self.concurrency == 1:
            for msg in msgs:
                await self._handle(msg, handler)
            return
        # Messages of one partition key run in order; different keys run side by side.
        lanes: dict[str, list[Msg]] = {}
        for msg in msgs:
            key = (msg.headers or {}).get(Header.PARTITION_KEY.value) or msg.subject
            lanes.setdefault(key, []).append(msg)
        gate = asyncio.Semaphore(self.concurrency)

        async def lane(items: list[Msg]) -> None:
            async with gate:
                for msg in items:
                    await self._handle(msg, handler)

        await asyncio.gather(*(lane(items) for items in lanes.values()))

    async def _handle(self, msg: Msg, handler: Handler) -> None:
        deliveries = msg.metadata.num_delivered
        if deliveries > 1:
            self.redelivered += 1
        try:
            event = decode_event(msg.data, unknown=self.unknown)
        except EventDecodeError as exc:
            await self._dead_letter(msg, f"undecodable: {exc}"[:500])
            return
        started = time.perf_counter()
        try:
            with consumer_span(msg.headers, event.event_type, self.client.config.enable_tracing):
                await handler(event, msg)
        except PermanentError as exc:
            self.failed += 1
            await self._dead_letter(msg, f"permanent: {exc}"[:500])
            return
        except Exception as exc:  # the handler's failure is a retry, by contract
            self.failed += 1
            if deliveries >= self.config.max_deliver:
                await self._dead_letter(
                    msg, f"failed {deliveries} deliveries; last: {type(exc).__name__}: {exc}"[:500]
                )
                return
            logger.warning(
                "consumer.handler.failed event_id=%s deliveries=%d error=%s",
                event.event_id, deliveries, type(exc).__name__,
            )  # fmt: skip
            if not msg._ackd:
                await msg.nak(delay=self.config.nak_delay(deliveries))
            return
        self.processed += 1
        self.handler_seconds = time.perf_counter() - started
        if self.handler_latency is not None:
            self.handler_latency.observe(self.handler_seconds)
        if not msg._ackd and self.config.ack_policy != "none":
            await msg.ack()

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        if self.dead_letter_stream:
            await publish_dead_letter(self.client, msg, reason, consumer=self.config.durable_name)
        self.dead_lettered += 1
        logger.warning("consumer.message.dead_lettered subject=%s reason=%s", msg.subject, reason)
        if not msg._ackd:
            await msg.term()


async def ensure_dead_letter_stream(client: NATSClient, name: str = DEAD_LETTER_STREAM) -> None:
    try:
        await client.js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await client.js.add_stream(
            js_api.StreamConfig(
                name=name,
                subjects=[f"{DEAD_LETTER_PREFIX}.>"],
                retention=js_api.RetentionPolicy.LIMITS,
                storage=js_api.StorageType.FILE,
                max_age=30 * 24 * 3600,
            )
        )


async def publish_dead_letter(client: NATSClient, msg: Msg, reason: str, *, consumer: str) -> Any:
    """Store ``msg`` on ``deadletter.<subject>`` with why, where from and its original headers."""
    headers = dict(msg.headers or {})
    original_id = headers.get("Nats-Msg-Id", "")
    headers.update(
        {
            "Nats-Msg-Id": f"dl:{consumer}:{original_id or msg.metadata.sequence.stream}",
            "Vertector-Dead-Reason": reason.replace("\r", " ").replace("\n", " "),
            "Vertector-Original-Subject": msg.subject,
            "Vertector-Original-Stream": msg.metadata.stream,
            "Vertector-Original-Seq": str(msg.metadata.sequence.stream),
            "Vertector-Consumer": consumer,
            "Vertector-Deliveries": str(msg.metadata.num_delivered),
        }
    )
    return await client.js.publish(f"{DEAD_LETTER_PREFIX}.{msg.subject}", msg.data, headers=headers)

"""``EventConsumer``: typed, durable pull consumers with retries and dead letters.

>>> consumer = EventConsumer(client=client, stream_name="ACADEMIC_EVENTS",
...     consumer_config=ConsumerConfig(durable_name="notes-service-consumer",
...                                    filter_subjects=["academic.course.*"]),
...     batch_size=10)  # doctest: +SKIP
>>> await consumer.subscribe(handle_event)  # doctest: +SKIP

The handler is ``async def handler(event: BaseEvent, msg: Msg)``. It may ack, nak or term the
message itself; when it returns without doing so the message is acked. An exception is a
retry (``nak`` with a growing delay), :class:`PermanentError` is not; after ``max_deliver``
deliveries, or for a permanent error or a message that is not a valid event of its subject,
the message goes to the dead-letter stream with its reason and original headers, and is
terminated.

:meth:`EventConsumer.subscribe_batches` takes a :data:`BatchHandler` instead (what
``Inbox.batch_handler`` gives): it receives the events of one lane of a fetched batch, in
order, applies them in one transaction, and says how many it finished; the consumer acks
those after the commit and retries or dead-letters the one that failed.

Order and crashes: messages are split into ``concurrency`` lanes by partition key, so one key's
events are handled in stream order. A failed message holds back the later messages of its key
(they are nak'ed behind it) until it succeeds or is dead-lettered. Redelivered messages are
handled one at a time, each acknowledged before the next, so a message that kills the process
is the first unresolved one at the next start (with ``ordered_restart``, a start waits
``ack_wait`` when the durable holds unacknowledged messages, so that newer messages of their
keys do not overtake them: meant for one process per durable, as a sibling's in-flight
messages look the same); one
delivered more than ``max_deliver`` times without an outcome, and the oldest the durable has
not settled, is dead-lettered without running the handler again, one such message per start
(messages merely in flight with it when the process died share its count and run as usual).
A poison message therefore costs ``max_deliver + 1`` deliveries (at most
``2 * max_deliver + 1`` whatever its place), never a crash loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api as js_api
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from outbox_client.checkpoints import NO_CHECKPOINTS, Checkpoints
from outbox_client.client import NATSClient
from outbox_client.errors import OutboxError
from outbox_client.events.base import BaseEvent
from outbox_client.events.registry import decode_event
from outbox_client.headers import Header
from outbox_client.policy import MAX_HEADER_BLOCK, RESERVED_HEADER_PREFIX, header_block_size
from outbox_client.pull import Puller
from outbox_client.tracing import consumer_span

logger = logging.getLogger("outbox_client.consumer")

Handler = Callable[[BaseEvent, Msg], Awaitable[None]]

DEAD_LETTER_STREAM = "DEAD_LETTERS"
DEAD_LETTER_PREFIX = "deadletter"
#: Set on a dead letter stored without its payload (it would not fit the server's max_payload).
PAYLOAD_OMITTED_HEADER = "Vertector-Dead-Payload"


#: Fewest events a lane of a fetched batch gets before the batch is split into more lanes.
LANE_MIN = 32

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
    #: Deliveries of a failing message before it is dead-lettered (see the module docstring
    #: for a message that kills its process).
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


@dataclass(frozen=True)
class Delivery:
    """One decoded message: the event, the message it came in, its partition key and JetStream
    metadata (each read once from the message), and whether handlers record a tracing span for
    it (``NATS_ENABLE_TRACING``)."""

    event: BaseEvent
    msg: Msg
    key: str
    meta: Msg.Metadata
    trace: bool = True

    @classmethod
    def of(
        cls, event: BaseEvent, msg: Msg, *, meta: Msg.Metadata | None = None, trace: bool = True
    ) -> Delivery:
        key = (msg.headers or {}).get(Header.PARTITION_KEY.value) or event.partition_key
        return cls(event, msg, key, meta or msg.metadata, trace)

    @property
    def deliveries(self) -> int:
        return int(self.meta.num_delivered)

    @property
    def seq(self) -> int:
        return int(self.meta.sequence.stream)


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch handler finished: ``deliveries[:done]`` are committed (applied, or seen
    before); when ``error`` is set, ``deliveries[done]`` failed with it and the rest did not run.
    """

    done: int
    error: Exception | None = None


#: Handles the deliveries of one lane in order; returns after committing what it finished.
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[BatchOutcome]]


@dataclass
class _Block:
    """A key held back behind a failed message until it is resolved (or ``until``)."""

    seq: int
    delay: float
    until: float


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
        checkpoints: Checkpoints = NO_CHECKPOINTS,
        ordered_restart: bool = False,
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
        self.checkpoints = checkpoints
        self.ordered_restart = ordered_restart
        self._stop = asyncio.Event()
        self._blocked: dict[str, _Block] = {}
        # Deliveries a message spent held back behind its key's failed one (stream seq ->
        # count): they are not tries, so they count neither towards max_deliver nor as a
        # redelivery to handle one at a time.
        self._holds: dict[int, int] = {}
        # One message per start is dead-lettered as the one that stopped the consumer: those
        # in flight with it share its delivery count, and run (one that kills is the first
        # at the next start).
        self._spent_one = False
        self._batch_acked = 0
        self._batch_total = 0
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
        try:
            await js.add_consumer(self.stream_name, config)
        except nats.js.errors.BadRequestError as exc:
            raise _explain(exc, self.stream_name, self.config) from exc
        if self.dead_letter_stream:
            await ensure_dead_letter_stream(self.client, self.dead_letter_stream)

    def stop(self) -> None:
        """Finish the message in hand and return from :meth:`subscribe`."""
        self._stop.set()

    async def subscribe(self, handler: Handler, *, stop: asyncio.Event | None = None) -> None:
        """Consume until :meth:`stop` is called (or ``stop`` is set), one event at a time."""
        await self.subscribe_batches(_one_at_a_time(handler), stop=stop)

    async def subscribe_batches(
        self, handler: BatchHandler, *, stop: asyncio.Event | None = None
    ) -> None:
        """Consume until stopped, handing each lane of a fetched batch to ``handler`` at once
        (e.g. ``Inbox.batch_handler``: one transaction per lane)."""
        await self.ensure()
        self._spent_one = False
        if self.ordered_restart:
            await self._after_a_crash(stop)
        puller = Puller(
            self.client, self.stream_name, self.config.durable_name,
            batch=self.batch_size, expires=self.fetch_timeout,
        )  # fmt: skip
        await puller.start()
        # fetch() returns at least every fetch_timeout, so a stop is noticed within that time.
        try:
            while not (self._stop.is_set() or (stop is not None and stop.is_set())):
                try:
                    msgs = await puller.fetch(self.fetch_timeout)
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                    await asyncio.sleep(0.5)
                    continue
                if msgs:
                    await self._handle_batch(msgs, handler)
        finally:
            for msg in await puller.stop():  # delivered for the next fetch: back at once
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak()

    async def _after_a_crash(self, stop: asyncio.Event | None) -> None:
        """Messages delivered but never acknowledged (a consumer of this durable died holding
        them) come back after ``ack_wait``; newer messages of their keys must not overtake
        them, so a start with such messages waits that long first."""
        info = await self.client.js.consumer_info(self.stream_name, self.config.durable_name)
        if not info.num_ack_pending:
            return
        wait = self.config.ack_wait_seconds + 0.5
        logger.warning(
            "consumer.start.pending durable=%s unacknowledged=%d: waiting %.1f s (ack_wait) for "
            "their redelivery so that each key stays in order",
            self.config.durable_name, info.num_ack_pending, wait,
        )  # fmt: skip
        stopping = [asyncio.ensure_future(e.wait()) for e in (self._stop, stop) if e is not None]
        await asyncio.wait(stopping, timeout=wait)
        for waiter in stopping:
            waiter.cancel()

    async def _handle_batch(self, msgs: list[Msg], handler: BatchHandler) -> None:
        self._batch_acked, self._batch_total = 0, len(msgs)
        fresh: list[Delivery] = []
        again: list[Delivery] = []
        for msg in msgs:
            delivery = await self._decode(msg)
            if delivery is None or await self._held_back(delivery):
                continue
            (again if self._tries(delivery) > 1 else fresh).append(delivery)
        # Redeliveries one at a time, each acknowledged before the next (see the docstring).
        for delivery in sorted(again, key=lambda d: d.seq):
            if not self._spent_one and await self._stopped_the_consumer(delivery):
                self._spent_one = True
                await self._dead_letter(
                    delivery.msg,
                    f"delivered {self._tries(delivery)} times without an outcome (max_deliver "
                    f"{self.config.max_deliver}): the consumer stopped while handling it",
                )
                self._resolved(delivery)
                continue
            await self._run_lane([delivery], handler, flush=True)
        # A lane is a transaction: a small batch (a consumer keeping pace) is one, a backlog's
        # batch is spread over up to ``concurrency`` lanes of at least LANE_MIN events each.
        count = max(1, min(self.concurrency, len(fresh) // LANE_MIN))
        lanes: dict[int, list[Delivery]] = {}
        for delivery in fresh:
            lanes.setdefault(hash(delivery.key) % count, []).append(delivery)
        await asyncio.gather(*(self._run_lane(lane, handler) for lane in lanes.values()))

    async def _stopped_the_consumer(self, delivery: Delivery) -> bool:
        """Whether a redelivered message is one that stopped the consumer ``max_deliver``
        times: delivered more often than that, and the oldest message the durable has not
        settled (its ack floor's next). Messages that were merely in flight behind it when the
        process died have the same delivery count but come after it: they run (if one of them
        kills too, it is the first such message at a later start). Past twice ``max_deliver``
        it counts whatever its place, so that a poison message costs a bounded number of
        deliveries. The caller asks for one message per start."""
        tries = self._tries(delivery)
        if tries <= self.config.max_deliver:
            return False
        if tries > 2 * self.config.max_deliver:
            return True
        info = await self.client.js.consumer_info(self.stream_name, self.config.durable_name)
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else None
        return delivery.seq <= (floor or 0) + 1

    async def _decode(self, msg: Msg) -> Delivery | None:
        """The message as an event of its subject, or ``None`` after dead-lettering it."""
        meta = msg.metadata  # parsed from the reply subject at each access: once here
        if meta.num_delivered > 1:
            self.redelivered += 1
        try:
            event = decode_event(msg.data, unknown=self.unknown)
        except Exception as exc:  # whatever the bytes do is their problem, never the consumer's
            await self._dead_letter(msg, f"undecodable: {type(exc).__name__}: {exc}")
            return None
        if event.subject != msg.subject:
            await self._dead_letter(
                msg,
                f"undecodable: a {event.event_type!r} event on subject {msg.subject!r} "
                "(the body's event_type must be its subject)",
            )
            return None
        return Delivery.of(event, msg, meta=meta, trace=self.client.config.enable_tracing)

    async def _held_back(self, delivery: Delivery) -> bool:
        """Nak a message whose key waits behind an earlier failed one."""
        block = self._blocked.get(delivery.key)
        if block is None or delivery.seq <= block.seq:
            return False
        if time.monotonic() > block.until:  # its failed message went to another process
            del self._blocked[delivery.key]
            return False
        await self._hold(delivery, block.delay)
        return True

    async def _hold(self, delivery: Delivery, delay: float) -> None:
        self._holds[delivery.seq] = self._holds.get(delivery.seq, 0) + 1
        await delivery.msg.nak(delay=delay)

    def _tries(self, delivery: Delivery) -> int:
        """Deliveries of ``delivery`` that were tries: those it spent held back in this
        process do not count (a restart forgets them: they count then)."""
        return delivery.deliveries - self._holds.get(delivery.seq, 0)

    def _resolved(self, delivery: Delivery) -> None:
        self._holds.pop(delivery.seq, None)
        block = self._blocked.get(delivery.key)
        if block is not None and block.seq == delivery.seq:
            del self._blocked[delivery.key]

    async def _run_lane(
        self, lane: Sequence[Delivery], handler: BatchHandler, *, flush: bool = False
    ) -> None:
        """Hand ``lane`` to ``handler``; ack what it finished, then deal with a failure and
        go on with what is left (minus the failed key's later messages when it is retried)."""
        pending = list(lane)
        while pending:
            started = time.perf_counter()
            outcome = await handler(pending)
            finished = pending[: outcome.done]
            if finished:
                per_event = (time.perf_counter() - started) / len(finished)
                self.checkpoints.reached("after_commit_before_ack")
                await self._ack(finished, flush=flush)
                for delivery in finished:
                    if self.handler_latency is not None:
                        self.handler_latency.observe(per_event)
                    self._resolved(delivery)
                self.handler_seconds = per_event
            if outcome.error is None or outcome.done >= len(pending):
                return
            failed, rest = pending[outcome.done], pending[outcome.done + 1 :]
            if await self._failed(failed, outcome.error):
                held = [d for d in rest if d.key == failed.key]
                for delivery in held:
                    await self._hold(delivery, self._blocked[failed.key].delay)
                rest = [d for d in rest if d.key != failed.key]
            else:
                self._resolved(failed)
            pending = rest

    async def _ack(self, finished: Sequence[Delivery], *, flush: bool) -> None:
        for delivery in finished:
            if not delivery.msg._ackd and self.config.ack_policy != "none":
                await delivery.msg.ack()  # a publish: sent with the next flush, not awaited
        self.processed += len(finished)
        self._batch_acked += len(finished)
        mid_batch = self.checkpoints.armed("mid_batch") and self._batch_acked < self._batch_total
        if flush or mid_batch:
            await self.client.nc.flush()
        if mid_batch:
            self.checkpoints.reached("mid_batch")

    async def _failed(self, delivery: Delivery, exc: Exception) -> bool:
        """Dead-letter or nak a message whose handler failed; ``True`` when it will retry."""
        self.failed += 1
        msg, deliveries = delivery.msg, self._tries(delivery)
        if isinstance(exc, PermanentError):
            await self._dead_letter(msg, f"permanent: {exc}")
            return False
        if deliveries >= self.config.max_deliver:
            await self._dead_letter(
                msg, f"failed {deliveries} deliveries; last: {type(exc).__name__}: {exc}"
            )
            return False
        logger.warning(
            "consumer.handler.failed event_id=%s deliveries=%d error=%s",
            delivery.event.event_id, deliveries, type(exc).__name__,
        )  # fmt: skip
        if msg._ackd:  # the handler settled it itself
            return False
        delay = self.config.nak_delay(deliveries)
        await msg.nak(delay=delay)
        until = time.monotonic() + delay + self.config.ack_wait_seconds
        self._blocked[delivery.key] = _Block(delivery.seq, delay, until)
        return True

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        reason = reason[:500]
        if self.dead_letter_stream:
            try:
                await publish_dead_letter(
                    self.client, msg, reason, consumer=self.config.durable_name
                )
            except (TimeoutError, nats.errors.Error) as exc:
                # Not stored, so not terminated: it comes back after a delay.
                logger.error(
                    "consumer.dead_letter.failed subject=%s error=%s: %s",
                    msg.subject, type(exc).__name__, exc,
                )  # fmt: skip
                if not msg._ackd:
                    await msg.nak(delay=self.config.nak_delay(msg.metadata.num_delivered))
                return
        self.dead_lettered += 1
        logger.warning("consumer.message.dead_lettered subject=%s reason=%s", msg.subject, reason)
        if not msg._ackd:
            await msg.term()


def _one_at_a_time(handler: Handler) -> BatchHandler:
    """A per-event handler as a batch handler (each event settles on its own)."""

    async def handle(deliveries: Sequence[Delivery]) -> BatchOutcome:
        for done, delivery in enumerate(deliveries):
            try:
                with consumer_span(delivery.msg.headers, delivery.event.event_type, delivery.trace):
                    await handler(delivery.event, delivery.msg)
            except Exception as exc:  # the handler's failure is a retry, by contract
                return BatchOutcome(done, exc)
        return BatchOutcome(len(deliveries))

    return handle


def _explain(exc: nats.js.errors.BadRequestError, stream: str, config: ConsumerConfig) -> Exception:
    """JetStream's refusal to create a consumer, with the fix when we know it."""
    if exc.err_code == 10100:  # filtered consumer not unique on workqueue stream
        return OutboxError(
            f"durable {config.durable_name!r} cannot consume {stream}: it is a work-queue "
            "stream and another service's durable already takes these subjects (JetStream "
            "error 10100: each message of a work queue goes to one consumer). For several "
            "services on the same events, apply the fan-out profile (`vertector-relay streams "
            "apply --profile fanout`: limits retention) or give each service its own subjects"
        )
    return exc


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
    """Store ``msg`` on ``deadletter.<subject>`` with why, where from and its original headers.

    Original ``Nats-*`` headers are dropped (they would steer the dead-letter stream). A letter
    that would not fit the server's ``max_payload`` is stored without its payload, and one whose
    headers would pass the 64 KiB block without the original headers; both say so in a header.
    """
    original = {
        k: v for k, v in (msg.headers or {}).items()
        if not k.lower().startswith(RESERVED_HEADER_PREFIX)
    }  # fmt: skip
    original_id = (msg.headers or {}).get(Header.MSG_ID.value, "")
    ours = {
        Header.MSG_ID.value: f"dl:{consumer}:{original_id or msg.metadata.sequence.stream}",
        "Vertector-Dead-Reason": reason.replace("\r", " ").replace("\n", " "),
        "Vertector-Original-Subject": msg.subject,
        "Vertector-Original-Stream": msg.metadata.stream,
        "Vertector-Original-Seq": str(msg.metadata.sequence.stream),
        "Vertector-Consumer": consumer,
        "Vertector-Deliveries": str(msg.metadata.num_delivered),
    }
    headers = original | ours
    if header_block_size(headers) > MAX_HEADER_BLOCK // 2:
        headers = ours | {"Vertector-Dead-Headers": "omitted: the original block was too large"}
    data = msg.data or b""
    limit = client.nc.max_payload
    if len(data) + header_block_size(headers) + 256 > limit:
        headers[PAYLOAD_OMITTED_HEADER] = (
            f"omitted: {len(data)} bytes with its headers exceed the server's max_payload of "
            f"{limit} bytes"
        )
        data = b""
    return await client.js.publish(f"{DEAD_LETTER_PREFIX}.{msg.subject}", data, headers=headers)

"""The NATS JetStream implementation of :class:`relay.ports.Publisher`.

It gathers the facts about each publish as typed answers (:mod:`relay.pubacks`), including,
for "no responders" seen ``no_stream_max_attempts`` times, JetStream's API's word on which
stream captures the subject; :mod:`relay.classify` says what they mean.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from outbox_client.client import NATSConnectionError, connect_nats
from outbox_client.headers import Header
from outbox_client.nats_config import NATSConfig
from outbox_client.streams import StreamConfig
from outbox_client.tracing import relay_span_headers
from relay.checkpoints import NO_CHECKPOINTS, Checkpoints
from relay.checks import Admission, outgoing_headers, oversize
from relay.classify import (
    NOT_SENT,
    TIMEOUT,
    classify,
    judge,
    judge_no_responders,
    refused,
    unavailable,
)
from relay.cloudevents import binary_headers
from relay.errors import PublishError
from relay.log import log_event
from relay.ports import OutboxRow, PublishResult
from relay.pubacks import (
    ApiSilent,
    NoResponders,
    NoStream,
    PubAcks,
    Reply,
    StreamAnswer,
    StreamFound,
)

logger = logging.getLogger("relay.nats")
_TRACEPARENT = Header.TRACEPARENT.value
#: nats-py's text (lower-cased) for a refused SUB; the subject follows.
_DENIED_INBOX = 'nats: permissions violation for subscription to "'


class NatsPublisher:
    """Pipelines publishes (``reply`` set, PubAcks read by :mod:`relay.pubacks`); every
    message gets ``publish_timeout``: the group is awaited with one deadline and what is still
    pending then is a timeout. "No responders" is a missing stream or a leaderless one: from a
    row's ``no_stream_max_attempts``-th such answer on, the JetStream API is asked which
    (once per subject per call to :meth:`publish`).
    """

    def __init__(
        self,
        config: NATSConfig,
        *,
        streams: Sequence[StreamConfig],
        max_in_flight: int,
        publish_timeout: float,
        no_stream_max_attempts: int = 20,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
        cloudevents: bool = False,
    ) -> None:
        self.config = config
        self.cloudevents = cloudevents
        self.admission = Admission(streams)
        self.max_in_flight = max_in_flight
        self.publish_timeout = publish_timeout
        self.no_stream_max_attempts = no_stream_max_attempts
        self.checkpoints = checkpoints
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._acks = PubAcks()
        self.connected = asyncio.Event()
        self._closing = False  # a stop we asked for: its disconnect is no news
        self._inbox_denied = False  # the server refused our subscription to our own replies

    # --- connection ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect once, within the bounded time of :func:`connect_nats`; raises
        :class:`PublishError` with the cause when no server answers or one refuses us."""
        self._closing = False
        try:
            nc = await connect_nats(
                self.config,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
            )
        except NATSConnectionError as exc:
            raise PublishError(str(exc)) from exc
        acks = PubAcks()
        self._inbox_denied = False
        try:
            await acks.start(nc)
            # A refused SUB is answered by an -ERR that reaches _on_error before the PONG of a
            # PING sent after it. nats-py writes a PING at once but a SUB from its pending
            # buffer, so the first PING can overtake the SUB: the second one cannot.
            for _ in range(2):
                await nc.flush(math.ceil(self.config.connect_timeout_seconds))
        except (TimeoutError, nats.errors.Error) as exc:
            await nc.close()
            raise PublishError(f"cannot subscribe for PubAcks: {exc}") from exc
        if self._inbox_denied:
            await nc.close()
            raise PublishError(
                f"the NATS user may not subscribe to {self.config.inbox_prefix}.> where its "
                "replies (PubAcks, JetStream API answers) come back: set NATS_INBOX_PREFIX to the "
                "reply prefix its permissions allow (deploy/nats/relay-permissions.conf allows "
                "_INBOX_relay, the relay's default)"
            )
        self._nc, self._acks = nc, acks
        self._js = nc.jetstream()
        self.connected.set()
        log_event(
            logger,
            "relay.nats.connected",
            # host and port only: the URL's user info may hold a password or a token
            server=f"{nc.connected_url.hostname}:{nc.connected_url.port}"
            if nc.connected_url
            else "",
            max_payload=nc.max_payload,
        )

    @property
    def client(self) -> Client:
        if self._nc is None:
            raise PublishError("not connected to NATS: call connect() first")
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise PublishError("not connected to NATS: call connect() first")
        return self._js

    async def _on_error(self, exc: Exception) -> None:
        # Permission violations and protocol errors arrive here, not at the publish call. A
        # violation for a publish in flight becomes that event's verdict (and its log entry).
        if self._acks.on_error(exc):
            return
        if str(exc).lower().startswith(_DENIED_INBOX + self.config.inbox_prefix.lower() + "."):
            self._inbox_denied = True
        log_event(
            logger, "relay.nats.error", level=logging.WARNING, error=f"{type(exc).__name__}: {exc}"
        )

    def _news(self) -> int:
        """A connection lost by surprise is a warning; one we close on purpose is not."""
        return logging.DEBUG if self._closing else logging.WARNING

    async def _on_disconnected(self) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected:
            log_event(logger, "relay.nats.disconnected", level=self._news())

    async def _on_reconnected(self) -> None:
        self.connected.set()
        log_event(logger, "relay.nats.reconnected")

    async def _on_closed(self) -> None:
        self.connected.clear()
        if self._nc is not None:  # not a first connection that failed: that one is raised
            log_event(logger, "relay.nats.closed", level=self._news())

    async def _ensure_open(self) -> None:
        # A server that rejects a frame closes the connection and nats-py does not come back:
        # replace a closed client with a new one.
        if self._nc is not None and self._nc.is_closed:
            log_event(logger, "relay.nats.replacing_closed_connection", level=logging.WARNING)
            self._nc = None
            self._js = None
        if self._nc is None:
            await self.connect()

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, rows: Sequence[OutboxRow]) -> list[PublishResult]:
        try:
            await self._ensure_open()
        except PublishError as exc:
            return [unavailable(exc)] * len(rows)
        results: list[PublishResult] = []
        streams: dict[str, StreamAnswer] = {}  # subject -> the API's answer, asked once
        # Chunks no larger than the in-flight limit: nats-py's semaphore then never blocks, since
        # every earlier future is done or cancelled (which frees its slot) before the next chunk.
        for start in range(0, len(rows), self.max_in_flight):
            chunk = rows[start : start + self.max_in_flight]
            results += await self._publish_chunk(chunk, streams)
        return results

    async def _stream_answer(self, subject: str) -> StreamAnswer:
        """Which stream captures ``subject``, as JetStream's API answers it."""
        try:
            return StreamFound(str(await self.jetstream.find_stream_name_by_subject(subject)))
        except nats.js.errors.NotFoundError:
            return NoStream()
        except (TimeoutError, nats.errors.Error, PublishError) as exc:
            return ApiSilent(type(exc).__name__)

    async def _no_responders(
        self, row: OutboxRow, streams: dict[str, StreamAnswer]
    ) -> PublishResult:
        """'No responders' once more for a row that has had it often enough to ask the API."""
        if row.subject not in streams:
            streams[row.subject] = await self._stream_answer(row.subject)
        return judge_no_responders(streams[row.subject], row.attempts + 1)

    async def _publish_chunk(
        self, rows: Sequence[OutboxRow], streams: dict[str, StreamAnswer]
    ) -> list[PublishResult]:
        nc = self.client
        max_payload = nc.max_payload
        results: list[PublishResult | None] = [None] * len(rows)
        futures: dict[asyncio.Future[Reply], int] = {}
        tracing = self.config.enable_tracing
        for index, row in enumerate(rows):
            problem = self.admission.refusal(row)
            if problem is not None:
                results[index] = refused(problem)
                continue
            headers = outgoing_headers(row)
            if tracing and _TRACEPARENT in headers:
                headers = relay_span_headers(headers, row.subject)
            if self.cloudevents:
                headers.update(binary_headers(row))
            problem = oversize(row, headers, max_payload)
            if problem is not None:
                results[index] = refused(problem)
                continue
            inbox, future = self._acks.expect(row.subject)
            try:
                await nc.publish(row.subject, row.payload, reply=inbox, headers=headers)
            except Exception as exc:  # every failure becomes a verdict: see classify()
                future.cancel()
                results[index] = classify(exc)
                continue
            futures[future] = index
        if futures:
            self.checkpoints.reached("after_publish_before_ack")
            _, pending = await asyncio.wait(futures, timeout=self.publish_timeout)
            for future in pending:
                future.cancel()
            asking = self.no_stream_max_attempts - 1  # attempts before this one
            for future, index in futures.items():
                if future.cancelled():
                    results[index] = TIMEOUT
                    continue
                answer = future.result()
                if isinstance(answer, NoResponders) and rows[index].attempts >= asking:
                    results[index] = await self._no_responders(rows[index], streams)
                else:
                    results[index] = judge(answer)
        return [r if r is not None else NOT_SENT for r in results]

    async def close(self, drain_seconds: float = 10.0) -> None:
        """Drain (flush what is buffered, wait for acks in flight) and close."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        self._closing = True
        try:
            await asyncio.wait_for(nc.drain(), drain_seconds)
        except (TimeoutError, nats.errors.Error) as exc:
            log_event(logger, "relay.nats.drain_failed", level=logging.WARNING, error=str(exc))
            await nc.close()

"""The NATS JetStream implementation of :class:`relay.ports.Publisher`.

It gathers the facts about each publish as typed answers (:mod:`relay.pubacks`), including,
for "no responders" seen ``no_stream_max_attempts`` times, JetStream's API's word on which
stream captures the subject; :mod:`relay.classify` says what they mean.

Atomic batches (``atomic_batches``, WAL capture): consecutive rows of one transaction whose
subjects one stream captures, a stream with ``allow_atomic`` on a server 2.12.1 or later (the
first to accept ``Nats-Msg-Id`` in a batch), go as one batch of ADR-50: headers
``Nats-Batch-Id`` (new for every attempt), ``Nats-Batch-Sequence`` 1..n, ``Nats-Batch-Commit: 1``
on the last, which alone asks for a reply: the PubAck of the whole batch, or its refusal.
Which streams allow it is asked at connect and again every ``ATOMIC_RECHECK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
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
from relay.checks import Admission, header_lines_size, outgoing_headers, oversize
from relay.classify import (
    NOT_SENT,
    TIMEOUT,
    classify,
    judge,
    judge_batch,
    judge_no_responders,
    refused,
    unavailable,
)
from relay.cloudevents import binary_headers
from relay.errors import PublishError
from relay.log import log_event
from relay.ports import Failure, OutboxRow, PublishResult, Stored, Verdict
from relay.pubacks import (
    AckGroup,
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
#: nats-server's limit on the messages of one atomic batch (ADR-50).
ATOMIC_BATCH_MAX = 1000
#: The first server whose atomic batches accept Nats-Msg-Id (deduplication).
ATOMIC_MIN_SERVER = (2, 12, 1)
ATOMIC_RECHECK_SECONDS = 60.0
#: A chunk's messages are handed to the socket this many at a time (at least).
SEND_EVERY = 64
_BATCH_ID = "Nats-Batch-Id"
_BATCH_SEQ = "Nats-Batch-Sequence"
_BATCH_COMMIT = "Nats-Batch-Commit"
#: Bytes the batch headers add to a message at most (a 32-hex id, sequence up to 1000).
_BATCH_HEADERS_SIZE = header_lines_size({_BATCH_ID: "x" * 32, _BATCH_SEQ: "1000",
                                         _BATCH_COMMIT: "1"})  # fmt: skip


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
        atomic_batches: bool = False,
    ) -> None:
        self.config = config
        self.atomic_batches = atomic_batches
        self._atomic: set[str] = set()  # configured streams that take atomic batches
        self._atomic_checked = -math.inf
        self._atomic_logged = False
        self._stream_of: dict[str, str | None] = {}
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
        if self.atomic_batches:
            await self._learn_atomic()
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

    # --- atomic batches --------------------------------------------------------------------

    async def _learn_atomic(self) -> None:
        """Which configured streams take atomic batches: the server's version and each
        stream's ``allow_atomic``; logged when it changes."""
        self._atomic_checked = time.monotonic()
        nc, js = self.client, self.jetstream
        version = nc.connected_server_version
        found: set[str] = set()
        why: dict[str, str] = {}
        if (version.major, version.minor, version.patch) < ATOMIC_MIN_SERVER:
            why = {s.name: f"nats-server {version} (atomic batches need 2.12.1+)"
                   for s in self.admission.streams}  # fmt: skip
        else:
            for spec in self.admission.streams:
                try:
                    info = await js.stream_info(spec.name)
                except (TimeoutError, nats.errors.Error) as exc:
                    why[spec.name] = f"stream info: {type(exc).__name__}"
                    continue
                if info.config.allow_atomic:
                    found.add(spec.name)
                else:
                    why[spec.name] = "allow_atomic is off (streams apply --allow-atomic)"
        if found != self._atomic or not self._atomic_logged:
            self._atomic_logged = True
            log_event(logger, "relay.atomic.streams", atomic=sorted(found), plain=why)
        self._atomic = found

    def _stream(self, subject: str) -> str | None:
        try:
            return self._stream_of[subject]
        except KeyError:
            pass
        name = next((s.name for s in self.admission.streams if s.captures(subject)), None)
        if len(self._stream_of) >= 10_000:
            self._stream_of.clear()
        self._stream_of[subject] = name
        return name

    def batchable(self, rows: Sequence[OutboxRow]) -> bool:
        if not self.atomic_batches or not 2 <= len(rows) <= ATOMIC_BATCH_MAX:
            return False
        stream = self._stream(rows[0].subject)
        return stream in self._atomic and all(self._stream(r.subject) == stream for r in rows)

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, rows: Sequence[OutboxRow]) -> list[PublishResult]:
        try:
            await self._ensure_open()
        except PublishError as exc:
            return [unavailable(exc)] * len(rows)
        if self.atomic_batches and time.monotonic() - self._atomic_checked > ATOMIC_RECHECK_SECONDS:
            await self._learn_atomic()
        results: list[PublishResult] = []
        streams: dict[str, StreamAnswer] = {}  # subject -> the API's answer, asked once
        # Chunks no larger than the in-flight limit: nats-py's semaphore then never blocks, since
        # every earlier future is done or cancelled (which frees its slot) before the next chunk.
        # A transaction's rows stay in one chunk.
        for chunk in _chunks(rows, self.max_in_flight):
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
        results: list[PublishResult | None] = [None] * len(rows)
        acks = AckGroup(len(rows))
        singles: list[int] = []  # rows sent alone, each awaiting its PubAck
        batches: dict[int, tuple[str, list[int]]] = {}  # commit row -> batch id, its rows
        buffered = 0  # messages buffered since the flusher last had a turn
        for group in _groups(rows):
            ready = []
            for index in group:
                headers = self._headers(rows[index], nc.max_payload)
                if isinstance(headers, Failure):
                    results[index] = headers
                else:
                    ready.append((index, headers))
            if len(ready) > 1 and len(group) > 1:
                await self._send_batch(rows, ready, results, acks, batches)
            else:
                for index, headers in ready:
                    if await self._send(rows[index], headers, results, index, acks):
                        singles.append(index)
            buffered += len(ready)
            if buffered >= SEND_EVERY:
                # Let the flusher write what is buffered: nats-server stores (and acks) these
                # on its core while this one prepares the rest, instead of the whole chunk
                # arriving at once when the loop waits for its acks.
                buffered = 0
                await asyncio.sleep(0)
        if singles or batches:
            self.checkpoints.reached("after_publish_before_ack")
            await acks.wait(self.publish_timeout)
            asking = self.no_stream_max_attempts - 1  # attempts before this one
            for index in singles:
                answer = acks.replies[index]
                if answer is None:
                    results[index] = TIMEOUT
                elif isinstance(answer, NoResponders) and rows[index].attempts >= asking:
                    results[index] = await self._no_responders(rows[index], streams)
                else:
                    results[index] = judge(answer)
            for commit, (batch_id, indexes) in batches.items():
                self._settle_batch(
                    acks.replies[commit], batch_id, [rows[i] for i in indexes], indexes, results
                )
        return [r if r is not None else NOT_SENT for r in results]

    def _headers(self, row: OutboxRow, max_payload: int) -> dict[str, str] | Failure:
        """The message's headers, or why it may not go."""
        problem = self.admission.refusal(row)
        if problem is not None:
            return refused(problem)
        headers = outgoing_headers(row)
        if self.config.enable_tracing and _TRACEPARENT in headers:
            headers = relay_span_headers(headers, row.subject)
        if self.cloudevents:
            headers.update(binary_headers(row))
        # Room for the batch headers, which a message may get.
        problem = oversize(row, headers, max_payload, reserve=_BATCH_HEADERS_SIZE)
        return refused(problem) if problem is not None else headers

    async def _send(
        self, row: OutboxRow, headers: dict[str, str], results: list[PublishResult | None],
        index: int, acks: AckGroup | None,
    ) -> bool:  # fmt: skip
        """Send one message, its PubAck expected in ``acks`` (none: no reply asked); False when
        the send itself failed (its result is then set)."""
        inbox = self._acks.expect(acks, index, row.subject) if acks is not None else ""
        try:
            await self.client.publish(row.subject, row.payload, reply=inbox, headers=headers)
        except Exception as exc:  # every failure becomes a verdict: see classify()
            if inbox:
                self._acks.cancel(inbox)
            results[index] = classify(exc)
            return False
        return True

    async def _send_batch(
        self,
        rows: Sequence[OutboxRow],
        ready: list[tuple[int, dict[str, str]]],
        results: list[PublishResult | None],
        acks: AckGroup,
        batches: dict[int, tuple[str, list[int]]],
    ) -> None:
        """One transaction as one atomic batch: only the commit (the last) asks for a reply."""
        batch_id = uuid.uuid4().hex
        last = len(ready) - 1
        for n, (index, headers) in enumerate(ready):
            headers[_BATCH_ID] = batch_id
            headers[_BATCH_SEQ] = str(n + 1)
            if n == last:
                headers[_BATCH_COMMIT] = "1"
                if self.checkpoints.armed("mid_atomic_batch"):
                    await self.client.flush()  # all but the commit are on the server
                    self.checkpoints.reached("mid_atomic_batch")
            if not await self._send(rows[index], headers, results, index,
                                    acks if n == last else None):  # fmt: skip
                # The send failed: the batch is incomplete.
                for other, _ in ready:
                    results[other] = results[index]
                return
        batches[ready[last][0]] = (batch_id, [i for i, _ in ready])

    def _settle_batch(
        self,
        reply: Reply | None,
        batch_id: str,
        rows: list[OutboxRow],
        indexes: list[int],
        results: list[PublishResult | None],
    ) -> None:
        answer: PublishResult = (
            TIMEOUT if reply is None else judge_batch(reply, batch_id, len(rows))
        )
        if isinstance(answer, Stored):
            first = answer.seq - len(rows) + 1
            for n, index in enumerate(indexes):
                results[index] = Stored(answer.stream, first + n, duplicate=False)
            return
        if answer.verdict is Verdict.SPLIT and "10174" in answer.reason:
            self._atomic.discard(self._stream(rows[0].subject) or "")  # until the next check
        for index in indexes:
            results[index] = answer

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


def _groups(rows: Sequence[OutboxRow]) -> list[list[int]]:
    """Indexes of consecutive rows of one transaction together; every other row alone."""
    groups: list[list[int]] = []
    for index, row in enumerate(rows):
        if row.txn is not None and groups and rows[groups[-1][0]].txn == row.txn:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def _chunks(rows: Sequence[OutboxRow], size: int) -> list[Sequence[OutboxRow]]:
    """``rows`` cut into chunks of at most ``size`` rows (more only for one transaction)."""
    if len(rows) <= size:
        return [rows]
    chunks: list[Sequence[OutboxRow]] = []
    start = 0
    for group in _groups(rows):
        if group[-1] + 1 - start > size and group[0] > start:
            chunks.append(rows[start : group[0]])
            start = group[0]
    if start < len(rows):
        chunks.append(rows[start:])
    return chunks

"""``EventPublisher``: publish events straight to JetStream, for services without a database.

Prefer the outbox (``enqueue``) whenever the event records a database change: publishing
directly after a commit loses the event if the process dies in between, and publishing before
it announces changes that may roll back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import tenacity

from outbox_client.client import NATSClient
from outbox_client.errors import OutboxError
from outbox_client.events.base import BaseEvent
from outbox_client.headers import Header
from outbox_client.policy import RESERVED_FIX, reserved_header, subject_problem
from outbox_client.tracing import current_trace_context

_TRACE_HEADERS = (Header.TRACEPARENT.value, Header.TRACESTATE.value)


class PublishFailedError(OutboxError):
    """An event could not be published after every retry, or was refused before any by the
    message policy (``outbox_client.policy``: a reserved subject or header)."""


def _policy_problem(event: BaseEvent) -> str | None:
    """Why the message policy refuses ``event`` (enqueue's rules), with the fix; else None."""
    problem = subject_problem(event.subject)
    if problem is not None:
        return f"{problem}; the event_type is the NATS subject: use one of your own"
    reserved = reserved_header(event.nats_headers())
    if reserved is not None:
        return f"its headers set {reserved!r}. {RESERVED_FIX}"
    return None


@dataclass(frozen=True, slots=True)
class PublishAck:
    stream: str
    seq: int
    duplicate: bool


_RETRYABLE = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


class EventPublisher:
    """``publish(event)`` with retries (``max_retries``, backoff ``retry_backoff_base ** n``
    seconds: 1, 2, 4 ...). ``Nats-Msg-Id`` is always the event id, so a retry that reaches the
    stream twice is stored once.

    >>> ack = await EventPublisher(client).publish(event)  # doctest: +SKIP
    >>> ack.stream, ack.seq  # doctest: +SKIP
    ('ACADEMIC_EVENTS', 1)
    """

    def __init__(
        self,
        client: NATSClient,
        *,
        max_retries: int = 3,
        retry_backoff_base: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        if max_retries < 0 or retry_backoff_base < 1 or timeout <= 0:
            raise ValueError("max_retries >= 0, retry_backoff_base >= 1 and timeout > 0 please")
        self.client = client
        self.max_retries = max_retries
        self.retry_backoff_base = retry_backoff_base
        self.timeout = timeout

    def _headers(self, event: BaseEvent) -> dict[str, str]:
        headers = {**event.nats_headers(), Header.MSG_ID.value: str(event.event_id)}
        if not self.client.config.enable_tracing:  # NATS_ENABLE_TRACING=false: no trace context
            return {k: v for k, v in headers.items() if k not in _TRACE_HEADERS}
        if Header.TRACEPARENT.value not in headers:  # the caller's active span, if any
            headers |= current_trace_context()
        return headers

    async def publish(self, event: BaseEvent) -> PublishAck:
        if not isinstance(event, BaseEvent):
            raise TypeError(f"publish() takes a BaseEvent, got {type(event).__name__}")
        refused = _policy_problem(event)
        if refused is not None:
            raise PublishFailedError(
                f"{event.event_type} {event.event_id} not published: {refused}"
            )
        payload, headers = event.to_bytes(), self._headers(event)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            # 1 s, base s, base² s ... as the product description documents.
            wait=tenacity.wait_exponential(multiplier=1, exp_base=self.retry_backoff_base),
            retry=tenacity.retry_if_exception_type(_RETRYABLE),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    ack = await self.client.js.publish(
                        event.subject, payload, timeout=self.timeout, headers=headers
                    )
        except _RETRYABLE as exc:
            raise PublishFailedError(
                f"{event.event_type} {event.event_id} not published after "
                f"{self.max_retries + 1} attempts: {type(exc).__name__}"
            ) from exc
        return PublishAck(ack.stream, ack.seq, bool(ack.duplicate))

    async def publish_batch(
        self, events: Sequence[BaseEvent], *, parallel: bool = True
    ) -> list[PublishAck]:
        """Publish several events. ``parallel`` pipelines them (many in flight at once); the
        acks come back in the order of ``events``. A failure raises after all were tried."""
        if not parallel:
            return [await self.publish(event) for event in events]
        results = await asyncio.gather(*(self.publish(e) for e in events), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise PublishFailedError(
                f"{len(failures)} of {len(events)} events not published; first: {failures[0]}"
            ) from failures[0]
        return [r for r in results if isinstance(r, PublishAck)]

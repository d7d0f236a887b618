"""The one function that decides what a NATS error means for an event: retry or quarantine.

Measured facts this encodes (see DESIGN.md): 'no responders' is what both a missing stream and
a leader election look like, so it is retried before quarantine; a permission violation shows
up as a timeout; a full stream with discard-new answers an API error that clears when space
frees up: REFUSED, since NATS answered, only that event's key waits (not the whole loop).
Size and subject problems are caught before sending (``relay.checks``) because the server
answers them by closing the connection.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

from relay.ports import Failure, Verdict

# JetStream API error codes that can never succeed for this message.
_POISON_API_CODES = {
    10054: "message size exceeds the stream's maximum",
    10060: "expected stream does not match",
}


def classify(exc: BaseException) -> Failure:
    """Map a publish exception to a verdict and a short, payload-free reason."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return Failure(Verdict.NO_STREAM, "no stream captures the subject (or no responders)")
    if isinstance(exc, nats.js.errors.APIError):
        code = exc.err_code or 0
        if code in _POISON_API_CODES:
            return Failure(Verdict.POISON, f"jetstream {code}: {_POISON_API_CODES[code]}")
        return Failure(Verdict.REFUSED, f"jetstream {exc.code} {code}: {exc.description}")
    if isinstance(exc, nats.errors.BadSubjectError | nats.errors.BadHeaderError):
        return Failure(Verdict.POISON, f"invalid message: {type(exc).__name__}")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return Failure(Verdict.POISON, "payload over the server's max_payload")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Failure(Verdict.TRANSIENT, "timeout waiting for PubAck")
    if isinstance(exc, asyncio.CancelledError):
        return Failure(Verdict.TRANSIENT, "publish cancelled")
    # Lost connections, stalled buffers, anything unexpected: retried with the same id.
    return Failure(Verdict.TRANSIENT, f"{type(exc).__name__}: {exc}"[:300])

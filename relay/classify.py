"""The one module that decides what a failed publish means for its event: retry or quarantine.

It reads typed answers (:mod:`relay.pubacks`) and the few exceptions a send itself raises.
Measured facts this encodes (tests/unit/test_pubacks.py, tests/integration/test_relay.py):
'no responders' is what both a missing stream and a leader election look like, so it is
retried (NO_RESPONDERS) until the publisher has seen it ``no_stream_max_attempts`` times and
asks JetStream's API, whose answer :func:`judge_no_responders` settles; a full stream with
discard-new answers an API error that clears when space frees up: REFUSED, since NATS
answered, only that event's key waits; no answer at all is TRANSIENT (an outage when a whole
batch gets none). Whatever can never succeed is POISON and quarantined with the reason: a
permission violation, an answer that is not a PubAck, a JetStream error about the message
itself (the table below).

Atomic batches (a transaction in one message group, nats-server 2.12+, measured against
2.15.1 in tests/integration/test_atomic_batches.py): the commit's answer speaks for the whole
batch and names no message, and nothing of a refused batch is stored. So a batch the server
turns down for what it is (atomic publish disabled on the stream 10174, too large 10199,
incomplete 10176, a Nats-Msg-Id it already holds 10201: the re-publish of a batch it stored
before a crash) or for a message in it (any code of the table below) is SPLIT: its events go
one by one at once, each with its own Nats-Msg-Id verdict (a duplicate is settled as today).
A batch refused "not now" (a full stream 10077, too many batches in flight 10210) or not
answered waits whole, like one event.
"""

from __future__ import annotations

import asyncio

import nats.errors

from relay.ports import Failure, PublishResult, Stored, Verdict
from relay.pubacks import (
    ApiError,
    ApiSilent,
    BatchStored,
    NoReply,
    NoResponders,
    NoStream,
    NotAPubAck,
    PermissionDenied,
    Reply,
    StreamAnswer,
    StreamFound,
)

#: JetStream error codes (nats-server ``server/errors.json``) a re-send of the same message can
#: never turn into a PubAck. Any other code (a full stream 10077, an unavailable cluster 10008,
#: a stream offline 10118, too many requests 10167 ...) is retried for its key with backoff.
POISON_API_CODES = {
    10054: "message size exceeds the stream's maximum",
    10060: "expected stream does not match",
    10070: "wrong last msg ID",
    10071: "wrong last sequence",
    10097: "header size exceeds 64k",
    10109: "stream is sealed",
    10111: "rollup not permitted",
    10164: "wrong last sequence",
    10165: "invalid per-message TTL",
    10166: "per-message TTL is disabled",
    10168: "message counters are disabled",
    10169: "message counter increment is missing",
    10170: "message counter has a payload",
    10171: "message counter increment is invalid",
    10172: "message counter is broken",
    10174: "atomic publish is disabled",
    10175: "atomic publish sequence is missing",
    10176: "atomic publish batch is incomplete",
    10177: "atomic publish header not supported",
    10179: "atomic publish batch ID is invalid",
    10193: "missing sequence for expected last sequence per subject",
    10199: "atomic publish batch is too large",
    10200: "atomic publish batch commit is invalid",
    10201: "atomic publish batch contains a duplicate message id",
    10205: "batch publish is disabled",
    10206: "batch publish pattern is invalid",
    10207: "batch publish ID is invalid",
    10208: "batch publish ID unknown",
}

#: Answers to an atomic batch's commit that say it cannot go as one batch (see above).
SPLIT_API_CODES = {
    10174: "atomic publish is disabled on the stream",
    10175: "atomic publish sequence is missing",
    10176: "atomic publish batch is incomplete",
    10177: "atomic publish header not supported",
    10179: "atomic publish batch ID is invalid",
    10199: "atomic publish batch is too large",
    10200: "atomic publish batch commit is invalid",
    10201: "the batch holds a message id the stream already has (a re-publish)",
}

TIMEOUT = Failure(Verdict.TRANSIENT, "timeout waiting for PubAck")
NOT_SENT = Failure(Verdict.TRANSIENT, "not sent")
_NO_RESPONDERS = "no stream captures the subject (or no responders)"


def judge(reply: Reply) -> PublishResult:
    """What a typed answer means: the :class:`Stored` itself, or a verdict with a short,
    payload-free reason."""
    match reply:
        case Stored():
            return reply
        case BatchStored(stream=stream, seq=seq):
            return Stored(stream, seq, duplicate=False)
        case NoReply():
            return TIMEOUT
        case NoResponders():
            return Failure(Verdict.NO_RESPONDERS, _NO_RESPONDERS)
        case ApiError(code=code, err_code=err_code, description=description):
            if err_code in POISON_API_CODES:
                return Failure(
                    Verdict.POISON, f"jetstream {err_code}: {POISON_API_CODES[err_code]}"
                )
            return Failure(Verdict.REFUSED, f"jetstream {code} {err_code}: {description}")
        case NotAPubAck(status=status, size=size):
            detail = f"status {status!r}, " if status else ""
            return Failure(
                Verdict.POISON, f"reply is not a PubAck ({detail}{size} bytes): not a stream"
            )
        case PermissionDenied():
            return Failure(
                Verdict.POISON,
                "permissions violation: the relay's NATS user may not publish to the subject",
            )


def judge_batch(reply: Reply, batch_id: str, size: int) -> PublishResult:
    """What the answer to an atomic batch's commit means for each of its ``size`` events: the
    last one's :class:`Stored` (all were stored, in order), one verdict for all, or SPLIT."""
    match reply:
        case BatchStored(stream=stream, seq=seq, batch=batch, count=count):
            if batch == batch_id and count == size:
                return Stored(stream, seq, duplicate=False)
            return Failure(Verdict.SPLIT, f"batch answer for {count} messages, sent {size}")
        case Stored():
            return Failure(Verdict.SPLIT, "the server stored the commit alone: no atomic batches")
        case ApiError(err_code=err_code) if err_code in SPLIT_API_CODES:
            return Failure(Verdict.SPLIT, f"jetstream {err_code}: {SPLIT_API_CODES[err_code]}")
    verdict = judge(reply)
    if isinstance(verdict, Failure) and verdict.verdict is Verdict.POISON:
        # About one message of the batch, which the answer does not name.
        return Failure(Verdict.SPLIT, verdict.reason)
    return verdict


def judge_no_responders(answer: StreamAnswer, attempts: int) -> Failure:
    """What 'no responders', seen ``attempts`` times, means once JetStream's API has answered
    which stream captures the subject: only a confirmed missing stream is POISON."""
    match answer:
        case StreamFound(name=name):
            return Failure(
                Verdict.NO_RESPONDERS, f"stream {name} has no leader: election or lost quorum"
            )
        case NoStream():
            return Failure(Verdict.POISON, f"{_NO_RESPONDERS}; gave up after {attempts} attempts")
        case ApiSilent(error=error):
            return Failure(
                Verdict.TRANSIENT, f"no responders; JetStream API did not answer: {error}"
            )


def refused(reason: str) -> Failure:
    """A row :mod:`relay.checks` will not let out (subject, headers, size): it can never be
    published as it is, so it is quarantined with the reason."""
    return Failure(Verdict.POISON, reason)


def unavailable(exc: BaseException) -> Failure:
    """No connection to NATS could be had for the batch: every row of it waits, same id."""
    return Failure(Verdict.TRANSIENT, f"NATS unavailable: {exc}"[:300])


def classify(exc: BaseException) -> Failure:
    """What an exception raised by the send itself means (the server's answers are
    :func:`judge`'s)."""
    if isinstance(exc, nats.errors.BadSubjectError | nats.errors.BadHeaderError):
        return Failure(Verdict.POISON, f"invalid message: {type(exc).__name__}")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return Failure(Verdict.POISON, "payload over the server's max_payload")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return TIMEOUT
    if isinstance(exc, asyncio.CancelledError):
        return Failure(Verdict.TRANSIENT, "publish cancelled")
    # Lost connections, stalled buffers, anything unexpected: retried with the same id.
    return Failure(Verdict.TRANSIENT, f"{type(exc).__name__}: {exc}"[:300])

"""PubAcks for pipelined JetStream publishes, read by the relay itself, as typed replies.

nats-py's ``publish_async`` loses every error reply: ``APIError.from_error`` raises inside its
reply handler, so the future is never resolved and a full stream (503, err 10077) or a
too-large message (400, err 10054) looks like a PubAck timeout (nats-io/nats.py#985, open).
This module does what ``publish_async`` does — one wildcard reply subscription, one future per
message — and turns every answer into a :data:`Reply`: a PubAck, a JetStream API error, "no
responders", something that is not a PubAck at all, or the server's permission violation for
the subject (which nats-py reports only to ``error_cb``). When "no responders" persists, the
publisher asks JetStream's API which stream captures the subject; its answer is typed here too
(:data:`StreamAnswer`). What a reply *means* for the event is decided in one place,
:mod:`relay.classify`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from relay.ports import Stored

_STATUS = "Status"
_NO_RESPONDERS = "503"
#: nats-py lower-cases the server's -ERR text before handing it to error_cb.
_DENIED_PUBLISH = 'nats: permissions violation for publish to "'


@dataclass(frozen=True, slots=True)
class ApiError:
    """JetStream refused the message: ``err_code`` is its JetStream error code."""

    code: int
    err_code: int
    description: str


@dataclass(frozen=True, slots=True)
class NoResponders:
    """Nothing listens on the subject: no stream, or a stream without a leader."""


@dataclass(frozen=True, slots=True)
class NotAPubAck:
    """Something answered that is not JetStream (a service, a forged reply)."""

    status: str
    size: int


@dataclass(frozen=True, slots=True)
class PermissionDenied:
    """The server refused the publish: the relay's NATS user may not publish there."""

    subject: str


@dataclass(frozen=True, slots=True)
class NoReply:
    """Nothing came back in time (NATS down, slow, cut off)."""


@dataclass(frozen=True, slots=True)
class BatchStored:
    """The PubAck of an atomic batch's commit: ``count`` messages stored, the last at ``seq``."""

    stream: str
    seq: int
    batch: str
    count: int


Reply = Stored | BatchStored | ApiError | NoResponders | NotAPubAck | PermissionDenied | NoReply


@dataclass(frozen=True, slots=True)
class StreamFound:
    """JetStream's API names the stream that captures the subject."""

    name: str


@dataclass(frozen=True, slots=True)
class NoStream:
    """JetStream's API answers that no stream captures the subject."""


@dataclass(frozen=True, slots=True)
class ApiSilent:
    """JetStream's API did not answer (NATS down, meta-leader election): ``error`` says how."""

    error: str


#: What JetStream's API said when asked which stream captures a subject.
StreamAnswer = StreamFound | NoStream | ApiSilent


#: Settled publishes are forgotten when this many are held (amortised: then at twice those
#: still waiting).
_PRUNE_AT = 4096


class PubAcks:
    """One reply subject per message under a private inbox; ``expect()`` gives both halves.

    A reply forgets its publish; a publish settled otherwise (cancelled after the timeout, or
    refused by the server) is forgotten at the next prune, so that a publish costs no callback.
    """

    def __init__(self) -> None:
        self._prefix = ""
        self._next = 0
        #: token -> the publish's future and subject, oldest first.
        self._waiting: dict[str, tuple[asyncio.Future[Reply], str]] = {}
        self._prune_at = _PRUNE_AT

    async def start(self, nc: Client) -> None:
        """Subscribe on ``nc`` (nats-py re-subscribes by itself after a reconnect)."""
        self._prefix = nc.new_inbox()
        await nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    def expect(self, subject: str) -> tuple[str, asyncio.Future[Reply]]:
        """A reply subject for a publish to ``subject`` and the future its reply resolves."""
        if len(self._waiting) >= self._prune_at:
            self._prune()
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (future, subject)
        return f"{self._prefix}.{token}", future

    def _prune(self) -> None:
        self._waiting = {t: e for t, e in self._waiting.items() if not e[0].done()}
        self._prune_at = max(_PRUNE_AT, 2 * len(self._waiting))

    def on_error(self, error: Exception) -> bool:
        """Resolve the oldest publish a permission violation names; True if it named one.

        The server answers each publish it refuses with one ``-ERR``, in order, on the same
        connection, so the oldest waiting publish to that subject is the one refused (nats-py
        hands the text over lower-cased). A rare path: it looks through those waiting.
        """
        text = str(error)
        if not text.startswith(_DENIED_PUBLISH):
            return False
        subject = text[len(_DENIED_PUBLISH) :].rstrip('"')
        for token, (future, target) in self._waiting.items():
            if not future.done() and target.lower() == subject:
                del self._waiting[token]
                future.set_result(PermissionDenied(subject))
                return True
        return False

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(read_reply(msg))


def read_reply(msg: Msg) -> Reply:
    """What the server (or whoever answered) said, typed; never raises."""
    status = msg.headers.get(_STATUS, "") if msg.headers else ""
    if status == _NO_RESPONDERS and not msg.data:
        return NoResponders()
    try:
        body: Any = json.loads(msg.data)
    except (ValueError, RecursionError):
        return NotAPubAck(status[:20], len(msg.data))
    if not isinstance(body, dict):
        return NotAPubAck(status[:20], len(msg.data))
    error = body.get("error")
    if isinstance(error, dict):
        return ApiError(
            code=_int(error.get("code")),
            err_code=_int(error.get("err_code")),
            description=str(error.get("description", ""))[:200],
        )
    stream, seq = body.get("stream"), body.get("seq")
    if not isinstance(stream, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return NotAPubAck(status[:20], len(msg.data))
    batch, count = body.get("batch"), body.get("count")
    if isinstance(batch, str) and isinstance(count, int) and not isinstance(count, bool):
        return BatchStored(stream=stream, seq=seq, batch=batch[:64], count=count)
    # A first publish has no "duplicate" field; a re-publish dropped as a duplicate has true.
    return Stored(stream=stream, seq=seq, duplicate=bool(body.get("duplicate")))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

"""PubAcks for pipelined JetStream publishes, read by the relay itself, as typed replies.

nats-py's ``publish_async`` loses every error reply: ``APIError.from_error`` raises inside its
reply handler, so the future is never resolved and a full stream (503, err 10077) or a
too-large message (400, err 10054) looks like a PubAck timeout (nats-io/nats.py#985, open).
This module does what ``publish_async`` does — one wildcard reply subscription, a reply subject
per message — and turns every answer into a :data:`Reply`: a PubAck, a JetStream API error, "no
responders", something that is not a PubAck at all, or the server's permission violation for
the subject (which nats-py reports only to ``error_cb``). When "no responders" persists, the
publisher asks JetStream's API which stream captures the subject; its answer is typed here too
(:data:`StreamAnswer`). What a reply *means* for the event is decided in one place,
:mod:`relay.classify`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from outbox_client.client import OutboxNATSClient
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


#: Replies of groups already settled are forgotten when this many are held (amortised: then
#: at twice those still waiting).
_PRUNE_AT = 4096


class AckGroup:
    """The replies expected for one chunk of publishes, by the index the publisher gave each:
    :meth:`wait` returns when all are in or the time is up, and the group then takes no more
    (a reply that comes later is dropped; its publish was judged a timeout)."""

    __slots__ = ("_done", "_remaining", "closed", "replies")

    def __init__(self, size: int) -> None:
        self.replies: list[Reply | None] = [None] * size
        self._remaining = 0
        self._done: asyncio.Future[None] | None = None
        self.closed = False

    def _resolve(self, index: int, reply: Reply) -> None:
        if self.closed or self.replies[index] is not None:
            return
        self.replies[index] = reply
        self._remaining -= 1
        if self._remaining == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def wait(self, within: float) -> None:
        """Until every expected reply is in, or ``within`` seconds; then closed."""
        try:
            if self._remaining > 0:
                self._done = asyncio.get_running_loop().create_future()
                await asyncio.wait([self._done], timeout=within)
        finally:
            self.closed = True


class PubAcks:
    """One reply subject per message under a private inbox: ``expect()`` names it and says
    where in an :class:`AckGroup` its reply goes.

    The replies are read by the NATS client's read loop itself (``subscribe_direct``): no
    message object, future, queue or task switch per PubAck. A publish that was never sent
    is taken back with :meth:`cancel`; the entries of a group closed with replies missing are
    forgotten at the next prune.
    """

    def __init__(self) -> None:
        self._prefix = ""
        self._skip = 0  # bytes of "<prefix>." before a reply subject's token
        self._next = 0
        #: token -> the group and index its reply goes to, and the publish's subject; oldest
        #: first.
        self._waiting: dict[int, tuple[AckGroup, int, str]] = {}
        self._prune_at = _PRUNE_AT

    async def start(self, nc: OutboxNATSClient) -> None:
        """Subscribe on ``nc`` (nats-py re-subscribes by itself after a reconnect)."""
        self._prefix = nc.new_inbox()
        self._skip = len(self._prefix) + 1
        await nc.subscribe_direct(f"{self._prefix}.*", self._on_reply)

    def expect(self, group: AckGroup, index: int, subject: str) -> str:
        """The reply subject for a publish to ``subject`` whose reply goes to ``index`` of
        ``group``."""
        if len(self._waiting) >= self._prune_at:
            self._prune()
        self._next += 1
        token = self._next
        self._waiting[token] = (group, index, subject)
        group._remaining += 1
        return f"{self._prefix}.{token}"

    def cancel(self, inbox: str) -> None:
        """Take back the expectation of ``inbox`` (its publish was not sent)."""
        entry = self._waiting.pop(int(inbox[self._skip :]), None)
        if entry is not None:
            entry[0]._remaining -= 1

    def _prune(self) -> None:
        self._waiting = {t: e for t, e in self._waiting.items() if not e[0].closed}
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
        for token, (group, index, target) in self._waiting.items():
            if not group.closed and target.lower() == subject:
                del self._waiting[token]
                group._resolve(index, PermissionDenied(subject))
                return True
        return False

    def _on_reply(self, subject: bytes, data: bytes, headers: dict[str, str] | None) -> None:
        token = subject[self._skip :]
        if not token.isdigit():  # not a reply to one of ours (someone else wrote to the inbox)
            return
        entry = self._waiting.pop(int(token), None)
        if entry is not None:
            entry[0]._resolve(entry[1], read_reply(data, headers))


#: A PubAck as nats-server writes it (2.9: ``{"stream":"S", "seq":1}``, 2.15 without the
#: space; a duplicate adds ``,"duplicate": true``), with a stream name that needs no JSON
#: escape: read without the JSON parser, since every published event gets one.
_PLAIN_PUBACK = re.compile(
    rb'\{"stream":[ \t\n\r]*"([^"\\\x00-\x1f\x7f-\xff]{1,255})",[ \t\n\r]*"seq":[ \t\n\r]*'
    rb'(0|[1-9][0-9]{0,18})(,[ \t\n\r]*"duplicate":[ \t\n\r]*true)?[ \t\n\r]*\}'
)
#: Stream names as read, decoded once.
_STREAM_NAMES: dict[bytes, str] = {}


def read_reply(data: bytes, headers: dict[str, str] | None) -> Reply:
    """What the server (or whoever answered) said, typed; never raises."""
    if headers is None:
        plain = _PLAIN_PUBACK.fullmatch(data)
        if plain is not None:
            raw, seq, duplicate = plain.groups()
            stream = _STREAM_NAMES.get(raw)
            if stream is None:
                if len(_STREAM_NAMES) >= 1024:  # whoever answers may name many
                    _STREAM_NAMES.clear()
                stream = _STREAM_NAMES[raw] = raw.decode()
            return Stored(stream, int(seq), duplicate is not None)
    return _read_json_reply(data, headers)


def _read_json_reply(data: bytes, headers: dict[str, str] | None) -> Reply:
    status = headers.get(_STATUS, "") if headers else ""
    if status == _NO_RESPONDERS and not data:
        return NoResponders()
    try:
        body: Any = json.loads(data)
    except (ValueError, RecursionError):
        return NotAPubAck(status[:20], len(data))
    if not isinstance(body, dict):
        return NotAPubAck(status[:20], len(data))
    error = body.get("error")
    if isinstance(error, dict):
        return ApiError(
            code=_int(error.get("code")),
            err_code=_int(error.get("err_code")),
            description=str(error.get("description", ""))[:200],
        )
    stream, seq = body.get("stream"), body.get("seq")
    if not isinstance(stream, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return NotAPubAck(status[:20], len(data))
    batch, count = body.get("batch"), body.get("count")
    if isinstance(batch, str) and isinstance(count, int) and not isinstance(count, bool):
        return BatchStored(stream=stream, seq=seq, batch=batch[:64], count=count)
    # A first publish has no "duplicate" field; a re-publish dropped as a duplicate has true.
    return Stored(stream=stream, seq=seq, duplicate=bool(body.get("duplicate")))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

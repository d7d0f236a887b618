"""PubAcks for pipelined JetStream publishes, read by the relay itself.

nats-py's ``publish_async`` loses every error reply: ``APIError.from_error`` raises inside its
reply handler, so the future is never resolved and a full stream (503, err 10077) or a
too-large message (400, err 10054) looks like a PubAck timeout (nats-io/nats.py#985, open).
This module does what ``publish_async`` does — one wildcard reply subscription, one future per
message — and turns every reply into a result, errors included.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from relay.classify import classify
from relay.ports import Ack, Failure, PublishResult, Verdict

_STATUS = "Status"
_NO_RESPONDERS = "503"


class PubAcks:
    """One reply subject per message under a private inbox; ``expect()`` gives both halves."""

    def __init__(self) -> None:
        self._prefix = ""
        self._next = 0
        self._futures: dict[str, asyncio.Future[Msg]] = {}
        self._sub: Subscription | None = None

    async def start(self, nc: Client) -> None:
        """Subscribe on ``nc`` (nats-py re-subscribes by itself after a reconnect)."""
        self._prefix = nc.new_inbox()
        self._sub = await nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    def expect(self) -> tuple[str, asyncio.Future[Msg]]:
        """A reply subject and the future its PubAck will resolve."""
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(lambda _: self._futures.pop(token, None))
        return f"{self._prefix}.{token}", future

    async def _on_reply(self, msg: Msg) -> None:
        future = self._futures.get(msg.subject.rpartition(".")[2])
        if future is not None and not future.done():
            future.set_result(msg)


def read_puback(msg: Msg) -> PublishResult:
    """A PubAck, or the failure the server answered with (never raises)."""
    if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS and not msg.data:
        return classify(nats.js.errors.NoStreamResponseError())
    try:
        body: Any = json.loads(msg.data)
    except (ValueError, RecursionError):
        return _not_a_puback(msg)
    if not isinstance(body, dict):
        return _not_a_puback(msg)
    error = body.get("error")
    if isinstance(error, dict):
        return classify(
            nats.js.errors.APIError(
                code=error.get("code"),
                err_code=error.get("err_code"),
                description=error.get("description"),
            )
        )
    stream, seq = body.get("stream"), body.get("seq")
    if not isinstance(stream, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return _not_a_puback(msg)
    # A first publish has no "duplicate" field; a re-publish dropped as a duplicate has true.
    return Ack(stream=stream, seq=seq, duplicate=bool(body.get("duplicate")))


def _not_a_puback(msg: Msg) -> Failure:
    # Something other than JetStream answered on the subject (a service, a forged reply): the
    # message reached no stream we know of, and re-sending it would reach the same answer.
    status = msg.headers.get(_STATUS, "") if msg.headers else ""
    detail = f"status {status[:20]!r}, " if status else ""
    return Failure(
        Verdict.POISON, f"reply is not a PubAck ({detail}{len(msg.data)} bytes): not a stream"
    )

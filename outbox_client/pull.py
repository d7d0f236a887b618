"""Pull requests for ``EventConsumer``: what has arrived, as soon as anything has.

nats-py's ``PullSubscription.fetch(n)`` spends two tasks per message (``next_msg`` wraps a
``wait_for`` in a task) and asks the server anew at each call: a consumer draining a backlog
spent a good part of its CPU there. :class:`Puller` keeps one pull request of ``batch`` messages
outstanding on an inbox of its own, takes messages in a subscription callback, and
:meth:`Puller.fetch` returns everything delivered so far as soon as there is anything, asking
again when the request is used up or has expired. Messages delivered while the caller applies
the previous ones are waiting at the next ``fetch`` (the network works while the database does):
the next request goes out as soon as the last one is used up or expires (unless more than
``batch`` messages wait), not at the next ``fetch``, or the rest of a burst would wait for the
batch in hand and a round trip (in the bench at 1,000 events/s a request of 256 ran out every
~25 commits of 10 events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api as js_api

from outbox_client.client import NATSClient


class Puller:
    """One durable's messages, ``batch`` per pull request, each request alive ``expires`` s."""

    def __init__(
        self, client: NATSClient, stream: str, durable: str, *, batch: int, expires: float
    ) -> None:
        self._nc = client.nc
        self._subject = f"{js_api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch = batch
        self._expires = expires
        self._inbox = self._nc.new_inbox()
        self._sub: Subscription | None = None
        self._ready: list[Msg] = []
        self._arrived = asyncio.Event()
        self._owed = 0  # messages the outstanding request may still bring
        self._until = 0.0  # when it expires (monotonic)
        self._quiet_until = 0.0  # no new request before (the server ended one early)
        self._running = False

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        self._running = True

    async def stop(self) -> list[Msg]:
        """Unsubscribe; returns the messages delivered but not fetched (to be nak'ed)."""
        self._running = False
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        left, self._ready = self._ready, []
        return left

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a stored message (its reply subject is its ack subject)
            self._ready.append(msg)
            self._owed -= 1
        else:
            status = (msg.headers or {}).get(js_api.Header.STATUS)
            if status == "100":  # an idle heartbeat changes nothing
                return
            if status != "408":  # ended by the server (409: leadership change, ...): do not
                self._quiet_until = self._until  # ask again at once, over and over
            self._owed = 0
        self._arrived.set()
        # Used up or expired: ask again now, unless more than a request's worth is waiting
        # (then at the next fetch, as before: what the caller has in hand stays bounded).
        now = time.monotonic()
        ready = len(self._ready) <= self._batch
        if self._running and self._owed <= 0 and now >= self._quiet_until and ready:
            await self._request(now)

    async def fetch(self, wait: float) -> list[Msg]:
        """The messages delivered so far, waiting up to ``wait`` s for the first one
        (``[]`` when none came)."""
        deadline = time.monotonic() + wait
        while not self._ready:
            now = time.monotonic()
            if now >= deadline:
                return []
            if (self._owed <= 0 or now >= self._until) and now >= self._quiet_until:
                await self._request(now)
            self._arrived.clear()
            until = max(self._until, self._quiet_until)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(deadline, until) - now)
        msgs, self._ready = self._ready, []
        return msgs

    async def _request(self, now: float) -> None:
        request = {"batch": self._batch, "expires": int(self._expires * 1e9)}
        await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)
        self._owed, self._until = self._batch, now + self._expires

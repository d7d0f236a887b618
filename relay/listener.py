"""LISTEN on a dedicated connection (outside the pool); a notification is only a hint.

After every (re)connect the relay is woken to rescan, since notifications sent while the
connection was down are gone. A periodic ``SELECT 1`` notices a silently dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

import asyncpg

from relay.aio import first_of, sleep_until_stopped
from relay.log import log_event
from relay.pgstore import DRIVER_ERRORS
from relay.retry import Backoff

logger = logging.getLogger("relay.listener")


class PgListener:
    def __init__(
        self,
        dsn: str,
        channel: str,
        wakeup: asyncio.Event,
        *,
        policy: Backoff,
        health_interval: float = 5.0,
        timeout: float = 10.0,
        application_name: str = "vertector-relay",
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.wakeup = wakeup
        self.policy = policy
        self.health_interval = health_interval
        self.timeout = timeout
        self.application_name = application_name
        self.connected = False
        self.reconnects = 0

    def _notified(self, *_: Any) -> None:
        self.wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.dsn,
                    timeout=self.timeout,
                    server_settings={"application_name": self.application_name},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(self.channel, self._notified)
                self.connected = True
                if attempt or self.reconnects:
                    log_event(logger, "relay.listener.reconnected")
                self.reconnects += 1
                attempt = 0
                self.wakeup.set()  # notifications may have been missed: rescan
                await self._watch(conn, lost, stop)
            except DRIVER_ERRORS as exc:
                attempt += 1
                log_event(
                    logger, "relay.listener.lost", level=logging.WARNING,
                    error=f"{type(exc).__name__}: {exc}", attempt=attempt,
                )  # fmt: skip
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await asyncio.wait_for(conn.close(), 2)
                    conn.terminate()
            if not stop.is_set() and attempt:
                await sleep_until_stopped(stop, self.policy.delay(attempt))

    async def _watch(
        self, conn: asyncpg.Connection, lost: asyncio.Event, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            await first_of(lost.wait(), stop.wait(), within=self.health_interval)
            if lost.is_set():
                raise ConnectionResetError("LISTEN connection terminated")
            if stop.is_set():
                return
            await conn.fetchval("SELECT 1", timeout=min(self.health_interval, self.timeout))


def _set(event: asyncio.Event, *_: Any) -> None:
    event.set()

"""Helpers to run a relay in-process against the suite's servers and read what reached NATS."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import nats
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from outbox_client import BaseEvent, enqueue_many
from outbox_client.dburl import asyncpg_sqlalchemy_url
from outbox_client.nats_config import NATSConfig
from outbox_client.streams import DEFAULT_STREAMS, StreamConfig
from relay.app import RelayApp
from relay.natsstreams import apply_streams
from relay.settings import RelaySettings


@contextlib.asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def apply_default_streams(url: str, specs: Sequence[StreamConfig] = DEFAULT_STREAMS) -> None:
    async with jetstream(url) as js:
        await apply_streams(js, specs)


@contextlib.asynccontextmanager
async def running_relay(
    database_url: str,
    nats_url: str,
    *,
    streams: Sequence[StreamConfig] = DEFAULT_STREAMS,
    **settings: Any,
) -> AsyncIterator[RelayApp]:
    """A RelayApp configured with ``streams``, running as a task; stopped (gracefully) on
    exit."""
    settings.setdefault("metrics_port", 0)  # several relays may run in one test process
    app = RelayApp(
        RelaySettings(database_url=database_url, **settings),
        NATSConfig(servers=[nats_url]),
        streams=streams,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(asyncpg_sqlalchemy_url(database_url), pool_size=10)
    try:
        yield eng
    finally:
        await eng.dispose()


async def produce(eng: AsyncEngine, events: Sequence[BaseEvent]) -> None:
    async with eng.begin() as conn:
        await enqueue_many(conn, events)


async def stream_messages(nats_url: str, stream: str = "ACADEMIC_EVENTS") -> list[Any]:
    """Every message in ``stream``, in stream order, read by sequence without consuming it
    (the product's ACADEMIC_EVENTS is a work queue: a consumer would remove what it reads)."""
    async with jetstream(nats_url) as js:
        state = (await js.stream_info(stream)).state
        if state.messages == 0:
            return []
        return [await js.get_msg(stream, seq) for seq in range(state.first_seq, state.last_seq + 1)]


async def wait_for_messages(
    nats_url: str, count: int, stream: str = "ACADEMIC_EVENTS", timeout: float = 60
) -> int:
    """Wait until ``stream`` holds at least ``count`` messages; return how many it holds."""
    deadline = time.monotonic() + timeout
    async with jetstream(nats_url) as js:
        while True:
            n = (await js.stream_info(stream)).state.messages
            if n >= count or time.monotonic() > deadline:
                return int(n)
            await asyncio.sleep(0.05)


def event_ids(messages: Sequence[Any]) -> list[uuid.UUID]:
    return [uuid.UUID(m.headers["Nats-Msg-Id"]) for m in messages]

"""The notes service as a process (the compose file's ``notes-consumer``).

Reads ``OUTBOX_DATABASE_URL`` (its own database, migrated), ``NATS_*``, and serves its
consumer metrics on ``CONSUMER_METRICS_PORT`` (default 9465). SIGTERM or SIGINT stop it after
the batch in hand.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys

from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from examples.notes_service import NotesService, create_schema, prepare_statements
from outbox_client import NATSClient, NATSConfig
from outbox_client.checkpoints import NO_CHECKPOINTS, Checkpoints
from outbox_client.dburl import asyncpg_sqlalchemy_url


def notes_engine(url: str) -> AsyncEngine:
    return create_async_engine(asyncpg_sqlalchemy_url(url), pool_size=10)


async def run(
    notes: NotesService, nats_config: NATSConfig, *, checkpoints: Checkpoints = NO_CHECKPOINTS
) -> None:
    """Consume until SIGTERM or SIGINT."""
    async with NATSClient(nats_config) as client:
        consumer = notes.consumer(client, checkpoints=checkpoints)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        await notes.inbox.warm(consumer.concurrency, prime=prepare_statements)
        # Objects alive now (modules, classes, the pool) live as long as the process: out of
        # the collector's full passes, which otherwise took ~80 ms here, stalling every
        # event in hand (the bench's commit -> consumed p99 went from 38-47 ms to under 30).
        gc.freeze()
        await consumer.subscribe_batches(notes.handler())


async def main() -> int:
    url = os.environ.get("OUTBOX_DATABASE_URL")
    if not url:
        print("OUTBOX_DATABASE_URL is not set", file=sys.stderr)
        return 2
    start_http_server(int(os.environ.get("CONSUMER_METRICS_PORT", "9465")))
    engine = notes_engine(url)
    await create_schema(engine)
    await run(NotesService(engine), NATSConfig())
    await engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

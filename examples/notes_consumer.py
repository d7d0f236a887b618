"""The notes service as a process (the compose file's ``notes-consumer``).

Reads ``OUTBOX_DATABASE_URL`` (its own database, migrated), ``NATS_*``, and serves its
consumer metrics on ``CONSUMER_METRICS_PORT`` (default 9465).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import create_async_engine

from examples.notes_service import NotesService, create_schema
from outbox_client import ConsumerConfig, EventConsumer, NATSClient, NATSConfig
from outbox_client.dburl import asyncpg_sqlalchemy_url


async def main() -> int:
    url = os.environ.get("OUTBOX_DATABASE_URL")
    if not url:
        print("OUTBOX_DATABASE_URL is not set", file=sys.stderr)
        return 2
    start_http_server(int(os.environ.get("CONSUMER_METRICS_PORT", "9465")))
    engine = create_async_engine(asyncpg_sqlalchemy_url(url), pool_size=10)
    await create_schema(engine)
    notes = NotesService(engine)
    async with NATSClient(NATSConfig()) as client:
        consumer = EventConsumer(
            client=client,
            stream_name="ACADEMIC_EVENTS",
            consumer_config=ConsumerConfig(
                durable_name="notes-service-consumer", filter_subjects=("academic.>",)
            ),
            batch_size=256,
            concurrency=8,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        await consumer.subscribe(notes.handle)
    await engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

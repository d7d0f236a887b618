"""The notes service: consumes academic events and keeps a notebook per course, applying each
event exactly once through its inbox.

    OUTBOX_DATABASE_URL=postgresql://... NATS_SERVERS=nats://... \
        python examples/consumer_example.py [N]

Stops after N events (when given), or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from nats.aio.msg import Msg
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from outbox_client import (
    BaseEvent,
    ConsumerConfig,
    CourseCreatedEvent,
    EventConsumer,
    Inbox,
    NATSClient,
    NATSConfig,
)
from outbox_client.dburl import asyncpg_sqlalchemy_url

tables = MetaData()
notebooks = Table(
    "example_notebooks",
    tables,
    Column("course_code", String, primary_key=True),
    Column("entries", Integer, nullable=False),
)


async def apply(conn: AsyncConnection, event: BaseEvent) -> None:
    """The effect, in the same transaction as the inbox record."""
    if isinstance(event, CourseCreatedEvent):
        await conn.execute(
            insert(notebooks).values(course_code=event.course_code, entries=0)
            .on_conflict_do_nothing()
        )  # fmt: skip
    elif (code := getattr(event, "course_code", None)) is not None:
        await conn.execute(
            notebooks.update().where(notebooks.c.course_code == code)
            .values(entries=notebooks.c.entries + 1)
        )  # fmt: skip


async def main(limit: int | None) -> int:
    url = os.environ.get("OUTBOX_DATABASE_URL")
    if not url:
        print("set OUTBOX_DATABASE_URL (and run `alembic upgrade head` once)", file=sys.stderr)
        return 2
    engine = create_async_engine(asyncpg_sqlalchemy_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(tables.create_all)
    inbox = Inbox(engine, consumer="notes-service")

    async with NATSClient(NATSConfig()) as client:  # NATS_* from the environment
        consumer = EventConsumer(
            client=client,
            stream_name="ACADEMIC_EVENTS",
            consumer_config=ConsumerConfig(
                durable_name="notes-service-consumer", filter_subjects=["academic.>"], max_deliver=3
            ),
            batch_size=50,
            concurrency=4,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, consumer.stop)
        seen = 0

        async def handle(event: BaseEvent, msg: Msg) -> None:
            nonlocal seen
            applied = await inbox.apply(event, apply)
            await msg.ack()
            seen += 1
            print(f"{event.event_type:32} {'applied' if applied else 'duplicate, skipped'}")
            if limit is not None and seen >= limit:
                consumer.stop()

        await consumer.subscribe(handle)
    await engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else None)))

"""The search indexer: the product description's ``search-indexer-consumer`` on ``notes.*``
(``NOTES_EVENTS``, interest retention). It keeps a search table of notes, exactly once, through
its own inbox, next to the notes service. ``python -m examples.search_indexer`` runs it as a
process (``OUTBOX_DATABASE_URL``, ``NATS_*``, consumer metrics on ``CONSUMER_METRICS_PORT``,
default 9466; SIGTERM or SIGINT stop it): the compose file's ``search-indexer``. ``make demo``
runs it on the notes service's welcome notes.

NOTES_EVENTS keeps a message only while a consumer is interested: start the indexer (its
durable) before notes events are published, or they are not kept for it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Sequence
from itertools import groupby

from prometheus_client import start_http_server
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, bindparam, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from outbox_client import (
    BaseEvent,
    ConsumerConfig,
    EventConsumer,
    NATSClient,
    NATSConfig,
    NoteCreatedEvent,
    NoteDeletedEvent,
    NoteUpdatedEvent,
)
from outbox_client.dburl import asyncpg_sqlalchemy_url
from outbox_client.inbox import Inbox

index_md = MetaData()
search_index = Table(
    "search_index",
    index_md,
    Column("note_id", String, primary_key=True),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("course_code", String),
    Column("indexed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

_UPSERT = insert(search_index)
_UPSERT = _UPSERT.on_conflict_do_update(
    index_elements=["note_id"],
    set_={"title": _UPSERT.excluded.title, "body": _UPSERT.excluded.body,
          "course_code": _UPSERT.excluded.course_code, "indexed_at": func.now()},
)  # fmt: skip
_UPDATE = (
    search_index.update()
    .where(search_index.c.note_id == bindparam("id"))
    .values(
        title=func.coalesce(bindparam("new_title"), search_index.c.title),
        body=func.coalesce(bindparam("new_body"), search_index.c.body),
        indexed_at=func.now(),
    )
)
_DELETE = search_index.delete().where(search_index.c.note_id == bindparam("id"))


def consumer_config() -> ConsumerConfig:
    return ConsumerConfig(durable_name="search-indexer-consumer", filter_subjects=("notes.*",))


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(index_md.create_all)


async def index_events(conn: AsyncConnection, events: Sequence[BaseEvent]) -> None:
    """Created notes are indexed, updates change what they change, deletes remove the note;
    reads change nothing. Runs of one kind are one executemany, in order."""
    for kind, run in groupby(events, key=lambda e: type(e).__name__):
        batch = list(run)
        if kind == NoteCreatedEvent.__name__:
            rows = [
                {"note_id": e.note_id, "title": e.title, "body": e.content,
                 "course_code": e.course_code}
                for e in batch if isinstance(e, NoteCreatedEvent)
            ]  # fmt: skip
            await conn.execute(_UPSERT, rows)
        elif kind == NoteUpdatedEvent.__name__:
            rows = [
                {"id": e.note_id, "new_title": e.title, "new_body": e.content}
                for e in batch if isinstance(e, NoteUpdatedEvent)
            ]  # fmt: skip
            await conn.execute(_UPDATE, rows)
        elif kind == NoteDeletedEvent.__name__:
            rows = [{"id": e.note_id} for e in batch if isinstance(e, NoteDeletedEvent)]
            await conn.execute(_DELETE, rows)


def indexer(client: NATSClient, engine: AsyncEngine) -> tuple[EventConsumer, Inbox]:
    consumer = EventConsumer(
        client, "NOTES_EVENTS", consumer_config(), batch_size=256, fetch_timeout=0.5,
        concurrency=2,
    )  # fmt: skip
    return consumer, Inbox(engine, consumer="search-indexer")


async def main() -> int:
    url = os.environ.get("OUTBOX_DATABASE_URL")
    if not url:
        print("OUTBOX_DATABASE_URL is not set", file=sys.stderr)
        return 2
    start_http_server(int(os.environ.get("CONSUMER_METRICS_PORT", "9466")))
    engine = create_async_engine(asyncpg_sqlalchemy_url(url), pool_size=4)
    await create_schema(engine)
    async with NATSClient(NATSConfig()) as client:
        consumer, inbox = indexer(client, engine)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        await inbox.warm(consumer.concurrency)
        gc.freeze()  # what is alive now lives as long as the process (see notes_consumer)
        await consumer.subscribe_batches(inbox.batch_handler(effect_many=index_events))
    await engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

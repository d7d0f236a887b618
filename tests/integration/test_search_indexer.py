"""The search indexer example (``examples/search_indexer.py``) on NOTES_EVENTS: each note event
applied once, in order, beside the notes service."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from examples import search_indexer
from outbox_client import (
    EventPublisher,
    NATSClient,
    NATSConfig,
    NoteCreatedEvent,
    NoteDeletedEvent,
    NoteReadEvent,
    NoteUpdatedEvent,
)
from tests.integration.test_consumer import until
from tests.relayrun import apply_default_streams, engine


async def test_search_indexer_keeps_the_index_of_notes(nats_url: str, database_url: str) -> None:
    await apply_default_streams(nats_url)
    async with engine(database_url) as eng, NATSClient(NATSConfig(servers=[nats_url])) as client:
        await search_indexer.create_schema(eng)
        consumer, inbox = search_indexer.indexer(client, eng)
        await consumer.ensure()  # NOTES_EVENTS keeps messages only for existing interest
        task = asyncio.create_task(
            consumer.subscribe_batches(inbox.batch_handler(effect_many=search_indexer.index_events))
        )
        events = [
            NoteCreatedEvent(note_id="n1", author_id="s1", title="Graphs", content="BFS"),
            NoteCreatedEvent(note_id="n2", author_id="s1", title="Trees", course_code="CS101"),
            NoteUpdatedEvent(note_id="n1", content="BFS and DFS"),
            NoteReadEvent(note_id="n1", requested_by="s2"),
            NoteCreatedEvent(note_id="n3", author_id="s2", title="Heaps"),
            NoteDeletedEvent(note_id="n3"),
        ]
        publisher = EventPublisher(client)
        for event in events:
            await publisher.publish(event)
        await publisher.publish(events[2])  # a duplicate: JetStream or the inbox drops it
        try:
            await until(lambda: consumer.processed >= len(events))
        finally:
            consumer.stop()
            await asyncio.wait_for(task, 10)
        async with eng.connect() as conn:
            rows = (await conn.execute(select(search_indexer.search_index))).mappings().all()
    index = {row["note_id"]: (row["title"], row["body"], row["course_code"]) for row in rows}
    assert index == {"n1": ("Graphs", "BFS and DFS", None), "n2": ("Trees", "", "CS101")}

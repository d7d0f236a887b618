"""The demo's consuming service: the note-taking service creates a notebook per course, exactly
once, through the inbox. Also the shape of ``examples/consumer_example.py``."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

from nats.aio.msg import Msg
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox_client import BaseEvent, CourseCreatedEvent, CourseDeletedEvent
from outbox_client.inbox import Inbox

domain = MetaData()
notebooks = Table(
    "demo_notebooks",
    domain,
    Column("course_code", String, primary_key=True),
    Column("title", String, nullable=False),
    Column("entries", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(domain.create_all)


async def apply_event(conn: AsyncConnection, event: BaseEvent) -> None:
    """The effect: a notebook per course, an entry per piece of coursework."""
    if isinstance(event, CourseCreatedEvent):
        await conn.execute(
            insert(notebooks)
            .values(course_code=event.course_code, title=f"Notes: {event.course_name}")
            .on_conflict_do_nothing()
        )
        return
    if isinstance(event, CourseDeletedEvent):
        await conn.execute(notebooks.delete().where(notebooks.c.course_code == event.course_code))
        return
    code = getattr(event, "course_code", None)
    if code is not None:
        await conn.execute(
            notebooks.update()
            .where(notebooks.c.course_code == code)
            .values(entries=notebooks.c.entries + 1, updated_at=func.now())
        )


class NotesService:
    """Handler for ``EventConsumer``: applies each event once and records timings for the demo."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self.inbox = Inbox(engine, consumer="notes-service")
        self.clock = clock
        self.deliveries: Counter[uuid.UUID] = Counter()
        self.applied: dict[uuid.UUID, tuple[float, float]] = {}  # id -> (stored at, applied at)
        self.skipped_duplicates = 0
        self.duplicate_effects = 0

    async def handle(self, event: BaseEvent, msg: Msg) -> None:
        self.deliveries[event.event_id] += 1
        if await self.inbox.apply(event, apply_event):
            if event.event_id in self.applied:
                self.duplicate_effects += 1  # the inbox failed its one job: counted, never hidden
            stored = msg.metadata.timestamp.timestamp()
            self.applied[event.event_id] = (stored, self.clock())
        else:
            self.skipped_duplicates += 1
        await msg.ack()

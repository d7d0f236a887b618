"""The demo's consuming service: the note-taking service creates a notebook per course, exactly
once, through the inbox. Also the shape of ``examples/consumer_example.py``.

With ``welcome_notes`` it also writes a welcome note for each new course as a ``notes.created``
event in its own outbox, in the same transaction as the inbox record (consume and produce,
exactly once); its relay publishes it to NOTES_EVENTS, where the search indexer
(``examples/search_indexer.py``) picks it up. ``make demo`` runs the three together."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox_client import (
    BaseEvent,
    ConsumerConfig,
    CourseCreatedEvent,
    CourseDeletedEvent,
    EventConsumer,
    NATSClient,
    NoteCreatedEvent,
    enqueue_many,
)
from outbox_client.checkpoints import NO_CHECKPOINTS, Checkpoints
from outbox_client.consumer import BatchHandler, Delivery
from outbox_client.inbox import BatchEffect, Inbox

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


_CREATE = insert(notebooks).on_conflict_do_nothing()
_DELETE = notebooks.delete().where(notebooks.c.course_code == bindparam("code"))
#: A run of entries in one statement: each course's count added at once (the same rows change
#: as with one UPDATE per event, without a round of parameters per event).
_ENTRIES = text(
    "UPDATE demo_notebooks AS n SET entries = n.entries + c.n, updated_at = now() "
    "FROM (SELECT code, count(*) AS n FROM unnest(CAST(:codes AS text[])) AS code "
    "GROUP BY code) AS c WHERE n.course_code = c.code"
)


async def prepare_statements(conn: AsyncConnection) -> None:
    """``Inbox.warm``'s ``prime``: the statement most events run (entries), changing nothing,
    so that a connection's first batch does not prepare it."""
    await conn.execute(_ENTRIES, {"codes": []})


async def apply_events(conn: AsyncConnection, events: Sequence[BaseEvent]) -> None:
    """The same effect for a batch: each run of events of one kind is one executemany, in
    order (a create, then updates, then a delete of one course stay in that order)."""
    for kind, run in groupby(events, key=_kind):
        rows = [_row(kind, event) for event in run]
        if kind == "create":
            await conn.execute(_CREATE, rows)
        elif kind == "delete":
            await conn.execute(_DELETE, rows)
        elif kind == "entry":
            await conn.execute(_ENTRIES, {"codes": [row["code"] for row in rows]})


def welcome_note(event: CourseCreatedEvent) -> NoteCreatedEvent:
    return NoteCreatedEvent(
        note_id=f"welcome-{event.course_code}", author_id="notes-service",
        title=f"Notes: {event.course_name}", course_code=event.course_code,
        content=f"{event.course_name}, {event.semester}, with {event.instructor}.",
    )  # fmt: skip


async def apply_events_with_welcome_notes(
    conn: AsyncConnection, events: Sequence[BaseEvent]
) -> None:
    """``apply_events``, and a welcome note per new course into this service's outbox."""
    await apply_events(conn, events)
    notes = [welcome_note(e) for e in events if isinstance(e, CourseCreatedEvent)]
    if notes:
        await enqueue_many(conn, notes)


def _kind(event: BaseEvent) -> str:
    if isinstance(event, CourseCreatedEvent):
        return "create"
    if isinstance(event, CourseDeletedEvent):
        return "delete"
    return "entry" if getattr(event, "course_code", None) is not None else "none"


def _row(kind: str, event: BaseEvent) -> dict[str, str]:
    if kind == "create":
        assert isinstance(event, CourseCreatedEvent)
        return {"course_code": event.course_code, "title": f"Notes: {event.course_name}"}
    return {"code": str(getattr(event, "course_code", ""))}


class NotesService:
    """The notes service's handler for ``EventConsumer.subscribe_batches``: applies each event
    once (one inbox transaction per lane of a fetched batch); with ``record`` it keeps each
    event's timings for the demo and the benchmark."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], float] = time.time,
        *,
        effect_many: BatchEffect = apply_events,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
        welcome_notes: bool = False,
        record: bool = False,
    ) -> None:
        self.inbox = Inbox(engine, consumer="notes-service")
        self.inbox.checkpoints = checkpoints  # the crash tests' injected points
        self.clock = clock
        self.effect_many = apply_events_with_welcome_notes if welcome_notes else effect_many
        self.welcome_notes = welcome_notes
        self.notes_written = 0  # welcome notes committed to the outbox
        # id -> (stored at, committed at), with ``record`` (the demo and the bench read it; a
        # service running for good would grow by it without end, and its collector's full
        # passes with it).
        self.record = record
        self.applied: dict[uuid.UUID, tuple[float, float]] = {}
        self.skipped_duplicates = 0
        self.duplicate_effects = 0

    def handler(self) -> BatchHandler:
        return self.inbox.batch_handler(
            effect_many=self.effect_many, on_applied=self._applied, on_duplicate=self._skipped
        )

    def consumer(
        self, client: NATSClient, *, checkpoints: Checkpoints = NO_CHECKPOINTS, **config: Any
    ) -> EventConsumer:
        """The notes service's durable on ``academic.>``, sized by ``make bench``
        (``config``: more ``ConsumerConfig`` fields)."""
        return EventConsumer(
            client=client,
            stream_name="ACADEMIC_EVENTS",
            consumer_config=ConsumerConfig(
                durable_name="notes-service-consumer", filter_subjects=("academic.>",), **config
            ),
            batch_size=256,
            fetch_timeout=0.5,
            concurrency=4,
            checkpoints=checkpoints,
            ordered_restart=True,  # one process: after a crash, each course stays in order
        )

    def _applied(self, deliveries: Sequence[Delivery]) -> None:
        committed = self.clock()
        for delivery in deliveries:
            if self.record:
                if delivery.event.event_id in self.applied:
                    self.duplicate_effects += 1  # the inbox failed its one job: counted
                stored = delivery.meta.timestamp.timestamp()
                self.applied[delivery.event.event_id] = (stored, committed)
            if self.welcome_notes and isinstance(delivery.event, CourseCreatedEvent):
                self.notes_written += 1

    def _skipped(self, deliveries: Sequence[Delivery]) -> None:
        self.skipped_duplicates += len(deliveries)

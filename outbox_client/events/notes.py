"""Events of the note-taking service, on the ``NOTES_EVENTS`` stream (``notes.*``)."""

from __future__ import annotations

from typing import Literal

from outbox_client.events.base import BaseEvent, Code, DeletedEvent, ReadEvent, Text, UpdatedEvent


class NoteCreatedEvent(BaseEvent):
    partition_key_field = "note_id"
    event_type: Literal["notes.created"] = "notes.created"
    note_id: Code
    author_id: Code
    title: Text
    content: str = ""
    course_code: Code | None = None
    tags: tuple[Code, ...] = ()


class NoteReadEvent(ReadEvent):
    partition_key_field = "note_id"
    event_type: Literal["notes.read"] = "notes.read"
    note_id: Code


class NoteUpdatedEvent(UpdatedEvent):
    partition_key_field = "note_id"
    event_type: Literal["notes.updated"] = "notes.updated"
    note_id: Code
    title: Text | None = None
    content: str | None = None
    course_code: Code | None = None
    tags: tuple[Code, ...] | None = None


class NoteDeletedEvent(DeletedEvent):
    partition_key_field = "note_id"
    event_type: Literal["notes.deleted"] = "notes.deleted"
    note_id: Code


NOTES_EVENTS: tuple[type[BaseEvent], ...] = (
    NoteCreatedEvent,
    NoteReadEvent,
    NoteUpdatedEvent,
    NoteDeletedEvent,
)

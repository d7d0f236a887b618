"""The example notes service keeps per-event timings only when asked (the demo and the bench)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from examples.notes_service import NotesService
from outbox_client import CourseUpdatedEvent, EventMetadata


def deliveries(n: int) -> list[Any]:
    stored = SimpleNamespace(timestamp=datetime.now(UTC))
    return [
        SimpleNamespace(
            event=CourseUpdatedEvent(
                course_code=f"CS{i}", credits=3, metadata=EventMetadata(source_service="t")
            ),
            meta=stored,
        )
        for i in range(n)
    ]


def test_the_service_keeps_nothing_per_event_unless_recording() -> None:
    engine = create_async_engine("postgresql+asyncpg://u@127.0.0.1:1/none")  # never connects
    running = NotesService(engine)
    running._applied(deliveries(100))
    assert running.applied == {}  # a service running for good would grow by it without end
    recording = NotesService(engine, record=True)
    recording._applied(deliveries(100))
    assert len(recording.applied) == 100

"""The demo's producing service: a schedule service writing its domain rows and their events
in one transaction each (the transactional outbox), as ``examples/publisher_example.py`` does."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, delete, insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox_client import (
    AssignmentCreatedEvent,
    AssignmentUpdatedEvent,
    BaseEvent,
    ChallengeAreaCreatedEvent,
    ClassScheduleCreatedEvent,
    CourseCreatedEvent,
    CourseDeletedEvent,
    CourseReadEvent,
    CourseUpdatedEvent,
    EventMetadata,
    ExamCreatedEvent,
    LabSessionCreatedEvent,
    QuizCreatedEvent,
    StudyTodoCreatedEvent,
    enqueue,
)

domain = MetaData()
courses = Table(
    "demo_courses",
    domain,
    Column("code", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("credits", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
coursework = Table(
    "demo_coursework",
    domain,
    Column("id", String, primary_key=True),
    Column("course_code", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("title", String, nullable=False),
    Column("due", DateTime(timezone=True)),
)

SEMESTER = "Fall 2026"
INSTRUCTORS = ["Dr. Smith", "Dr. Osei", "Prof. Lindqvist", "Dr. Nakamura", "Prof. Adeyemi"]


def _meta(request: str) -> EventMetadata:
    return EventMetadata(
        source_service="schedule-service", correlation_id=request, user_id="registrar-1"
    )


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(domain.create_all)


class BudgetSpent(Exception):
    """The service has committed (or started) as many events as it was asked to."""


class ScheduleService:
    """Each public method is one business operation: a domain write plus its event, atomically.

    ``on_commit(event_id, committed_at)`` is called after each commit (the demo measures
    latency from there).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: Callable[[uuid.UUID, float], None],
        *,
        limit: int | None = None,
    ) -> None:
        self.engine = engine
        self.on_commit = on_commit
        self.limit = limit
        self.commits = 0
        self._reserved = 0

    def _reserve(self) -> None:
        """Take one event of the budget before a transaction starts, so that concurrent clients
        together commit exactly ``limit`` events."""
        if self.limit is not None and self._reserved >= self.limit:
            raise BudgetSpent
        self._reserved += 1

    def _committed(self, event: BaseEvent) -> None:
        self.commits += 1
        self.on_commit(event.event_id, time.time())

    async def _commit(self, statement: object, event: BaseEvent) -> None:
        self._reserve()
        async with self.engine.begin() as conn:
            await conn.execute(statement)  # type: ignore[call-overload]
            await enqueue(conn, event)
        self._committed(event)

    async def create_course(self, code: str, rng: random.Random) -> None:
        name = f"{rng.choice(['Intro to', 'Advanced', 'Topics in'])} {code}"
        credits = rng.choice([2, 3, 4])
        event = CourseCreatedEvent(
            course_code=code, course_name=name, semester=SEMESTER, credits=credits,
            instructor=rng.choice(INSTRUCTORS), metadata=_meta(f"req-{uuid.uuid4().hex[:8]}"),
        )  # fmt: skip
        stmt = pg_insert(courses).values(
            code=code, name=name, credits=credits, updated_at=datetime.now(UTC)
        ).on_conflict_do_nothing()  # fmt: skip
        await self._commit(stmt, event)

    async def update_course(self, code: str, credits: int) -> None:
        stmt = update(courses).where(courses.c.code == code).values(
            credits=credits, updated_at=datetime.now(UTC)
        )  # fmt: skip
        await self._commit(
            stmt, CourseUpdatedEvent(course_code=code, credits=credits, metadata=_meta("upd"))
        )

    async def read_course(self, code: str) -> None:
        event = CourseReadEvent(course_code=code, requested_by="student-42", metadata=_meta("read"))
        self._reserve()
        async with self.engine.begin() as conn:
            await enqueue(conn, event)
        self._committed(event)

    async def delete_course(self, code: str) -> None:
        stmt = delete(courses).where(courses.c.code == code)
        await self._commit(
            stmt, CourseDeletedEvent(course_code=code, reason="cancelled", metadata=_meta("del"))
        )

    async def add_coursework(self, code: str, n: int, rng: random.Random) -> None:
        now = datetime.now(UTC)
        due = now + timedelta(days=rng.randint(3, 60), hours=rng.randint(0, 23))
        ident = f"{code}-{n}"
        kind = rng.choice(["assignment", "exam", "quiz", "lab", "schedule", "study", "challenge"])
        meta = _meta(f"cw-{ident}")
        event: BaseEvent
        if kind == "assignment":
            event = AssignmentCreatedEvent(
                assignment_id=ident,
                course_code=code,
                title=f"Homework {n}",
                due_date=due,
                max_points=100,
                metadata=meta,
            )
        elif kind == "exam":
            event = ExamCreatedEvent(
                exam_id=ident,
                course_code=code,
                title=f"Exam {n}",
                exam_type="midterm",
                exam_date=due,
                duration_minutes=90,
                location="Hall A",
                metadata=meta,
            )
        elif kind == "quiz":
            event = QuizCreatedEvent(
                quiz_id=ident,
                course_code=code,
                title=f"Quiz {n}",
                due_date=due,
                num_questions=10,
                max_points=20,
                metadata=meta,
            )
        elif kind == "lab":
            event = LabSessionCreatedEvent(
                lab_id=ident,
                course_code=code,
                title=f"Lab {n}",
                start_time=due,
                end_time=due + timedelta(hours=2),
                location="Lab 3",
                metadata=meta,
            )
        elif kind == "schedule":
            event = ClassScheduleCreatedEvent(
                schedule_id=ident,
                course_code=code,
                starts_at=due,
                ends_at=due + timedelta(minutes=75),
                location="Room 101",
                repeat_until=due + timedelta(weeks=12),
                metadata=meta,
            )
        elif kind == "study":
            event = StudyTodoCreatedEvent(
                todo_id=ident,
                student_id="student-42",
                course_code=code,
                title=f"Review {n}",
                due_date=due,
                metadata=meta,
            )
        else:
            event = ChallengeAreaCreatedEvent(
                challenge_id=ident,
                student_id="student-42",
                course_code=code,
                topic=f"Topic {n}",
                difficulty="high",
                metadata=meta,
            )
        stmt = insert(coursework).values(
            id=ident, course_code=code, kind=kind, title=ident, due=due
        )
        await self._commit(stmt, event)
        if kind == "assignment" and rng.random() < 0.3:
            later = due + timedelta(days=2)
            upd = AssignmentUpdatedEvent(
                assignment_id=ident, course_code=code, due_date=later, metadata=meta
            )
            await self._commit(
                update(coursework).where(coursework.c.id == ident).values(due=later), upd
            )


async def simulate(service: ScheduleService, *, workers: int = 4, seed: int = 7) -> int:
    """Run ``workers`` concurrent clients until the service's ``limit`` of events is spent."""

    async def worker(w: int) -> None:
        rng = random.Random(seed + w)
        n = 0
        with contextlib.suppress(BudgetSpent):
            while True:
                code = f"CS{w}{n:04d}"
                n += 1
                await service.create_course(code, rng)
                for k in range(rng.randint(2, 6)):
                    roll = rng.random()
                    if roll < 0.6:
                        await service.add_coursework(code, k, rng)
                    elif roll < 0.8:
                        await service.update_course(code, rng.choice([2, 3, 4, 5]))
                    elif roll < 0.95:
                        await service.read_course(code)
                    else:
                        await service.delete_course(code)
                        break

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return service.commits

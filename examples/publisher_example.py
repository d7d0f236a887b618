"""The schedule service: each business operation writes its rows and its events in ONE
transaction through the outbox; `vertector-relay run` publishes them afterwards.

    OUTBOX_DATABASE_URL=postgresql://... python examples/publisher_example.py
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from outbox_client import (
    AssignmentCreatedEvent,
    CourseCreatedEvent,
    EventMetadata,
    ExamCreatedEvent,
    enqueue,
)
from outbox_client.dburl import asyncpg_sqlalchemy_url

tables = MetaData()
courses = Table(
    "example_courses",
    tables,
    Column("code", String, primary_key=True),
    Column("name", String, nullable=False),
)


async def main() -> int:
    url = os.environ.get("OUTBOX_DATABASE_URL")
    if not url:
        print("set OUTBOX_DATABASE_URL (and run `alembic upgrade head` once)", file=sys.stderr)
        return 2
    engine = create_async_engine(asyncpg_sqlalchemy_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(tables.create_all)

    meta = EventMetadata(source_service="schedule-service", correlation_id="example-1")
    due = datetime.now(UTC) + timedelta(days=14)
    for n, code in enumerate(["CS101", "CS102", "MATH201"]):
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(insert(courses).values(code=code, name=f"Course {code}"))
            await enqueue(session, CourseCreatedEvent(
                course_code=code, course_name=f"Course {code}", semester="Fall 2025",
                credits=3, instructor="Dr. Smith", metadata=meta,
            ))  # fmt: skip
            await enqueue(session, AssignmentCreatedEvent(
                assignment_id=f"{code}-hw1", course_code=code, title="Homework 1",
                due_date=due, max_points=100, metadata=meta,
            ))  # fmt: skip
            await enqueue(session, ExamCreatedEvent(
                exam_id=f"{code}-mid", course_code=code, title="Midterm", exam_type="midterm",
                exam_date=due + timedelta(days=n), duration_minutes=90, metadata=meta,
            ))  # fmt: skip
        print(f"committed {code} with 3 events")
    await engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

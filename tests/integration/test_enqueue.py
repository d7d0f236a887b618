from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    text,
)
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, registry

from outbox_client import CourseCreatedEvent, EnqueueError, EventMetadata, enqueue, enqueue_many
from outbox_client.dburl import asyncpg_sqlalchemy_url
from outbox_client.events import BaseEvent
from tests.harness import asyncpg_url

domain = MetaData()
courses = Table(
    "courses",
    domain,
    Column("id", Integer, primary_key=True),
    Column("code", String, nullable=False, unique=True),
)


class Course:
    def __init__(self, code: str) -> None:
        self.code = code


registry().map_imperatively(Course, courses)


def event(code: str = "CS101", **meta: Any) -> CourseCreatedEvent:
    return CourseCreatedEvent(
        course_code=code, course_name="Intro", semester="Fall 2025", credits=3,
        instructor="Dr. Smith",
        metadata=EventMetadata(source_service="schedule-service", **meta),
    )  # fmt: skip


class Boom(Exception):
    pass


async def rows(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        return await conn.fetch("SELECT * FROM outbox_events ORDER BY id")
    finally:
        await conn.close()


async def domain_rows(url: str) -> int:
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM courses"))
    finally:
        await conn.close()


@pytest.fixture
def sync_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    domain.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_sqlalchemy_url(database_url))
    async with engine.begin() as conn:
        await conn.run_sync(domain.create_all)
    yield engine
    await engine.dispose()


def assert_row_is_the_event(row: asyncpg.Record, ev: BaseEvent) -> None:
    assert bytes(row["payload"]) == ev.to_bytes()
    assert row["event_id"] == ev.event_id
    assert row["subject"] == "academic.course.created"
    assert row["partition_key"] == ev.partition_key
    assert json.loads(row["headers"]) == ev.nats_headers() | {
        "Vertector-Partition-Key": ev.partition_key
    }
    assert row["sent_at"] is None


# --- the four kinds of target commit with the caller -----------------------------------------


async def test_sync_session_commit_stores_exact_bytes_and_headers(
    sync_engine: Engine, database_url: str
) -> None:
    ev = event(correlation_id="req-1")
    with Session(sync_engine) as session, session.begin():
        session.execute(insert(courses).values(code="CS101"))
        enqueue(session, ev)
    [row] = await rows(database_url)
    assert_row_is_the_event(row, ev)
    assert json.loads(row["headers"])["Vertector-Correlation-Id"] == "req-1"


async def test_sync_connection_commit(sync_engine: Engine, database_url: str) -> None:
    ev = event()
    with sync_engine.begin() as conn:
        enqueue(conn, ev)
    [row] = await rows(database_url)
    assert_row_is_the_event(row, ev)


async def test_async_session_commit(async_engine: AsyncEngine, database_url: str) -> None:
    ev = event()
    async with AsyncSession(async_engine) as session, session.begin():
        await session.execute(insert(courses).values(code="CS101"))
        await enqueue(session, ev)
    [row] = await rows(database_url)
    assert_row_is_the_event(row, ev)
    assert await domain_rows(database_url) == 1


async def test_async_connection_commit(async_engine: AsyncEngine, database_url: str) -> None:
    ev = event()
    async with async_engine.begin() as conn:
        await enqueue(conn, ev)
    [row] = await rows(database_url)
    assert_row_is_the_event(row, ev)


# --- nothing without a commit ------------------------------------------------------------------


async def test_rollback_leaves_nothing(sync_engine: Engine, database_url: str) -> None:
    with Session(sync_engine) as session:
        session.begin()
        session.execute(insert(courses).values(code="CS101"))
        enqueue(session, event())
        session.rollback()
    assert await rows(database_url) == []
    assert await domain_rows(database_url) == 0


async def test_exception_inside_the_transaction_leaves_nothing(
    async_engine: AsyncEngine, database_url: str
) -> None:
    with pytest.raises(Boom):
        async with AsyncSession(async_engine) as session, session.begin():
            await session.execute(insert(courses).values(code="CS101"))
            await enqueue(session, event())
            raise Boom
    assert await rows(database_url) == []
    assert await domain_rows(database_url) == 0


async def test_domain_constraint_violation_takes_the_event_with_it(
    async_engine: AsyncEngine, database_url: str
) -> None:
    async with async_engine.begin() as conn:
        await conn.execute(insert(courses).values(code="CS101"))
    with pytest.raises(IntegrityError):
        async with AsyncSession(async_engine) as session, session.begin():
            await enqueue(session, event("CS101"))
            await session.execute(insert(courses).values(code="CS101"))  # duplicate code
    assert await rows(database_url) == []
    assert await domain_rows(database_url) == 1


async def test_enqueue_does_not_flush_the_orm_session(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        pending = Course(code="CS102")
        session.add(pending)
        enqueue(session, event("CS102"))
        assert pending in session.new  # still pending: enqueue did not flush it


async def test_thousand_events_in_one_transaction(
    async_engine: AsyncEngine, database_url: str
) -> None:
    events = [event(f"C{i}") for i in range(1000)]
    async with AsyncSession(async_engine) as session, session.begin():
        await enqueue_many(session, events)
    stored = await rows(database_url)
    assert [r["event_id"] for r in stored] == [e.event_id for e in events]
    assert {r["partition"] for r in stored} == {e_partition(e) for e in events}


def e_partition(ev: BaseEvent) -> int:
    from outbox_client import partition_of

    return partition_of(ev.partition_key)


async def test_partition_key_override(async_engine: AsyncEngine, database_url: str) -> None:
    async with async_engine.begin() as conn:
        await enqueue(conn, event("CS101"), partition_key="student-7")
    [row] = await rows(database_url)
    assert row["partition_key"] == "student-7"


# --- wrong arguments ---------------------------------------------------------------------------


def test_not_an_event_is_refused(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, pytest.raises(EnqueueError, match="BaseEvent"):
        enqueue(session, {"course_code": "CS101"})  # type: ignore[call-overload]


def test_no_session_is_refused() -> None:
    with pytest.raises(EnqueueError, match="Session, AsyncSession, Connection or AsyncConnection"):
        enqueue(None, event())  # type: ignore[call-overload]


def test_a_list_to_enqueue_points_to_enqueue_many(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, pytest.raises(EnqueueError, match="enqueue_many"):
        enqueue(session, [event()])  # type: ignore[call-overload]
    with Session(sync_engine) as session, pytest.raises(EnqueueError, match="iterable"):
        enqueue_many(session, event())  # type: ignore[call-overload]


async def test_duplicate_event_id_is_refused_by_the_database(
    async_engine: AsyncEngine, database_url: str
) -> None:
    ev = event()
    async with async_engine.begin() as conn:
        await enqueue(conn, ev)
    with pytest.raises(IntegrityError, match="outbox_events_event_id_key"):
        async with async_engine.begin() as conn:
            await enqueue(conn, ev)
    assert len(await rows(database_url)) == 1


# --- with_events: the domain write and its events in one statement ----------------------------


async def test_with_events_commits_both_in_one_statement(
    async_engine: AsyncEngine, database_url: str
) -> None:
    from outbox_client import with_events

    first, second = event("CS201"), event("CS202")
    async with AsyncSession(async_engine) as session, session.begin():
        await session.execute(with_events(insert(courses).values(code="CS201"), first, second))
    stored = await rows(database_url)
    assert [r["event_id"] for r in stored] == [first.event_id, second.event_id]
    assert bytes(stored[0]["payload"]) == first.to_bytes()
    assert await domain_rows(database_url) == 1


async def test_with_events_fails_whole_when_the_domain_write_fails(
    async_engine: AsyncEngine, database_url: str
) -> None:
    from outbox_client import with_events

    async with async_engine.begin() as conn:
        await conn.execute(insert(courses).values(code="CS101"))
    with pytest.raises(IntegrityError):
        async with async_engine.begin() as conn:
            await conn.execute(with_events(insert(courses).values(code="CS101"), event()))
    assert await rows(database_url) == []


def test_with_events_refuses_what_it_cannot_wrap() -> None:
    from sqlalchemy import select

    from outbox_client import with_events

    with pytest.raises(EnqueueError, match="insert\\(\\), update\\(\\) or delete\\(\\)"):
        with_events(select(courses), event())  # type: ignore[arg-type]
    with pytest.raises(EnqueueError, match="at least one event"):
        with_events(insert(courses).values(code="x"))


async def test_async_fast_path_as_first_statement_still_joins_the_transaction(
    async_engine: AsyncEngine, database_url: str
) -> None:
    # enqueue as the very first statement: SQLAlchemy has not sent BEGIN yet, so the fast
    # path must not be taken, or the row would commit on its own before the rollback.
    async with async_engine.connect() as conn:
        await conn.begin()
        await enqueue(conn, event())
        await enqueue(conn, event("CS102"))  # second call: fast path, inside the transaction
        await conn.rollback()
    assert await rows(database_url) == []


# --- an enqueue that is not awaited never loses its event -------------------------------------


async def test_unawaited_enqueue_on_an_async_session_is_written_at_commit(
    async_engine: AsyncEngine, database_url: str
) -> None:
    ev = event()
    async with AsyncSession(async_engine) as session, session.begin():
        await session.execute(insert(courses).values(code="CS101"))
        enqueue(session, ev)  # no await: staged in the session, written at commit
    [row] = await rows(database_url)
    assert_row_is_the_event(row, ev)


async def test_async_session_events_are_written_at_flush_in_one_statement(
    async_engine: AsyncEngine, database_url: str
) -> None:
    events = [event(f"C{i}") for i in range(300)]
    async with AsyncSession(async_engine) as session, session.begin():
        for ev in events[:100]:
            enqueue(session, ev)
        for ev in events[100:200]:
            await enqueue(session, ev)  # awaiting stays valid
        enqueue_many(session, events[200:])
        await session.flush()
        in_transaction = await session.scalar(text("SELECT count(*) FROM outbox_events"))
        assert in_transaction == 300  # the flush wrote them, before commit
    stored = await rows(database_url)
    assert [r["event_id"] for r in stored] == [e.event_id for e in events]
    # Rows inserted by one statement share its command id: one statement for all 300.
    assert len({r["cmin"] for r in await cmins(database_url)}) == 1


async def cmins(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        return await conn.fetch("SELECT cmin FROM outbox_events")
    finally:
        await conn.close()


async def test_sync_session_events_are_written_at_commit_in_one_statement(
    sync_engine: Engine, database_url: str
) -> None:
    events = [event(f"C{i}") for i in range(50)]
    with Session(sync_engine) as session, session.begin():
        session.add(Course(code="CS101"))
        for ev in events:
            enqueue(session, ev)
    assert [r["event_id"] for r in await rows(database_url)] == [e.event_id for e in events]
    assert len({r["cmin"] for r in await cmins(database_url)}) == 1
    assert await domain_rows(database_url) == 1


async def test_a_rolled_back_savepoint_takes_only_its_own_staged_events(
    async_engine: AsyncEngine, database_url: str
) -> None:
    kept, dropped, after = event("K1"), event("D1"), event("A1")
    async with AsyncSession(async_engine) as session, session.begin():
        enqueue(session, kept)
        with pytest.raises(Boom):
            async with session.begin_nested():
                enqueue(session, dropped)
                raise Boom
        enqueue(session, after)
    assert [r["event_id"] for r in await rows(database_url)] == [kept.event_id, after.event_id]


async def test_rollback_discards_unawaited_staged_events(
    async_engine: AsyncEngine, database_url: str
) -> None:
    async with AsyncSession(async_engine) as session:
        enqueue(session, event("R1"))
        await session.rollback()
        enqueue(session, event("R2"))
        await session.commit()
    assert [r["partition_key"] for r in await rows(database_url)] == ["R2"]


async def test_enqueue_from_a_flush_hook_is_written_in_that_flush(
    sync_engine: Engine, database_url: str
) -> None:
    ev = event("HOOK")
    with Session(sync_engine) as session:

        @sqlalchemy_event.listens_for(session, "before_flush")
        def on_flush(s: Session, _ctx: object, _objs: object) -> None:
            if any(isinstance(o, Course) for o in s.new):
                enqueue(s, ev)

        session.add(Course(code="HOOK"))
        session.commit()
    [row] = await rows(database_url)
    assert_row_is_the_event(row, ev)


async def test_commit_with_an_unawaited_enqueue_on_an_async_connection_raises_and_rolls_back(
    async_engine: AsyncEngine, database_url: str
) -> None:
    with pytest.raises(EnqueueError, match="never awaited.*rolled back.*await enqueue"):
        async with async_engine.begin() as conn:
            await conn.execute(insert(courses).values(code="CS101"))
            enqueue(conn, event())  # forgotten await
    assert await rows(database_url) == []
    assert await domain_rows(database_url) == 0  # the domain write did not commit either
    # The connection's next transaction is clean.
    async with async_engine.connect() as conn:
        await conn.begin()
        enqueue(conn, event("X1"))  # rolled back with its transaction: nothing to refuse
        await conn.rollback()
        await conn.execute(insert(courses).values(code="CS102"))
        await enqueue(conn, event("CS102"))
        await conn.commit()
    assert [r["partition_key"] for r in await rows(database_url)] == ["CS102"]


async def test_events_are_written_after_the_orm_domain_writes_of_their_flush(
    sync_engine: Engine, database_url: str
) -> None:
    # The event's id must be taken after the write that locks its aggregate (per-key order).
    with Session(sync_engine) as session, session.begin():
        enqueue(session, event("CS101"))
        session.add(Course(code="CS101"))
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        domain_cmin = await conn.fetchval("SELECT cmin::text::int FROM courses")
        event_cmin = await conn.fetchval("SELECT cmin::text::int FROM outbox_events")
    finally:
        await conn.close()
    assert event_cmin > domain_cmin


async def test_a_failed_flush_takes_its_events_with_it(
    async_engine: AsyncEngine, database_url: str
) -> None:
    async with async_engine.begin() as conn:
        await conn.execute(insert(courses).values(code="CS101"))
    async with AsyncSession(async_engine) as session:
        session.add(Course(code="CS101"))  # duplicate: the flush fails
        enqueue(session, event("LOST"))
        with pytest.raises(IntegrityError):
            await session.flush()
        await session.rollback()
        session.add(Course(code="CS102"))
        enqueue(session, event("CS102"))
        await session.commit()
    assert [r["partition_key"] for r in await rows(database_url)] == ["CS102"]

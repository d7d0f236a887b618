"""The client library against a real nats-server (and PostgreSQL for the inbox)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest
from nats.aio.msg import Msg
from nats.js import api as js_api
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox_client import (
    BaseEvent,
    ConsumerConfig,
    CourseCreatedEvent,
    CourseUpdatedEvent,
    EventConsumer,
    EventMetadata,
    EventPublisher,
    Inbox,
    NATSClient,
    NATSConfig,
    PermanentError,
)
from outbox_client.consumer import Delivery
from outbox_client.pull import Puller
from outbox_client.request import NoResponderError, RemoteError, RequestTimeoutError, request, serve
from tests.relayrun import apply_default_streams, engine

effects_md = MetaData()
effects = Table(
    "test_effects",
    effects_md,
    Column("event_id", String, primary_key=True),
    Column("applied", Integer, nullable=False),
)


def course(code: str = "CS101") -> CourseCreatedEvent:
    return CourseCreatedEvent(
        course_code=code, course_name="Intro to Computer Science", semester="Fall 2025",
        credits=3, instructor="Dr. Smith",
        metadata=EventMetadata(source_service="schedule-service", user_id="student_123"),
    )  # fmt: skip


@contextlib.asynccontextmanager
async def consuming(consumer: EventConsumer, handler: object) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.subscribe(handler))  # type: ignore[arg-type]
    try:
        yield task
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)


async def publish_as_the_relay(client: NATSClient, events: Sequence[BaseEvent]) -> None:
    """What the relay sends: the partition key and the event id travel as headers."""
    for e in events:
        headers = e.nats_headers() | {
            "Vertector-Partition-Key": e.partition_key,
            "Nats-Msg-Id": str(e.event_id),
        }
        await client.js.publish(e.subject, e.to_bytes(), headers=headers)


async def until(predicate: object, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_quick_start_publishing_runs_as_written(
    nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await apply_default_streams(nats_url)
    # --- the product description's "Publishing Events", only the import line changed ---
    from outbox_client import (
        CourseCreatedEvent,
        EventMetadata,
        EventPublisher,
        NATSClient,
        NATSConfig,
    )

    config = NATSConfig(servers=[nats_url])

    async with NATSClient(config) as client:
        publisher = EventPublisher(client)

        event = CourseCreatedEvent(
            course_code="CS101",
            course_name="Intro to Computer Science",
            semester="Fall 2025",
            credits=3,
            instructor="Dr. Smith",
            metadata=EventMetadata(source_service="schedule-service", user_id="student_123"),
        )

        ack = await publisher.publish(event)
        print(f"Published to stream {ack.stream}, seq {ack.seq}")
    # --- end of the snippet ---
    assert "Published to stream ACADEMIC_EVENTS, seq 1" in capsys.readouterr().out
    async with NATSClient(config) as client:
        again = await EventPublisher(client).publish(event)
    assert again.duplicate and again.seq == 1  # Nats-Msg-Id = event_id: dropped by JetStream


async def test_quick_start_consuming_runs_as_written(nats_url: str) -> None:
    await apply_default_streams(nats_url)
    received: list[str] = []

    async def create_course_notebook(code: str) -> None:
        received.append(code)

    # --- the product description's "Consuming Events", only the import line changed ---

    from outbox_client import ConsumerConfig, EventConsumer, NATSClient, NATSConfig

    async def handle_event(event: BaseEvent, msg: Msg) -> None:
        """Process incoming events"""
        print(f"Received: {event.event_type}")

        if event.event_type == "academic.course.created":
            # Handle course creation in note-taking service
            await create_course_notebook(event.course_code)  # type: ignore[attr-defined]

        await msg.ack()  # Acknowledge successful processing

    config = NATSConfig(servers=[nats_url])

    async with NATSClient(config) as client:
        consumer_config = ConsumerConfig(
            durable_name="notes-service-consumer",
            filter_subjects=["academic.course.*", "academic.assignment.*"],
            ack_policy="explicit",
            max_deliver=3,  # Retry up to 3 times
        )

        consumer = EventConsumer(
            client=client,
            stream_name="ACADEMIC_EVENTS",
            consumer_config=consumer_config,
            batch_size=10,
        )

        # Start consuming (runs indefinitely)
        task = asyncio.create_task(consumer.subscribe(handle_event))
        # --- end of the snippet (it runs until stopped) ---
        if (
            client.nc.connected_server_version.minor < 10
            and client.nc.connected_server_version.major == 2
        ):
            with pytest.raises(Exception, match="several filter_subjects need nats-server 2.10"):
                await task
            return
        await EventPublisher(client).publish_batch([course("CS101"), course("CS102")])
        await until(lambda: len(received) == 2)
        consumer.stop()
        await asyncio.wait_for(task, 10)
    assert received == ["CS101", "CS102"]


async def test_inbox_applies_redeliveries_and_late_republishes_once(
    nats_url: str, database_url: str
) -> None:
    # A stream whose dedup window is 1 s, so a re-publish after it is stored again.
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        await client.js.add_stream(
            js_api.StreamConfig(name="T_ACADEMIC", subjects=["academic.>"], duplicate_window=1)
        )
        async with engine(database_url) as eng:
            async with eng.begin() as conn:
                await conn.run_sync(effects_md.create_all)
            inbox = Inbox(eng, consumer="notes-service")
            crashed: set[str] = set()

            async def effect(conn: AsyncConnection, event: BaseEvent) -> None:
                await conn.execute(
                    insert(effects)
                    .values(event_id=str(event.event_id), applied=1)
                    .on_conflict_do_update(
                        index_elements=["event_id"], set_={"applied": effects.c.applied + 1}
                    )
                )

            async def handler(event: BaseEvent, msg: Msg) -> None:
                applied = await inbox.apply(event, effect)
                if applied and str(event.event_id) not in crashed:
                    crashed.add(str(event.event_id))
                    # The effect committed, then the handler failed before its ack.
                    raise ConnectionError("lost the connection before acking")
                await msg.ack()

            consumer = EventConsumer(
                client, "T_ACADEMIC",
                ConsumerConfig(durable_name="notes", ack_wait_seconds=1, nak_backoff_seconds=(0.1,)),
                batch_size=5, fetch_timeout=0.2,
            )  # fmt: skip
            events = [course(f"C{i}") for i in range(5)]
            publisher = EventPublisher(client)
            async with consuming(consumer, handler):
                await publisher.publish_batch(events)
                await until(lambda: consumer.redelivered >= 5)  # nak'ed: redelivered
                await asyncio.sleep(1.2)  # past the duplicate window
                acks = await publisher.publish_batch(events)  # the relay re-publishing late
                assert not any(a.duplicate for a in acks)
                await until(lambda: consumer.processed >= 10)
            async with eng.connect() as conn:
                counts = (await conn.execute(select(effects.c.applied))).scalars().all()
    assert sorted(counts) == [1] * 5, "an effect was applied more than once"


async def test_inbox_warm_opens_the_pool_before_the_first_event(database_url: str) -> None:
    backends: set[int] = set()

    async def prime(conn: AsyncConnection) -> None:
        backends.add(int(await conn.scalar(text("SELECT pg_backend_pid()"))))
        await conn.execute(  # rolled back: warming changes nothing
            text(
                "INSERT INTO outbox_inbox (consumer, event_id, event_type) "
                "VALUES ('warm', gen_random_uuid(), 't')"
            )
        )

    async with engine(database_url) as eng:
        assert eng.pool.checkedin() == 0  # type: ignore[attr-defined]
        await Inbox(eng, consumer="warm").warm(4, prime=prime)
        assert len(backends) == 4  # prime ran on each connection
        async with eng.connect() as conn:
            left = await conn.scalar(
                text("SELECT count(*) FROM outbox_inbox WHERE consumer = 'warm'")
            )
            assert left == 0
        assert eng.pool.checkedin() == 4  # type: ignore[attr-defined]
        assert eng.dialect.server_version_info is not None  # initialised by the first
        # Each connection has the claim prepared (what its first transaction would pay for).
        held = [await eng.connect() for _ in range(4)]
        try:
            for conn in held:
                prepared = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_prepared_statements "
                        "WHERE statement LIKE 'INSERT INTO outbox_inbox % SELECT %'"
                    )
                )
                assert prepared == 1
        finally:
            for conn in held:
                await conn.close()


async def test_failures_retry_then_dead_letter_with_reason_and_headers(nats_url: str) -> None:
    await apply_default_streams(nats_url)
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        attempts: dict[str, int] = {}

        async def handler(event: BaseEvent, msg: Msg) -> None:
            code = event.course_code  # type: ignore[attr-defined]
            attempts[code] = attempts.get(code, 0) + 1
            if code == "FLAKY" and attempts[code] < 2:
                raise ConnectionError("database blip")
            if code == "BROKEN":
                raise ValueError("cannot ever work")
            if code == "REJECT":
                raise PermanentError("course code reserved")

        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS",
            ConsumerConfig(durable_name="notes", max_deliver=3, nak_backoff_seconds=(0.05,)),
            fetch_timeout=0.2,
        )  # fmt: skip
        broken = course("BROKEN")
        async with consuming(consumer, handler):
            await EventPublisher(client).publish_batch(
                [course("FLAKY"), broken, course("REJECT"), course("FINE")]
            )
            await until(lambda: consumer.dead_lettered == 2 and consumer.processed == 2)
        assert attempts == {"FLAKY": 2, "BROKEN": 3, "REJECT": 1, "FINE": 1}
        info = await client.js.stream_info("DEAD_LETTERS")
        assert info.state.messages == 2
        letters = [
            await client.js.get_msg("DEAD_LETTERS", seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
        [dead] = [m for m in letters if m.data == broken.to_bytes()]
        [rejected] = [m for m in letters if m.data != broken.to_bytes()]
        assert dead.subject == "deadletter.academic.course.created"
        assert dead.headers["Vertector-Dead-Reason"].startswith("failed 3 deliveries")
        assert "ValueError: cannot ever work" in dead.headers["Vertector-Dead-Reason"]
        assert dead.headers["Nats-Msg-Id"].endswith(str(broken.event_id))
        assert dead.headers["Vertector-Event-Type"] == "academic.course.created"
        assert dead.headers["Vertector-Original-Stream"] == "ACADEMIC_EVENTS"
        assert rejected.headers["Vertector-Dead-Reason"] == "permanent: course code reserved"


async def test_concurrent_consumer_keeps_each_key_in_order(nats_url: str) -> None:
    await apply_default_streams(nats_url)
    seen: dict[str, list[int]] = {}

    async def handler(event: BaseEvent, msg: Msg) -> None:
        assert isinstance(event, CourseUpdatedEvent)
        await asyncio.sleep(0.001 * (event.credits or 0 % 3))
        seen.setdefault(event.course_code, []).append(event.credits or 0)

    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        events = [
            CourseUpdatedEvent(course_code=f"K{k}", credits=i)
            for i in range(1, 21) for k in range(6)
        ]  # fmt: skip
        await publish_as_the_relay(client, events)
        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS", ConsumerConfig(durable_name="notes"),
            batch_size=50, concurrency=4, fetch_timeout=0.2,
        )  # fmt: skip
        async with consuming(consumer, handler):
            await until(lambda: sum(map(len, seen.values())) == len(events))
    assert seen == {f"K{k}": list(range(1, 21)) for k in range(6)}


class GetCourse(BaseModel):
    code: str


class CourseInfo(BaseModel):
    code: str
    credits: int


async def test_request_reply_typed_with_clear_errors(nats_url: str) -> None:
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        with pytest.raises(NoResponderError, match="no responder on 'schedule.course.get'"):
            await request(
                client, "schedule.course.get", GetCourse(code="CS101"), CourseInfo, timeout=1
            )

        async def answer(req: GetCourse) -> CourseInfo:
            if req.code == "NOPE":
                raise LookupError("no such course")
            if req.code == "SLOW":
                await asyncio.sleep(2)
            return CourseInfo(code=req.code, credits=3)

        sub = await serve(client, "schedule.course.get", GetCourse, answer)
        reply = await request(client, "schedule.course.get", GetCourse(code="CS101"), CourseInfo)
        assert reply == CourseInfo(code="CS101", credits=3)
        with pytest.raises(RemoteError, match="LookupError: no such course"):
            await request(client, "schedule.course.get", GetCourse(code="NOPE"), CourseInfo)
        with pytest.raises(RequestTimeoutError, match="within 0.3 s"):
            await request(
                client, "schedule.course.get", GetCourse(code="SLOW"), CourseInfo, timeout=0.3
            )
        await sub.unsubscribe()


async def test_dead_letters_are_listed_and_replayed(nats_url: str) -> None:
    from outbox_client.deadletters import list_dead_letters, replay_dead_letter

    await apply_default_streams(nats_url)
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        fixed = False
        handled: list[str] = []

        async def handler(event: BaseEvent, msg: Msg) -> None:
            if not fixed:
                raise PermanentError("notebook service misconfigured")
            handled.append(str(event.event_id))

        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS", ConsumerConfig(durable_name="notes"), fetch_timeout=0.2
        )
        lost = course("CS404")
        async with consuming(consumer, handler):
            await EventPublisher(client).publish(lost)
            await until(lambda: consumer.dead_lettered == 1)
            [letter] = await list_dead_letters(client)
            assert letter.original_subject == "academic.course.created"
            assert letter.reason == "permanent: notebook service misconfigured"
            assert letter.event_id == str(lost.event_id)
            fixed = True
            await replay_dead_letter(client, letter.seq)
            await until(lambda: handled == [str(lost.event_id)])
        assert await list_dead_letters(client) == []


@pytest.mark.parametrize("suffix", [":replay-20261129T101500", ":replay:7", ""])
async def test_a_dead_letter_of_a_replayed_event_names_and_replays_its_event(
    nats_url: str, suffix: str
) -> None:
    """``replay --fresh-ids`` sends ``<event_id>:<label>``, a dead-letter replay
    ``<event_id>:replay:<seq>``: the dead letter's event id is the part before the first colon
    (the last part, the label, was taken for it), and its replay keeps the real event id."""
    from outbox_client.deadletters import list_dead_letters, replay_dead_letter

    await apply_default_streams(nats_url)
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        fixed = False
        handled: list[str] = []
        msg_ids: list[str] = []

        async def handler(event: BaseEvent, msg: Msg) -> None:
            if not fixed:
                raise PermanentError("not yet")
            handled.append(str(event.event_id))
            msg_ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))

        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS", ConsumerConfig(durable_name="notes"), fetch_timeout=0.2
        )
        lost = course("CS405")
        headers = lost.nats_headers() | {"Nats-Msg-Id": f"{lost.event_id}{suffix}"}
        async with consuming(consumer, handler):
            await client.js.publish(lost.subject, lost.to_bytes(), headers=headers)
            await until(lambda: consumer.dead_lettered == 1)
            [letter] = await list_dead_letters(client)
            assert letter.event_id == str(lost.event_id)
            fixed = True
            await replay_dead_letter(client, letter.seq)
            await until(lambda: handled == [str(lost.event_id)])
    assert msg_ids == [f"{lost.event_id}:replay:{letter.seq}"]


async def test_consumers_with_the_same_durable_share_the_work(nats_url: str) -> None:
    await apply_default_streams(nats_url)
    handled: dict[str, list[str]] = {"one": [], "two": []}

    def handler_for(name: str) -> object:
        async def handle(event: BaseEvent, msg: Msg) -> None:
            handled[name].append(str(event.event_id))
            await asyncio.sleep(0.002)

        return handle

    events = [course(f"S{i}") for i in range(200)]
    async with (
        NATSClient(NATSConfig(servers=[nats_url])) as first,
        NATSClient(NATSConfig(servers=[nats_url])) as second,
    ):
        config = ConsumerConfig(durable_name="notes-shared")
        one = EventConsumer(first, "ACADEMIC_EVENTS", config, batch_size=10, fetch_timeout=0.2)
        two = EventConsumer(second, "ACADEMIC_EVENTS", config, batch_size=10, fetch_timeout=0.2)
        await one.ensure()
        async with consuming(one, handler_for("one")), consuming(two, handler_for("two")):
            await EventPublisher(first).publish_batch(events)
            await until(lambda: len(handled["one"]) + len(handled["two"]) >= 200)
    assert handled["one"] and handled["two"], "one consumer did all the work"
    both = handled["one"] + handled["two"]
    assert len(both) == len(set(both)) == 200


@pytest.mark.parametrize("batched", [False, True], ids=["effect", "effect_many"])
async def test_a_batch_failing_half_way_commits_the_rest_and_keeps_each_key_in_order(
    batched: bool, nats_url: str, database_url: str
) -> None:
    await apply_default_streams(nats_url)
    log: list[tuple[str, int]] = []  # (key, position) in commit order
    failed_once: set[str] = set()

    async def effect(conn: AsyncConnection, event: BaseEvent) -> None:
        assert isinstance(event, CourseUpdatedEvent)
        if event.course_code == "B" and event.credits == 3 and "B3" not in failed_once:
            failed_once.add("B3")
            raise ConnectionError("the notebook service blinked")
        await conn.execute(insert(effects).values(event_id=str(event.event_id), applied=1))

    async def effect_many(conn: AsyncConnection, events: Sequence[BaseEvent]) -> None:
        for event in events:
            await effect(conn, event)

    async with engine(database_url) as eng, NATSClient(NATSConfig(servers=[nats_url])) as client:
        async with eng.begin() as conn:
            await conn.run_sync(effects_md.create_all)
        inbox = Inbox(eng, consumer="notes-service")

        def committed(deliveries: Sequence[Delivery]) -> None:
            log.extend(
                (d.event.course_code, d.event.credits or 0)  # type: ignore[attr-defined]
                for d in deliveries
            )

        handler = (
            inbox.batch_handler(effect_many=effect_many, on_applied=committed)
            if batched
            else inbox.batch_handler(effect, on_applied=committed)
        )
        events = [
            CourseUpdatedEvent(course_code=key, credits=i) for i in range(1, 7) for key in "AB"
        ]
        await publish_as_the_relay(client, events)
        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS",
            ConsumerConfig(durable_name="notes", nak_backoff_seconds=(0.2,)),
            batch_size=50, fetch_timeout=0.2,
        )  # fmt: skip
        task = asyncio.create_task(consumer.subscribe_batches(handler))
        try:
            await until(lambda: len(log) == len(events))
        finally:
            consumer.stop()
            await asyncio.wait_for(task, 10)
        async with eng.connect() as conn:
            counts = (await conn.execute(select(effects.c.applied))).scalars().all()
    assert counts == [1] * len(events), "an effect was committed twice or lost"
    assert [p for k, p in log if k == "A"] == [1, 2, 3, 4, 5, 6]  # A was not held back
    assert [p for k, p in log if k == "B"] == [1, 2, 3, 4, 5, 6]  # B4.. waited for B3
    if batched:
        # The batch effect failed somewhere: one transaction per event found B3, which
        # succeeded on that second run (a blip), so nothing was retried through NATS.
        assert consumer.failed == 0
    else:
        assert log.index(("A", 6)) < log.index(("B", 3))  # B3 retried after a nak
        assert consumer.failed == 1 and consumer.redelivered >= 1


async def test_messages_held_back_behind_a_failing_one_do_not_spend_its_deliveries(
    nats_url: str,
) -> None:
    """B1 fails until it is dead-lettered; B2 and B3 are nak'ed behind it each time they come
    while it is pending. Those deliveries are not tries: B2 and B3 are applied after it, not
    dead-lettered for having been delivered more than max_deliver times."""
    await apply_default_streams(nats_url)
    applied: list[tuple[str, int]] = []

    async def handler(event: BaseEvent, msg: Msg) -> None:
        assert isinstance(event, CourseUpdatedEvent)
        if event.course_code == "B" and event.credits == 1:
            raise ConnectionError("B1 never works")
        applied.append((event.course_code, event.credits or 0))

    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        events = [CourseUpdatedEvent(course_code=k, credits=i) for i in (1, 2, 3) for k in "AB"]
        await publish_as_the_relay(client, events)
        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS",
            ConsumerConfig(durable_name="notes", max_deliver=2, nak_backoff_seconds=(0.1,)),
            batch_size=50, fetch_timeout=0.2,
        )  # fmt: skip
        async with consuming(consumer, handler):
            await until(lambda: len(applied) == 5)
        info = await client.js.stream_info("DEAD_LETTERS")
        letter = await client.js.get_msg("DEAD_LETTERS", info.state.last_seq)
    assert [p for k, p in applied if k == "A"] == [1, 2, 3]
    assert [p for k, p in applied if k == "B"] == [2, 3]
    assert consumer.dead_lettered == info.state.messages == 1
    assert letter.headers is not None
    assert letter.headers["Vertector-Dead-Reason"].startswith("failed 2 deliveries")
    assert int(letter.headers["Vertector-Deliveries"]) == 2


async def test_puller_asks_again_when_a_request_is_used_up_not_at_the_next_fetch(
    nats_url: str,
) -> None:
    """A burst longer than a request keeps coming while the caller works on the first part
    (the rest would otherwise wait for that work and a round trip)."""
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        js = client.js
        await js.add_stream(js_api.StreamConfig(name="T_PULL", subjects=["tpull.>"]))
        await js.add_consumer(
            "T_PULL", js_api.ConsumerConfig(durable_name="p", ack_policy=js_api.AckPolicy.EXPLICIT)
        )
        for i in range(5):
            await js.publish(f"tpull.{i}", b"x")
        puller = Puller(client, "T_PULL", "p", batch=2, expires=5.0)
        await puller.start()
        try:
            first = await puller.fetch(5.0)
            assert 1 <= len(first) <= 2
            # The caller is busy with ``first``: no fetch. The next request goes out anyway.
            deadline = asyncio.get_running_loop().time() + 5
            while (await js.consumer_info("T_PULL", "p")).num_ack_pending < 4:
                assert asyncio.get_running_loop().time() < deadline, "no request without a fetch"
                await asyncio.sleep(0.05)
            rest = await puller.fetch(5.0)
            assert len(first) + len(rest) >= 4
        finally:
            for msg in await puller.stop():
                await msg.nak()

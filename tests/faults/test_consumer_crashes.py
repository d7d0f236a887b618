"""Exactly-once consumption under power cuts: the notes service's consumer process is SIGKILLed
at named points of a batch (injected checkpoints, ``devtools.crash_consumer``), by a poison
message, and its batch effect fails half-way; no event is lost, none applied twice, each key
stays in order, and redeliveries are counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict

import asyncpg
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from devtools.crash_consumer import MAX_DELIVER
from devtools.processes import ModuleProcess
from outbox_client import CourseUpdatedEvent
from outbox_client.checkpoints import CONSUMER_POINTS
from tests.relayrun import apply_default_streams, jetstream

KEYS, PER_KEY = 12, 25


async def publish(js: JetStreamContext, codes: list[str], per_key: int = PER_KEY) -> list[str]:
    """What the relay sends, key by key interleaved; returns the event ids."""
    ids = []
    for position in range(per_key):
        for code in codes:
            event = CourseUpdatedEvent(course_code=code, description=str(position))
            headers = event.nats_headers() | {
                "Vertector-Partition-Key": event.partition_key,
                "Nats-Msg-Id": str(event.event_id),
            }
            await js.publish(event.subject, event.to_bytes(), headers=headers)
            ids.append(str(event.event_id))
    return ids


def consumer(database_url: str, nats_url: str, *args: str) -> ModuleProcess:
    env = {"OUTBOX_DATABASE_URL": database_url, "NATS_SERVERS": nats_url}
    return ModuleProcess("devtools.crash_consumer", *args, env=env).start()


async def crash_log(database_url: str) -> list[tuple[str, str, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT event_id, key, position FROM crash_log ORDER BY id")
    except asyncpg.UndefinedTableError:  # the consumer has not created it yet
        rows = []
    finally:
        await conn.close()
    return [(r["event_id"], r["key"], int(r["position"])) for r in rows]


async def drain_cleanly(database_url: str, nats_url: str, expected: int) -> dict[str, int]:
    """A consumer that does not crash, until ``expected`` effects are in; its counters."""
    proc = consumer(database_url, nats_url)
    try:
        await until_logged(database_url, expected, proc)
    finally:
        proc.terminate()
    assert proc.exits[-1] == 0, proc.output()
    counters: dict[str, int] = json.loads(proc.output().strip().splitlines()[-1])
    return counters


async def until_logged(database_url: str, expected: int, proc: ModuleProcess) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while len(await crash_log(database_url)) < expected:
        assert proc.alive, f"the consumer stopped:\n{proc.output()[-3000:]}"
        assert loop.time() < deadline, (
            f"the consumer did not catch up within 90 s:\n{proc.output()[-3000:]}"
        )
        await asyncio.sleep(0.2)


async def until_dead_lettered(nats_url: str, proc: ModuleProcess) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while True:
        async with jetstream(nats_url) as js:
            with contextlib.suppress(NotFoundError):
                if (await js.stream_info("DEAD_LETTERS")).state.messages:
                    return
        assert proc.alive, f"the consumer stopped:\n{proc.output()[-3000:]}"
        assert loop.time() < deadline, "the poison message was not dead-lettered within 90 s"
        await asyncio.sleep(0.2)


def assert_exactly_once_in_order(log: list[tuple[str, str, int]], ids: list[str]) -> None:
    applied = [event_id for event_id, _, _ in log]
    assert sorted(applied) == sorted(ids), "an event was lost or applied twice"
    by_key: dict[str, list[int]] = defaultdict(list)
    for _, key, position in log:
        by_key[key].append(position)
    assert all(positions == sorted(positions) for positions in by_key.values()), by_key


@pytest.mark.parametrize("point", CONSUMER_POINTS)
async def test_sigkill_at_each_point_loses_nothing_and_applies_nothing_twice(
    point: str, database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    async with jetstream(nats_url) as js:
        ids = await publish(js, [f"K{k}" for k in range(KEYS)])
    crashing = consumer(database_url, nats_url, "--at", point)
    assert await crashing.wait(60) == -9, f"never reached {point}:\n{crashing.output()}"
    before = len(await crash_log(database_url))
    assert before < len(ids)
    if point != "after_effect_before_commit":
        assert before > 0  # a lane committed before the process died
    counters = await drain_cleanly(database_url, nats_url, len(ids))
    assert_exactly_once_in_order(await crash_log(database_url), ids)
    assert counters["redelivered"] > 0  # what the dead process held came back, counted


async def test_a_message_that_kills_its_consumer_is_dead_lettered_after_max_deliver(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    async with jetstream(nats_url) as js:
        ids = await publish(js, ["A", "B", "C"], per_key=10)
        poison = await publish(js, ["POISON"], per_key=1)
        later = await publish(js, ["D"], per_key=5)
    deaths = 0
    while deaths <= MAX_DELIVER + 1:
        proc = consumer(database_url, nats_url, "--kill-on", "POISON")
        try:
            await until_logged(database_url, len(ids) + len(later), proc)
            await until_dead_lettered(nats_url, proc)
            break
        except AssertionError:
            if proc.alive:
                raise
            deaths += 1
        finally:
            proc.terminate()
    assert 1 <= deaths <= MAX_DELIVER, f"the poison message killed the consumer {deaths} times"
    assert_exactly_once_in_order(await crash_log(database_url), ids + later)
    async with jetstream(nats_url) as js:
        letter = await js.get_msg("DEAD_LETTERS", 1)
        durable = await js.consumer_info("ACADEMIC_EVENTS", "notes-service-consumer")
        left = (await js.stream_info("ACADEMIC_EVENTS")).state.messages
        letters = (await js.stream_info("DEAD_LETTERS")).state.messages
    # The server side: its redelivery is unlimited (the consumer counts deliveries and
    # dead-letters; a server-side limit would drop the message with no dead letter), and nothing
    # is left to loop: the poison message was terminated, every other one acknowledged.
    assert durable.config.max_deliver == -1
    assert durable.num_ack_pending == durable.num_pending == left == 0
    assert letters == 1, "a message in flight behind the poison one was dead-lettered with it"
    assert letter.headers is not None
    assert letter.headers["Nats-Msg-Id"].endswith(poison[0])
    assert "without an outcome" in letter.headers["Vertector-Dead-Reason"]

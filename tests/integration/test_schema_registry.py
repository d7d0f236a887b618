"""The registry in a real JetStream bucket, and a v1 event in a real stream read as v2."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from outbox_client import (
    BaseEvent,
    ClassScheduleCreatedEvent,
    ClassScheduleCreatedEventV1,
    ConsumerConfig,
    EventConsumer,
    NATSClient,
    NATSConfig,
)
from outbox_client.schemas import catalog, contract_of
from outbox_client.schemas.registry import (
    BUCKET,
    RegistryRefusedError,
    bucket,
    fetch,
    keys,
    publish,
    published,
)
from tests.relayrun import apply_default_streams

BIN = Path(sys.executable).parent / "vertector-relay"


@pytest.fixture
async def js(nats_url: str) -> Any:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_key_value(BUCKET)
    yield js
    with contextlib.suppress(NotFoundError):
        await js.delete_key_value(BUCKET)
    await nc.close()


class CourseCreatedNarrowed(BaseEvent):
    """academic.course.created v1 as a careless edit would make it: fields dropped."""

    event_type: Literal["academic.course.created"] = "academic.course.created"
    course_code: str


async def test_publish_stores_every_contract_and_refuses_a_breaking_one(js: Any) -> None:
    contracts = catalog()
    written = await publish(js, contracts)
    assert sorted(written) == sorted(c.key for c in contracts)
    kv = await bucket(js)
    assert await keys(js) == sorted(c.key for c in contracts)
    assert sorted(await published(js)) == sorted(c.key for c in contracts)
    stored = await fetch(kv, "academic.schedule.created", 2)
    assert stored == next(c for c in contracts if c.key == "academic.schedule.created.v2")
    assert await publish(js, contracts) == []  # idempotent: nothing new

    changed = [contract_of(CourseCreatedNarrowed) if c.key == "academic.course.created.v1"
               else c for c in contracts]  # fmt: skip
    with pytest.raises(RegistryRefusedError) as refused:
        await publish(js, changed)
    assert "academic.course.created.v1: changed without a new schema_version" in str(refused.value)
    assert any("course_name: field removed" in b for b in refused.value.breaks)
    still = await fetch(kv, "academic.course.created", 1)
    assert still is not None and "course_name" in still.payload["properties"]


async def test_publish_and_check_from_the_command_line(js: Any, nats_url: str) -> None:
    env = os.environ | {"NATS_SERVERS": nats_url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), "schemas", *args], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    missing = await asyncio.to_thread(run, "check", "--registry")
    assert missing.returncode == 1 and f"bucket {BUCKET} does not exist" in missing.stderr
    first = await asyncio.to_thread(run, "publish")
    assert first.returncode == 0, first.stderr
    assert "published academic.schedule.created.v2" in first.stdout
    checked = await asyncio.to_thread(run, "check", "--registry")
    assert checked.returncode == 0, checked.stderr
    assert f"match the {len(catalog())} contracts in the registry bucket" in checked.stdout


async def test_a_v1_event_already_in_the_stream_is_read_as_the_current_class(
    nats_url: str,
) -> None:
    await apply_default_streams(nats_url)
    old = ClassScheduleCreatedEventV1(
        schedule_id="s1", course_code="CS101", location="https://meet.example/cs101",
        starts_at="2026-09-01T09:00:00Z", ends_at="2026-09-01T10:15:00Z",  # type: ignore[arg-type]
    )  # fmt: skip
    async with NATSClient(NATSConfig(servers=[nats_url])) as client:
        # Written by a producer that only knew version 1.
        ack = await client.js.publish(
            old.subject, old.to_bytes(),
            headers={**old.nats_headers(), "Nats-Msg-Id": str(old.event_id)},
        )  # fmt: skip
        assert ack.stream == "ACADEMIC_EVENTS"
        received: list[BaseEvent] = []

        async def handler(event: BaseEvent, msg: Msg) -> None:
            received.append(event)

        consumer = EventConsumer(
            client, "ACADEMIC_EVENTS",
            ConsumerConfig(durable_name="schedule-v2-reader",
                           filter_subjects=("academic.schedule.created",)),
        )  # fmt: skip
        task = asyncio.create_task(consumer.subscribe(handler))
        try:
            for _ in range(300):
                if received or task.done():
                    break
                await asyncio.sleep(0.05)
        finally:
            consumer.stop()
            await asyncio.wait_for(task, 15)
    assert len(received) == 1 and consumer.dead_lettered == 0
    event = received[0]
    assert type(event) is ClassScheduleCreatedEvent
    assert (event.schema_version, event.delivery_mode) == (2, "online")
    assert event.event_id == old.event_id and event.location == old.location

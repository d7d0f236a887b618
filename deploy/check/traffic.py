"""The deploy check's traffic, from the host into the compose stack of deploy/check/run.sh.

Enqueues N course events as the producer user (``schedule_svc``), then waits until the example
notes consumer has applied every one through its inbox (read as the schema's owner), and checks
what the stack promises around that: the relay and the consumer connect as their own users
(never as the owner), NATS refuses anonymous clients, and both processes serve Prometheus
metrics that count the events. Exits non-zero with the reason on the first broken promise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.request
import uuid

import asyncpg
import nats
from sqlalchemy.ext.asyncio import create_async_engine

from outbox_client import CourseCreatedEvent, enqueue_many
from outbox_client.dburl import asyncpg_sqlalchemy_url

DB = "127.0.0.1:15432/vertector"
PRODUCER_URL = f"postgresql://schedule_svc:producer@{DB}"
OWNER_URL = f"postgresql://vertector:vertector@{DB}"
NATS_URL = "nats://127.0.0.1:14222"
RELAY_METRICS = "http://127.0.0.1:19464/metrics"
CONSUMER_METRICS = "http://127.0.0.1:19465/metrics"
DEADLINE_SECONDS = 180.0


class CheckFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"[traffic] {text}", flush=True)


def metric_total(url: str, name: str) -> float:
    """Sum of every sample of ``name`` in the Prometheus text at ``url``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    )


async def produce(count: int) -> list[uuid.UUID]:
    run = uuid.uuid4().hex[:8].upper()
    events = [
        CourseCreatedEvent(
            course_code=f"DC{run}{i:05d}",
            course_name=f"Deploy check {i}",
            semester="Fall 2026",
            credits=3,
            instructor="Dr. Check",
        )
        for i in range(count)
    ]
    engine = create_async_engine(asyncpg_sqlalchemy_url(PRODUCER_URL))
    try:
        for start in range(0, count, 100):
            async with engine.begin() as conn:
                await enqueue_many(conn, events[start : start + 100])
    finally:
        await engine.dispose()
    return [event.event_id for event in events]


async def wait_applied(owner: asyncpg.Connection, ids: list[uuid.UUID]) -> float:
    started = time.monotonic()
    applied = 0
    while time.monotonic() - started < DEADLINE_SECONDS:
        applied = await owner.fetchval(
            "SELECT count(*) FROM outbox_inbox WHERE consumer = 'notes-service'"
            " AND event_id = ANY($1::uuid[])",
            ids,
        )
        if applied == len(ids):
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise CheckFailed(f"the consumer applied {applied} of {len(ids)} in {DEADLINE_SECONDS:.0f} s")


async def check(count: int) -> None:
    owner = await asyncpg.connect(OWNER_URL.replace("postgresql://", "postgres://"))
    try:
        users = {
            row["usename"]: row["n"]
            for row in await owner.fetch(
                "SELECT usename, count(*) AS n FROM pg_stat_activity"
                " WHERE datname = 'vertector' AND pid <> pg_backend_pid() GROUP BY usename"
            )
        }
        say(f"PostgreSQL sessions by user: {users}")
        if "relay_svc" not in users or "notes-service" not in users:
            raise CheckFailed(f"relay_svc and notes-service should be connected, saw {users}")
        if users.get("vertector"):
            raise CheckFailed("a service is connected as the owner `vertector`")

        async def quiet(exc: Exception) -> None:
            pass

        try:
            anonymous = await nats.connect(
                NATS_URL, allow_reconnect=False, connect_timeout=3, error_cb=quiet
            )
        except Exception as exc:  # any refusal will do; what matters is that it is refused
            say(f"NATS refuses anonymous clients: {type(exc).__name__}: {exc}")
        else:
            await anonymous.close()
            raise CheckFailed("NATS accepted a client without credentials")

        published_before = metric_total(RELAY_METRICS, "vertector_relay_events_published_total")
        processed_before = metric_total(CONSUMER_METRICS, "vertector_consumer_processed_total")
        started = time.monotonic()
        ids = await produce(count)
        say(f"enqueued {len(ids)} events as schedule_svc in {time.monotonic() - started:.2f} s")
        took = await wait_applied(owner, ids)
        say(f"the notes consumer applied all {len(ids)} {took:.2f} s after the last commit")
        created = await owner.fetchval(
            "SELECT count(*) FROM notes.demo_notebooks WHERE title LIKE 'Notes: Deploy check %'"
        )
        say(f"notes.demo_notebooks (owned by notes-service) holds {created} of them")
        unsent = await owner.fetchval(
            "SELECT count(*) FROM outbox_events"
            " WHERE sent_at IS NULL AND event_id = ANY($1::uuid[])",
            ids,
        )
        if unsent:
            raise CheckFailed(f"{unsent} rows still unsent in outbox_events")
        published = metric_total(RELAY_METRICS, "vertector_relay_events_published_total")
        processed = metric_total(CONSUMER_METRICS, "vertector_consumer_processed_total")
        say(
            f"relay /metrics: events_published_total +{published - published_before:.0f}; "
            f"consumer /metrics: processed_total +{processed - processed_before:.0f}"
        )
        if published - published_before < count or processed - processed_before < count:
            raise CheckFailed("the metrics do not count every event")
    finally:
        await owner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    try:
        asyncio.run(check(args.events))
    except CheckFailed as exc:
        print(f"deploy-check: {exc}", file=sys.stderr)
        return 1
    say("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

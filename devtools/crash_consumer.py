"""``python -m devtools.crash_consumer [--at POINT] [--kill-on CODE]``: the notes service's
consumer (``OUTBOX_DATABASE_URL``, ``NATS_*`` from the environment) for the consumer crash
tests. It SIGKILLs itself at the named checkpoint (``outbox_client.checkpoints``), or whenever
its effect meets an event of course CODE (a poison message); every event it applies is
recorded in ``crash_log`` in the effect's transaction. At a clean stop it prints its counters
as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, Identity, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from devtools.crash import CrashAt
from examples import notes_consumer
from examples.notes_service import NotesService
from outbox_client import BaseEvent, NATSClient, NATSConfig
from outbox_client.checkpoints import CONSUMER_POINTS, NO_CHECKPOINTS, Checkpoints
from outbox_client.inbox import BatchEffect

log_md = MetaData()
crash_log = Table(
    "crash_log",
    log_md,
    Column("id", BigInteger, Identity(), primary_key=True),  # the order effects committed in
    Column("event_id", String, nullable=False),  # no unique key: a double effect shows
    Column("key", String, nullable=False),
    Column("position", String, nullable=False),
)
#: What the crash tests need to see redeliveries quickly and the poison message dead-lettered.
ACK_WAIT_SECONDS = 2.0
MAX_DELIVER = 3


def effect_for(kill_on: str | None) -> BatchEffect:
    async def logged(conn: AsyncConnection, events: Sequence[BaseEvent]) -> None:
        rows = []
        for event in events:
            key = str(getattr(event, "course_code", ""))
            if key == kill_on:
                os.kill(os.getpid(), signal.SIGKILL)
            rows.append({"event_id": str(event.event_id), "key": key,
                         "position": str(getattr(event, "description", ""))})  # fmt: skip
        await conn.execute(crash_log.insert(), rows)

    return logged


async def main(point: str | None, kill_on: str | None) -> int:
    engine = notes_consumer.notes_engine(os.environ["OUTBOX_DATABASE_URL"])
    async with engine.begin() as conn:
        await conn.run_sync(log_md.create_all)
    checkpoints: Checkpoints = CrashAt(point, CONSUMER_POINTS) if point else NO_CHECKPOINTS
    notes = NotesService(engine, effect_many=effect_for(kill_on), checkpoints=checkpoints)
    async with NATSClient(NATSConfig()) as client:
        consumer = notes.consumer(
            client,
            checkpoints=checkpoints,
            ack_wait_seconds=ACK_WAIT_SECONDS,
            max_deliver=MAX_DELIVER,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        await consumer.subscribe_batches(notes.handler())
    await engine.dispose()
    counters = {name: getattr(consumer, name)
                for name in ("processed", "failed", "redelivered", "dead_lettered")}  # fmt: skip
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m devtools.crash_consumer")
    parser.add_argument("--at", choices=CONSUMER_POINTS)
    parser.add_argument("--kill-on", metavar="CODE")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.at, args.kill_on)))

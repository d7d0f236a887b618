"""``vertector-relay demo`` / ``make demo``: the whole system on throw-away servers.

PostgreSQL and nats-server start from their PyPI wheels in a temporary directory; the schema
is migrated, the streams applied, the relay started; a schedule service commits a realistic mix
of events while a notes service consumes them through its inbox, writing a welcome note per new
course to its own outbox; a second relay publishes those to NOTES_EVENTS, where the search
indexer (``examples/search_indexer.py``) indexes them through its inbox. Progress is printed
live and a summary at the end; everything stops on Ctrl-C too.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from devtools.demo import schedule_service
from devtools.servers import EmbeddedNats, EmbeddedPostgres, server_dir
from examples import notes_service, search_indexer
from outbox_client.client import NATSClient
from outbox_client.dburl import asyncpg_sqlalchemy_url
from outbox_client.nats_config import NATSConfig
from outbox_client.streams import DEFAULT_STREAMS
from relay import schema
from relay.aio import sleep_until_stopped
from relay.app import RelayApp
from relay.log import setup_logging
from relay.natsstreams import apply_streams
from relay.settings import RelaySettings


def _say(text: str) -> None:
    print(text, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


NEXT_STEPS = """== next ==
make test                      the whole suite on real servers (kills, pauses, a 3-node cluster)
make bench                     throughput and latency, written to bench/results/latest.json
README.md                      produce with enqueue(), run `vertector-relay run`, consume
docker-compose up              the stack with your own PostgreSQL and NATS (see README)"""


class Progress:
    """One line that updates in place on a terminal; otherwise a line every few seconds."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.interval = 0.25 if tty else 3.0
        self._last = ""

    def show(self, committed: int, published: int, consumed: int, indexed: int) -> None:
        line = (
            f"   committed {committed:6}  published {published:6}  consumed {consumed:6}"
            f"  notes indexed {indexed:5}"
        )
        if self.tty:
            print(f"\r{line}", end="", flush=True)
        elif line != self._last:
            _say(line)
        self._last = line

    def end(self) -> None:
        if self.tty:
            print(flush=True)  # leave the updated line in place


@dataclass
class Summary:
    committed: int
    published: int
    consumed: int
    duplicates_applied: int
    redeliveries_skipped: int
    lost: int
    publish_p50_ms: float
    publish_p99_ms: float
    consume_p50_ms: float
    consume_p99_ms: float
    notes_written: int
    notes_indexed: int
    produce_seconds: float
    total_seconds: float

    def render(self) -> str:
        rate = self.committed / self.produce_seconds if self.produce_seconds else 0.0
        return "\n".join(
            [
                "== summary ==",
                f"events committed      {self.committed}",
                f"events published      {self.published}",
                f"events consumed       {self.consumed}",
                f"duplicates (applied)  {self.duplicates_applied}"
                f"   (redeliveries dropped by the inbox: {self.redeliveries_skipped})",
                f"lost                  {self.lost}",
                f"commit -> published   p50 {self.publish_p50_ms:.1f} ms   p99 {self.publish_p99_ms:.1f} ms",  # noqa: E501
                f"commit -> consumed    p50 {self.consume_p50_ms:.1f} ms   p99 {self.consume_p99_ms:.1f} ms",  # noqa: E501
                f"notes indexed         {self.notes_indexed} of {self.notes_written} welcome notes"
                " (notes service -> its relay -> NOTES_EVENTS -> search indexer)",
                f"throughput            {rate:.0f} events/s committed and relayed",
                f"wall time             {self.total_seconds:.1f} s",
            ]
        )


@contextlib.asynccontextmanager
async def _servers() -> AsyncIterator[tuple[EmbeddedPostgres, EmbeddedNats]]:
    base = server_dir("vertector-demo-")
    pg = EmbeddedPostgres(base / "postgres")
    nats_server = EmbeddedNats(base / "nats")
    try:
        await asyncio.to_thread(pg.start)
        await asyncio.to_thread(nats_server.start)
        _say(f"-- PostgreSQL 18 on {pg.url()} , NATS on {nats_server.url} (data in {base})")
        yield pg, nats_server
    finally:
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(base, ignore_errors=True)
        _say("-- servers stopped, temporary data removed")


async def run_demo(*, events: int = 5000, stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    setup_logging("console", "WARNING")
    started = time.monotonic()
    async with _servers() as (pg, nats_server):
        admin = await asyncpg.connect(pg.url())
        await admin.execute("CREATE DATABASE notes_service")
        await admin.execute("CREATE DATABASE search_indexer")
        await admin.close()
        urls = [pg.url(name) for name in ("postgres", "notes_service", "search_indexer")]
        for url in urls:
            await asyncio.to_thread(schema.upgrade, url)
        _say(
            "-- schema migrated (alembic upgrade head) in the schedule, notes and search databases"
        )
        nats_config = NATSConfig(servers=[nats_server.url], client_name="demo")
        async with NATSClient(nats_config) as client:
            for applied in await apply_streams(client.js, DEFAULT_STREAMS):
                _say(f"-- stream {applied}")
            return await _run(events, urls, nats_config, client, stop, started)


async def _run(
    events: int,
    urls: list[str],
    nats_config: NATSConfig,
    client: NATSClient,
    stop: asyncio.Event,
    started: float,
) -> int:
    from sqlalchemy.ext.asyncio import create_async_engine

    schedule_url, notes_url, search_url = urls
    schedule_db = create_async_engine(asyncpg_sqlalchemy_url(schedule_url), pool_size=8)
    notes_db = create_async_engine(asyncpg_sqlalchemy_url(notes_url), pool_size=10)
    search_db = create_async_engine(asyncpg_sqlalchemy_url(search_url), pool_size=4)
    await schedule_service.create_schema(schedule_db)
    await notes_service.create_schema(notes_db)
    await search_indexer.create_schema(search_db)

    committed: dict[uuid.UUID, float] = {}
    service = schedule_service.ScheduleService(
        schedule_db, lambda i, t: committed.__setitem__(i, t), limit=events
    )
    notes = notes_service.NotesService(notes_db, welcome_notes=True, record=True)
    consumer = notes.consumer(client)
    indexer, index_inbox = search_indexer.indexer(client, search_db)
    await indexer.ensure()  # NOTES_EVENTS keeps a message only for a durable that exists
    indexed: list[str] = []
    index = index_inbox.batch_handler(
        effect_many=search_indexer.index_events,
        on_applied=lambda ds: indexed.extend(str(d.event.event_id) for d in ds),
    )
    relay = RelayApp(
        RelaySettings(
            database_url=schedule_url, instance_name="demo-relay", poll_interval_seconds=0.5
        ),
        nats_config,
    )
    notes_relay = RelayApp(  # the notes service's own outbox; /metrics only on the first relay
        RelaySettings(
            database_url=notes_url, instance_name="demo-notes-relay", poll_interval_seconds=0.5,
            metrics_port=-1,
        ),
        nats_config,
    )  # fmt: skip
    relay_stop = asyncio.Event()
    tasks = [
        asyncio.create_task(relay.run(relay_stop), name="relay"),
        asyncio.create_task(notes_relay.run(relay_stop), name="notes-relay"),
        asyncio.create_task(consumer.subscribe_batches(notes.handler()), name="notes-service"),
        asyncio.create_task(indexer.subscribe_batches(index), name="search-indexer"),
    ]
    _say(f"-- relay running; schedule-service committing {events} events with 4 concurrent clients")
    produce_started = time.monotonic()
    producer = asyncio.create_task(schedule_service.simulate(service))
    produce_seconds = 0.0
    progress = Progress(sys.stdout.isatty())
    try:
        while True:
            await sleep_until_stopped(stop, progress.interval)
            if producer.done() and not produce_seconds:
                produce_seconds = time.monotonic() - produce_started
                producer.result()
            progress.show(len(committed), relay.stats.published, len(notes.applied), len(indexed))
            if stop.is_set():
                progress.end()
                _say("-- interrupted: stopping")
                break
            if any(task.done() for task in tasks):
                progress.end()
                _say("-- a service stopped unexpectedly: stopping")
                break
            caught_up = len(notes.applied) >= len(committed) and len(indexed) >= notes.notes_written
            if producer.done() and caught_up:
                progress.end()
                break
            if producer.done() and time.monotonic() - started > 120:
                progress.end()
                _say("-- gave up waiting for the consumer after 120 s")
                break
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        consumer.stop()
        indexer.stop()
        relay_stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await schedule_db.dispose()
        await notes_db.dispose()
        await search_db.dispose()
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException):
            print(f"{task.get_name()} failed: {result!r}", file=sys.stderr)
            return 1
    publish_ms = [
        (notes.applied[i][0] - t) * 1000 for i, t in committed.items() if i in notes.applied
    ]
    consume_ms = [
        (notes.applied[i][1] - t) * 1000 for i, t in committed.items() if i in notes.applied
    ]
    summary = Summary(
        committed=len(committed),
        published=relay.stats.published,
        consumed=len(notes.applied),
        duplicates_applied=notes.duplicate_effects,
        redeliveries_skipped=notes.skipped_duplicates,
        lost=len(set(committed) - set(notes.applied)),
        publish_p50_ms=percentile(publish_ms, 0.5),
        publish_p99_ms=percentile(publish_ms, 0.99),
        consume_p50_ms=percentile(consume_ms, 0.5),
        consume_p99_ms=percentile(consume_ms, 0.99),
        notes_written=notes.notes_written,
        notes_indexed=len(indexed),
        produce_seconds=produce_seconds or (time.monotonic() - produce_started),
        total_seconds=time.monotonic() - started,
    )
    _say(summary.render())
    _say(NEXT_STEPS)
    if stop.is_set():
        return 130  # interrupted: the summary covers what got through
    indexed_all = summary.notes_indexed == summary.notes_written
    return 0 if summary.lost == 0 and summary.duplicates_applied == 0 and indexed_all else 1

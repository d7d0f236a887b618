"""The library API behind each CLI command (each one a few lines over the modules)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
from sqlalchemy.exc import SQLAlchemyError

from outbox_client.client import NATSClient, NATSConnectionError, connect_nats
from outbox_client.deadletters import list_dead_letters, replay_dead_letter
from outbox_client.streams import STREAM_PROFILES
from relay import admin, schema, walslot
from relay.app import RelayApp
from relay.checkpoints import NO_CHECKPOINTS, Checkpoints
from relay.errors import ConfigError, PublishError, RelayError, StoreError, cause
from relay.natspublisher import NatsPublisher
from relay.natsstreams import apply_streams, check_configured
from relay.pgstore import DRIVER_ERRORS, PgStore
from relay.settings import (
    configured_streams,
    load,
    load_database,
    load_nats,
    load_wal,
    probe_address,
)

#: Statement bound for the one-shot commands (status, check): they must end, not wait.
COMMAND_DB_TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def _nats_answers(what: str) -> AsyncIterator[None]:
    """A JetStream API call that times out or fails is a :class:`PublishError` naming ``what``
    (each call is bounded by nats-py's 5 s API timeout)."""
    try:
        yield
    except (TimeoutError, nats.errors.Error) as exc:
        raise PublishError(f"{what}: NATS did not answer ({type(exc).__name__}: {exc})") from exc


async def run(
    overrides: dict[str, Any], stop: asyncio.Event, checkpoints: Checkpoints = NO_CHECKPOINTS
) -> int:
    settings, nats_config = load(overrides)
    streams = configured_streams()
    await RelayApp(settings, nats_config, streams=streams, checkpoints=checkpoints).run(stop)
    return 0


async def streams_apply(
    path: Path | None = None, profile: str | None = None, *, allow_atomic: bool = False
) -> list[str]:
    nats_config = load_nats()
    specs = STREAM_PROFILES[profile] if profile else configured_streams(path)
    if allow_atomic:
        specs = tuple(spec.model_copy(update={"allow_atomic": True}) for spec in specs)
    try:
        nc = await connect_nats(nats_config)
    except NATSConnectionError as exc:
        raise PublishError(str(exc)) from exc
    try:
        async with _nats_answers("streams apply"):
            return [str(result) for result in await apply_streams(nc.jetstream(), specs)]
    finally:
        await nc.close()


def migrate(revision: str = "head") -> None:
    url = load_database().database_url
    try:
        schema.upgrade(url, revision)
    except (SQLAlchemyError, *DRIVER_ERRORS) as exc:
        root = getattr(exc, "orig", None) or exc
        first = cause(root, schema.CONNECT_TIMEOUT).splitlines()[0]
        raise StoreError(f"migration failed: {first}") from exc


async def _connected() -> tuple[PgStore, NatsPublisher]:
    settings, nats_config = load()
    store = PgStore(settings.dsn, pool_size=2, command_timeout=COMMAND_DB_TIMEOUT)
    await store.open()
    publisher = NatsPublisher(
        nats_config, streams=configured_streams(), max_in_flight=1, publish_timeout=5
    )
    try:
        await publisher.connect()
    except RelayError:
        await store.close()
        raise
    return store, publisher


def probe(path: str) -> int:
    """GET ``path`` from the running relay's health port: 0 on 200, else 1 (prints why)."""
    host, port = probe_address()
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as answer:
            print(answer.read().decode().strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"not ok: {exc.read().decode().strip()}")
    except OSError as exc:
        print(f"not ok: no relay answers on {host}:{port} ({exc})")
    return 1


async def check() -> int:
    """0 when PostgreSQL and NATS answer and the configured streams exist, else 1."""
    try:
        store, publisher = await _connected()
    except RelayError as exc:
        print(f"not ok: {exc}")
        return 1
    try:
        await store.backlog()
        async with _nats_answers("stream coverage"):
            await check_configured(publisher.jetstream, configured_streams())
    except (StoreError, ConfigError, PublishError) as exc:
        print(f"not ok: {exc}")
        return 1
    finally:
        await publisher.close()
        await store.close()
    print("ok")
    return 0


async def status() -> dict[str, Any]:
    store, publisher = await _connected()
    settings, _ = load()
    wal: dict[str, Any] | None = None
    try:
        if settings.capture == "wal":
            wal = await walslot.slot_status(store, settings.slot_name, settings.wal_publication)
        backlog = await store.backlog()
        leases, instances = await store.ownership()
        async with _nats_answers("stream info"):
            infos = await publisher.jetstream.streams_info()
        streams = {
            info.config.name: {"messages": info.state.messages, "last_seq": info.state.last_seq}
            for info in infos
        }
    finally:
        await publisher.close()
        await store.close()
    owners: dict[str, list[int]] = {}
    for lease in leases:
        live = lease["owner"] is not None and (lease["expires_in"] or 0) > 0
        owners.setdefault(lease["owner"] if live else "(unowned)", []).append(lease["partition"])
    return {
        "instances": [
            {
                "name": i["name"],
                "heartbeat_age_seconds": round(i["heartbeat_age"], 1),
                "partitions": len(owners.get(i["name"], [])),
            }
            for i in instances
        ],
        "partitions": owners,
        "backlog": backlog.pending,
        "oldest_unsent_age_seconds": round(backlog.oldest_age_seconds, 3),
        "quarantined": backlog.quarantined,
        "streams": streams,
    } | ({"wal": wal} if wal is not None else {})


def format_status(report: dict[str, Any]) -> str:
    lines = [
        f"backlog                 {report['backlog']}",
        f"oldest unsent age       {report['oldest_unsent_age_seconds']} s",
        f"quarantined             {report['quarantined']}",
        "instances:",
    ]
    for inst in report["instances"]:
        lines.append(
            f"  {inst['name']:30} {inst['partitions']:3} partitions, "
            f"heartbeat {inst['heartbeat_age_seconds']} s ago"
        )
    unowned = report["partitions"].get("(unowned)", [])
    lines.append(f"unowned partitions      {len(unowned)}")
    lines.append("streams:")
    for name, state in report["streams"].items():
        lines.append(f"  {name:22} {state['messages']} messages, last seq {state['last_seq']}")
    if "wal" in report:
        lines += ["WAL capture:", *("  " + line for line in walslot.format_status(report["wal"])
                                     .splitlines())]  # fmt: skip
    return "\n".join(lines)


def _dsn() -> str:
    return load_database().dsn


async def dead_letters(args: argparse.Namespace) -> int:
    """``dead-letters list|show|requeue|purge``: quarantined outbox rows."""
    dsn = _dsn()
    if args.dead_command == "list":
        rows = await admin.list_quarantined(
            dsn, event_type=args.event_type, reason=args.reason, limit=args.limit
        )
        if args.json:
            print(json.dumps(rows, default=str, indent=2))
        for row in [] if args.json else rows:
            when = f"{row['quarantined_at']:%Y-%m-%d %H:%M:%S}"
            print(f"{row['event_id']}  {row['event_type']:30} {when}  {row['last_error']}")
        return 0
    if args.dead_command == "show":
        found = await admin.show_quarantined(dsn, args.event_id)
        if found is None:
            print(f"no quarantined event {args.event_id}")
            return 1
        print(json.dumps(found, default=str, indent=2))
        return 0
    if args.dead_command == "requeue":
        wal = load_wal().capture == "wal"  # WAL capture: back into the WAL, not the table
        count = (
            await admin.requeue_all(dsn, wal=wal)
            if args.all
            else await admin.requeue(
                dsn, event_ids=args.event_ids, event_type=args.event_type, wal=wal
            )
        )
        print(f"{count} events requeued")
        return 0
    count = await admin.purge_quarantined(dsn, event_ids=args.event_ids, event_type=args.event_type)
    print(f"{count} quarantined events deleted")
    return 0


#: JetStream's duplicate window when a stream does not say (nats-server's default).
DEFAULT_DUPLICATE_WINDOW = 120.0


async def duplicate_windows() -> tuple[dict[str, float], str | None]:
    """Each stream's ``duplicate_window`` in seconds, or ``({}, why)`` when NATS cannot say."""
    try:
        async with NATSClient(load_nats()) as client:
            infos = await asyncio.wait_for(client.js.streams_info(), 10)
    except (NATSConnectionError, TimeoutError, OSError) as exc:
        return {}, f"{type(exc).__name__}: {exc}"
    return {i.config.name: float(i.config.duplicate_window or DEFAULT_DUPLICATE_WINDOW)
            for i in infos if i.config.name}, None  # fmt: skip


def _window_text(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


async def replay(args: argparse.Namespace) -> int:
    """``replay``: plan, warn about what JetStream would drop as duplicates, then mark in
    batches with progress (or only plan, with ``--dry-run``)."""
    dsn = _dsn()
    selection = admin.ReplaySelection(
        since=args.since, until=args.until, from_id=args.from_id, to_id=args.to_id,
        event_type=args.event_type,
    )  # fmt: skip
    windows, unknown = await duplicate_windows()
    plan = await admin.plan_replay(dsn, selection, windows, DEFAULT_DUPLICATE_WINDOW)
    per_stream = ", ".join(f"{stream} {n}" for stream, n in plan.events.items())
    print(f"replay: {plan.total} events" + (f" ({per_stream})" if per_stream else ""))
    if unknown:
        print(
            f"warning: could not read the streams' duplicate windows from NATS ({unknown}); "
            f"counted with JetStream's default of {_window_text(DEFAULT_DUPLICATE_WINDOW)}",
            file=sys.stderr,
        )
    if plan.duplicates and not args.fresh_ids:
        where = ", ".join(
            f"{stream}: {n} within {_window_text(windows.get(stream, DEFAULT_DUPLICATE_WINDOW))}"
            for stream, n in plan.inside_window.items()
        )
        print(
            f"warning: {plan.duplicates} of them were published inside their stream's duplicate "
            f"window ({where}): JetStream will drop those as duplicates. Add --fresh-ids to "
            "store them again (consumers' inboxes still skip what they applied), or wait "
            "until the window has passed.",
            file=sys.stderr,
        )
    if args.dry_run or plan.total == 0:
        print("dry run: nothing changed" if args.dry_run else "nothing to replay")
        return 0
    label = f"replay-{datetime.now(UTC):%Y%m%dT%H%M%S}" if args.fresh_ids else None

    def progress(done: int) -> None:
        print(f"  marked {done} of {plan.total}", flush=True)

    count = await admin.replay(
        dsn, selection, fresh_ids=label, batch_size=args.batch_size, progress=progress
    )
    fresh = f" with fresh Nats-Msg-Ids (<event_id>:{label})" if label else ""
    print(f"{count} events marked for re-publishing{fresh}")
    return 0


async def consumer_dead_letters(args: argparse.Namespace) -> int:
    async with NATSClient(load_nats()) as client, _nats_answers("consumer-dead-letters"):
        if args.cdl_command == "list":
            for letter in await list_dead_letters(client, limit=args.limit):
                where = f"{letter.original_subject:32} {letter.consumer:24}"
                print(f"{letter.seq:>8}  {where} {letter.reason}")
            return 0
        for seq in args.seq:
            new_seq = await replay_dead_letter(client, seq)
            print(f"dead letter {seq} replayed as {new_seq}")
    return 0

"""``vertector-relay wal setup|teardown|status``: WAL capture's slot and publication, a few
lines each over :mod:`relay.walslot`."""

from __future__ import annotations

import argparse
import asyncio
import json

from relay import walslot
from relay.pgstore import PgStore
from relay.settings import WalSettings, load_wal

#: Statement bound for these one-shot commands.
_TIMEOUT = 10.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wal = sub.add_parser(
        "wal", help="WAL capture (OUTBOX_CAPTURE=wal): the replication slot and publication"
    )
    actions = wal.add_subparsers(dest="wal_command", required=True, metavar="ACTION")
    setup = actions.add_parser("setup", help="create the publication and the logical slot "
                               "(idempotent; needs wal_level=logical, PostgreSQL 14+)")  # fmt: skip
    setup.add_argument("--recreate", action="store_true", help="drop and recreate an "
                       "invalidated slot, accepting that the events it held are lost")  # fmt: skip
    actions.add_parser("teardown", help="drop the slot (releasing the WAL it holds) and the "
                       "publication; events not yet relayed are lost")  # fmt: skip
    status = actions.add_parser("status", help="slot lag (bytes, oldest unconfirmed event's "
                                "age), WAL retained, invalidation, reader")  # fmt: skip
    status.add_argument("--json", action="store_true", help="machine-readable output")


async def _run(args: argparse.Namespace, settings: WalSettings) -> int:
    store = PgStore(settings.dsn, pool_size=2, command_timeout=_TIMEOUT)
    await store.open()
    slot, publication = settings.slot_name, settings.wal_publication
    try:
        if args.wal_command == "setup":
            lines = await walslot.setup(store, slot, publication, recreate=args.recreate)
        elif args.wal_command == "teardown":
            lines = await walslot.teardown(store, slot, publication)
        else:
            report = await walslot.slot_status(store, slot, publication)
            text = json.dumps(report, indent=2) if args.json else walslot.format_status(report)
            lines = [text]
    finally:
        await store.close()
    for line in lines:
        print(line)
    return 0


def main(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args, load_wal()))
